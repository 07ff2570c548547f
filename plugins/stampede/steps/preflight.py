"""Step 1, preflight: everything that can be checked before load is sent, as a list of checks.

A :class:`RunRequest` (what the CLI or the trigger form asked for) goes through
:data:`CHECKS` in order, cheapest and safest first; each check reads and
completes one :class:`Preflight` record, or raises a
:class:`stampede.core.errors.Refusal` (``field: problem; fix: …``). Every check
before the health check sends nothing to the target. Passing takes the target's
lease (one run per target), given back by the teardown; a check that refuses
after the lease was taken gives it back first.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from stampede.cleanup.api import lookup_secret
from stampede.core.errors import Refusal
from stampede.load import locustfile_check
from stampede.load.process_env import load_process_env
from stampede.load.runner import user_classes_for
from stampede.plan.cleanup_declaration import hook_parts
from stampede.plan.environments import Environment, check_allowed_hours, load_environments, resolve_target
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import Scenario, load_scenario
from stampede.safety import killswitch, lease
from stampede.safety.health import probe
from stampede.steps.folder import locks_dir
from stampede.workers.local import default_worker_count
from stampede.workers.sizing import plan_workers

log = logging.getLogger(__name__)

HEALTH_ATTEMPTS = 3
LOCUSTFILE_CHECK_TIMEOUT_S = 60  # importing Locust and the file takes 1-3 s here
WORKER_TTL_MARGIN_S = 1800  # beyond the planned load: the lease's and the workers' lifetime
PROVIDERS = ("local", "ecs", "ec2")


class RunRefused(Refusal):
    """Preflight refused the run; no load was sent."""


@dataclass(frozen=True)
class RunRequest:
    """What a run asks for, before anything is checked (the CLI's flags, the trigger form's params)."""

    scenarios: tuple[str, ...]
    target: str
    run_id: str
    environment: str | None = None
    users: int | None = None
    duration_s: int | None = None
    workers: int | None = None
    progress_interval_s: float = 5.0
    out_dir: str | None = None
    worker_provider: str = "local"
    worker_spot: bool = False
    worker_size: str = ""


@dataclass
class Preflight:
    """The request and what the checks found so far; the last check turns it into the plan."""

    request: RunRequest
    kill_switch: Callable[[], str | None]
    environments_text: str | None
    lease_pid: int | None
    now: datetime | None
    scenarios: list[Scenario] = field(default_factory=list)
    environments: dict[str, Environment] = field(default_factory=dict)
    target: str = ""
    environment: Environment | None = None
    workers: int = 0
    plan: RunPlan | None = None
    leased: bool = False

    @property
    def peak_users(self) -> int:
        return max(s.peak_users for s in self.scenarios)


# -- the checks, in order ----------------------------------------------------------------------
def scenarios_are_valid(state: Preflight) -> None:
    if not state.request.scenarios:
        raise RunRefused("scenario", "none given", "name at least one scenario")
    loaded = [load_scenario(name) for name in state.request.scenarios]
    state.scenarios = [s.with_overrides(users=state.request.users, duration_s=state.request.duration_s) for s in loaded]


def environments_are_valid(state: Preflight) -> None:
    state.environments = load_environments(state.environments_text)


def target_is_given(state: Preflight) -> None:
    target, wanted = state.request.target, state.request.environment
    if not target and wanted in state.environments and state.environments[wanted].base_urls:
        target = state.environments[wanted].base_urls[0]
    if not target:
        raise RunRefused("target", "none given", "pass a base URL incl. /v1, or an environment that lists one")
    state.target = target.rstrip("/")


def target_may_receive_load(state: Preflight) -> None:
    """Never production, never a host no environment allows; the environment the target belongs to."""
    state.environment = resolve_target(state.target, state.environments)
    wanted = state.request.environment
    if wanted and wanted != state.environment.name:
        raise RunRefused(
            "environment", f"target {state.target} belongs to {state.environment.name!r}, not {wanted!r}",
            f"pass environment={state.environment.name}",
        )


def now_is_allowed(state: Preflight) -> None:
    check_allowed_hours(state.environment, state.now)


def users_fit_the_cap(state: Preflight) -> None:
    env = state.environment
    if env.max_users and state.peak_users > env.max_users:
        raise RunRefused("users", f"{state.peak_users} exceeds the {env.name} cap of {env.max_users}", "lower users")


def workers_are_possible(state: Preflight) -> None:
    request = state.request
    if request.workers is not None and request.workers < 0:
        raise RunRefused("workers", "must be 0 (one process) or more", "pass --workers 2")
    if request.worker_provider not in PROVIDERS:
        raise RunRefused("worker_provider", f"{request.worker_provider!r} is unknown", "local, ecs or ec2")
    if request.worker_provider != "local":  # cloud workers: count and size from the peak users
        try:
            sizing = plan_workers(state.peak_users, provider=request.worker_provider, count=request.workers or None,
                                  size=request.worker_size or None)
        except ValueError as exc:
            raise RunRefused.line(str(exc)) from exc
        state.workers = sizing.count
    else:
        state.workers = default_worker_count(state.peak_users) if request.workers is None else request.workers


def plan_is_whole(state: Preflight) -> None:
    """The checked plan; all its scenarios share one locustfile (they share the workers)."""
    request = state.request
    state.plan = RunPlan(
        run_id=request.run_id, target=state.target, environment=state.environment.name,
        scenarios=tuple(state.scenarios), workers=state.workers, progress_interval_s=request.progress_interval_s,
        out_dir=request.out_dir, worker_provider=request.worker_provider, worker_spot=request.worker_spot,
        worker_size=request.worker_size, allowed_hours=state.environment.allowed_hours,
    )
    try:
        state.plan.locustfile  # noqa: B018 - raises when the scenarios name different locustfiles
    except ValueError as exc:
        raise RunRefused.line(str(exc)) from exc


def locustfile_can_run(state: Preflight) -> None:
    """A team's locustfile imports and has the User classes the scenario names (checked in a process of its own)."""
    plan = state.plan
    if plan.locustfile is None:
        return  # the stock journeys: tested with the code
    path = Path(plan.locustfile)
    label = f"locustfile {path.name}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", locustfile_check.__name__, str(path), *user_classes_for(plan)],
            cwd=path.parent, env=load_process_env(run_tag=plan.run_tag, password_env=plan.password_env),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=LOCUSTFILE_CHECK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise RunRefused(label, f"importing it did not finish within {LOCUSTFILE_CHECK_TIMEOUT_S} s",
                         "move slow work (network calls, big files) out of module level into on_start") from None
    verdicts = [line[len(locustfile_check.MARK):] for line in done.stdout.splitlines()
                if line.startswith(locustfile_check.MARK)]
    if not verdicts:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RunRefused(label, f"the check could not run it (exit {done.returncode}: {last})",
                         "run it by hand: locust -f FILE --headless -t 1s")
    outcome = json.loads(verdicts[-1])
    if outcome:
        raise RunRefused(label, outcome["problem"], outcome["fix"])


def cleanup_can_run(state: Preflight) -> None:
    """The cleanup declaration's credentials are there and its hook exists, before anything is created."""
    declaration = state.plan.cleanup  # a Refusal when the scenarios declare different cleanups
    if declaration is None:
        return
    for field_name, secret in declaration.auth.secrets:
        if not lookup_secret(secret):
            raise RunRefused(field_name, f"{secret.describe()} is not set (cleanup could not authenticate)",
                             "set it where the run's tasks run, or change the scenario's cleanup.auth")
    if declaration.hook:
        file, function = hook_parts(declaration.hook)
        try:
            tree = ast.parse(file.read_text())
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            raise RunRefused("cleanup.hook", f"{file.name} cannot be read as Python ({type(exc).__name__})",
                             "give the path of a Python file, relative to the scenario") from None
        if not any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body):
            raise RunRefused("cleanup.hook", f"{file.name} has no top-level function {function!r}",
                             f"define def {function}(context) in it, or name one it has")


def kill_switch_is_off(state: Preflight) -> None:
    reason = state.kill_switch()
    if reason:
        raise RunRefused.line(f"{reason}; fix: {killswitch.how_to_clear()}")


def target_is_free(state: Preflight) -> None:
    """One run per target: take its lease (the run's own earlier lease is taken again)."""
    plan = state.plan
    lease.acquire(
        locks_dir(), plan.target, run_id=plan.run_id, ttl_s=plan.load_duration_s + WORKER_TTL_MARGIN_S,
        pid=os.getpid() if state.lease_pid == -1 else state.lease_pid,
    )
    state.leased = True


def target_is_healthy(state: Preflight) -> None:
    """The first request to the target: its health endpoint (no redirect followed)."""
    problem = probe(state.target, timeout_s=5, attempts=HEALTH_ATTEMPTS, pause_s=1)
    if problem:
        raise RunRefused("target", problem, "start or repair the target first")


CHECKS: tuple[Callable[[Preflight], None], ...] = (
    scenarios_are_valid,
    environments_are_valid,
    target_is_given,
    target_may_receive_load,
    now_is_allowed,
    users_fit_the_cap,
    workers_are_possible,
    plan_is_whole,
    cleanup_can_run,
    locustfile_can_run,
    kill_switch_is_off,
    target_is_free,
    target_is_healthy,  # the only check that sends a request: last
)


def preflight(
    request: RunRequest,
    *,
    kill_switch: Callable[[], str | None] = killswitch.local_reason,
    environments_text: str | None = None,
    lease_pid: int | None = -1,
    now: datetime | None = None,
) -> RunPlan:
    """Run every check on ``request``; return the checked plan, or raise the first :class:`Refusal`.

    :param kill_switch: why the kill switch is on, or None (Airflow adds the Variable's check).
    :param environments_text: the environments config (the Airflow Variable); default the file.
    :param lease_pid: the process that holds the target's lease: -1 this one (the CLI),
        None a DAG run (held until teardown or expiry).
    :param now: the time judged against the environment's allowed hours (default: now).
    """
    state = Preflight(request=request, kill_switch=kill_switch, environments_text=environments_text,
                      lease_pid=lease_pid, now=now)
    try:
        for check in CHECKS:
            check(state)
    except Refusal:
        if state.leased:
            lease.release(locks_dir(), state.plan.target, run_id=state.plan.run_id)
        raise
    log.info("Preflight passed: %s on %s (%s), peak %d users, %d workers", state.plan.scenario_name,
             state.plan.target, state.plan.environment, state.plan.peak_users, state.plan.workers)
    return state.plan
