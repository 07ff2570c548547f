"""Step 1, preflight: everything that can be checked before load is sent, as a list of checks.

A :class:`RunRequest` (what the CLI or the trigger form asked for) goes through
:data:`CHECKS` in order, cheapest and safest first; each check reads and
completes one :class:`Preflight` record, or raises a
:class:`stampede.core.errors.Refusal` (``field: problem; fix: …``). Every check
before the health check sends nothing to the target. Passing takes the target's
lease (one run per target, keyed by its resolved addresses), given back by the
teardown, and issues the run's tag (``stampede.state.tags``); a check that refuses
(or fails) after the lease was taken gives it back first.

The target is parsed once, strictly (:mod:`stampede.plan.target`), and resolved
once; the plan carries the canonical URL and the addresses, and nothing later
looks at what the user typed.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import logging
import math
import os
import time
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
from stampede.plan.local_ips import auto_local_ips, check_bindable, parse_local_ips, refuse_unless_fit
from stampede.plan.environments import Environment, check_allowed_hours, classify, load_environments
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import MAX_STAGE_S, MAX_USERS, Scenario, load_named_scenario, load_scenario
from stampede.plan.target import Resolver, Target, TargetInvalid, parse_target
from stampede.safety import killswitch, lease
from stampede.safety.health import probe
from stampede.state import tags
from stampede.workers.local import check_open_files, default_worker_count
from stampede.workers.sizing import plan_workers

log = logging.getLogger(__name__)

HEALTH_ATTEMPTS = 3
LOCUSTFILE_CHECK_TIMEOUT_S = 60  # importing Locust and the file takes 1-3 s here
WORKER_TTL_MARGIN_S = 1800  # beyond the planned load: the lease's and the workers' lifetime
PROVIDERS = ("local", "ecs", "ec2")
MAX_WORKERS = 64
MAX_RUN_ID = 200


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
    dag_id: str = ""  # the Airflow DAG ("" for the command line): part of the run's identity
    scenario_paths: bool = True  # False where names come from a trigger form or run conf: files of the folder only
    local_ips: object = None  # text or list (stampede.plan.local_ips); None: as many 127.0.0.x as a loopback run needs


@dataclass
class Preflight:
    """The request and what the checks found so far; the last check turns it into the plan."""

    request: RunRequest
    kill_switch: Callable[[], str | None]
    environments_text: str | None
    lease_pid: int | None
    now: datetime | None
    resolver: Resolver | None = None  # default socket.getaddrinfo (tests give a resolver they control)
    scenarios: list[Scenario] = field(default_factory=list)
    environments: dict[str, Environment] = field(default_factory=dict)
    target: Target | None = None
    environment: Environment | None = None
    workers: int = 0
    local_ips: tuple[str, ...] = ()
    plan: RunPlan | None = None
    leased: bool = False

    @property
    def peak_users(self) -> int:
        return max(s.peak_users for s in self.scenarios)


# -- the checks, in order ----------------------------------------------------------------------
def inputs_are_possible(state: Preflight) -> None:
    """Impossible numbers and identities, refused before anything reads a file (``--duration 0`` once crashed)."""
    request = state.request
    _whole("users", request.users, 1, MAX_USERS, "--users 100")
    _whole("duration_s", request.duration_s, 1, MAX_STAGE_S, "--duration 60")
    _whole("workers", request.workers, 0, MAX_WORKERS, "--workers 2 (0: one process)")
    interval = request.progress_interval_s
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval) or interval <= 0:
        raise RunRefused("progress_interval_s", f"must be a number of seconds above 0 (got {interval!r})", "use e.g. 5")
    for name, value in (("run_id", request.run_id), ("dag_id", request.dag_id)):
        if not isinstance(value, str) or len(value) > MAX_RUN_ID or not value.isprintable() or (name == "run_id" and not value.strip()):
            raise RunRefused(name, f"must be printable text of at most {MAX_RUN_ID} characters (got {str(value)[:40]!r})",
                             "pass another id")


def _whole(name: str, value, low: int, high: int, example: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RunRefused(name, f"must be a whole number from {low} to {high} (got {value!r})", f"use e.g. {example}")


def scenarios_are_valid(state: Preflight) -> None:
    names = state.request.scenarios
    if not names:
        raise RunRefused("scenario", "none given", "name at least one scenario")
    if isinstance(names, str):
        raise RunRefused("scenarios", f"must be a list of names (got the text {names[:40]!r})", f'use ["{names[:40]}"]')
    listed_twice = next((n for n in names if list(names).count(n) > 1), None)
    if listed_twice is not None:
        raise RunRefused("scenarios", f"{listed_twice!r} is listed twice: its stages would share their names",
                         "list each scenario once")
    load = load_scenario if state.request.scenario_paths else load_named_scenario
    loaded = [load(name) for name in names]
    state.scenarios = [s.with_overrides(users=state.request.users, duration_s=state.request.duration_s) for s in loaded]


def environments_are_valid(state: Preflight) -> None:
    state.environments = load_environments(state.environments_text)


def target_is_given(state: Preflight) -> None:
    target, wanted = state.request.target, state.request.environment
    if not target and wanted in state.environments and state.environments[wanted].base_urls:
        target = state.environments[wanted].base_urls[0]
    if not target:
        raise RunRefused("target", "none given", "pass a base URL incl. /v1, or an environment that lists one")
    try:
        state.target = parse_target(target)  # the one parse; everything after sees only the rebuilt URL
    except TargetInvalid as exc:
        raise RunRefused.line(str(exc)) from None


def target_may_receive_load(state: Preflight) -> None:
    """Never production, never a host no environment allows; the environment, and the host resolved once."""
    options = {"resolver": state.resolver} if state.resolver else {}
    state.environment, state.target = classify(state.target, state.environments, **options)
    wanted = state.request.environment
    if wanted and wanted != state.environment.name:
        raise RunRefused(
            "environment", f"target {state.target.url} belongs to {state.environment.name!r}, not {wanted!r}",
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
        check_open_files(state.peak_users, state.workers)  # one socket per user, in processes of this machine


def source_ports_suffice(state: Preflight) -> None:
    """Every user's connection gets a source port: the given ``local_ips`` are this machine's and enough,
    or a loopback run gets the 127.0.0.x addresses it needs (``stampede.plan.local_ips``)."""
    request = state.request
    given = parse_local_ips(request.local_ips)
    if given and request.worker_provider != "local":
        raise RunRefused("local_ips", f"are for local workers; {request.worker_provider} workers have their own addresses",
                         "leave local_ips out for cloud workers")
    if request.worker_provider != "local":
        return
    # 127.0.0.x sources serve a target on IPv4 loopback only (a socket binds to its own family's addresses)
    ipv4_loopback = state.target.is_local and all(ipaddress.ip_address(a).version == 4 for a in state.target.addresses)
    chosen = given or auto_local_ips(state.peak_users, ipv4_loopback)
    check_bindable(chosen)
    refuse_unless_fit(state.peak_users, chosen)
    state.local_ips = chosen


def plan_is_whole(state: Preflight) -> None:
    """The checked plan; all its scenarios share one locustfile (they share the workers)."""
    request = state.request
    state.plan = RunPlan(
        run_id=request.run_id, target=state.target.url, environment=state.environment.name,
        scenarios=tuple(state.scenarios), workers=state.workers, progress_interval_s=request.progress_interval_s,
        out_dir=request.out_dir, worker_provider=request.worker_provider, worker_spot=request.worker_spot,
        worker_size=request.worker_size, allowed_hours=state.environment.allowed_hours, dag_id=request.dag_id,
        target_addresses=state.target.addresses, local_ips=state.local_ips,
    )
    try:
        state.plan.locustfile  # noqa: B018 - raises when the scenarios name different locustfiles
    except ValueError as exc:
        raise RunRefused.line(str(exc)) from exc
    names = [stage.name for stage in state.plan.stages]
    shared = next((n for n in names if names.count(n) > 1), None)
    if shared is not None:  # two scenario files with one name: results, checks and Slack would mix them up
        raise RunRefused("scenarios", f"two stages of the run are both named {shared!r}",
                         "give the scenarios (or their stages) distinct names")


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


def journeys_can_log_in(state: Preflight) -> None:
    """The stock journeys log every user in: without the accounts' password every request would fail.

    Local workers read it from this environment (``password_env``); cloud workers get it from
    their own secret (``STAMPEDE_TARGET_PASSWORD_SECRET_ARN``), not checked here. A team's
    locustfile logs in its own way, if at all.
    """
    plan = state.plan
    if plan.locustfile is not None or plan.worker_provider != "local":
        return
    if not os.environ.get(plan.password_env):
        raise RunRefused(plan.password_env, "not set, and the stock journeys log every user in with it (every "
                         "request would fail)", f"set {plan.password_env} in the environment where the run's tasks "
                         "run, to the target accounts' password")


def kill_switch_is_off(state: Preflight) -> None:
    try:
        reason = state.kill_switch()
    except Exception as exc:  # noqa: BLE001 - a switch that cannot be read is on
        reason = killswitch.unreadable("the kill switch", exc)
    if reason:
        raise RunRefused.line(f"{reason}; fix: {killswitch.how_to_clear()}")


def target_is_free(state: Preflight) -> None:
    """One run per target, keyed by its resolved addresses: take its lease (the run's own is taken again)."""
    plan = state.plan
    lease.acquire(
        state.target, run_id=plan.run_id, run_tag=plan.run_tag, ttl_s=lease_ttl_s(plan),
        pid=os.getpid() if state.lease_pid == -1 else state.lease_pid,
    )
    state.leased = True


def target_is_healthy(state: Preflight) -> None:
    """The first request to the target: its health endpoint (no redirect followed)."""
    problem = probe(state.target, timeout_s=5, attempts=HEALTH_ATTEMPTS, pause_s=1)
    if problem:
        raise RunRefused("target", problem, "start or repair the target first")


def run_tag_is_issued(state: Preflight) -> None:
    """The run's tag, recorded as Stampede's: the reaper deletes only data carrying an issued, ended tag."""
    plan = state.plan
    try:
        tags.issue(plan.run_tag, run_id=plan.run_id, dag_id=plan.dag_id, target=plan.target,
                   expires_at=time.time() + lease_ttl_s(plan),
                   cleanup=plan.cleanup.to_dict() if plan.cleanup is not None else None)
    except tags.TagClash as exc:
        raise RunRefused("run_id", str(exc), "use another run id") from None


def lease_ttl_s(plan: RunPlan) -> float:
    """How long the lease (and the tag, unless ended sooner) lasts: the planned load and a margin."""
    return plan.load_duration_s + WORKER_TTL_MARGIN_S


CHECKS: tuple[Callable[[Preflight], None], ...] = (
    inputs_are_possible,
    scenarios_are_valid,
    environments_are_valid,
    target_is_given,
    target_may_receive_load,
    now_is_allowed,
    users_fit_the_cap,
    workers_are_possible,
    source_ports_suffice,
    plan_is_whole,
    cleanup_can_run,
    journeys_can_log_in,
    locustfile_can_run,
    kill_switch_is_off,
    target_is_free,
    target_is_healthy,  # the only check that sends a request: last but one
    run_tag_is_issued,
)


def preflight(
    request: RunRequest,
    *,
    kill_switch: Callable[[], str | None] = killswitch.local_reason,
    environments_text: str | None = None,
    lease_pid: int | None = -1,
    now: datetime | None = None,
    resolver: Resolver | None = None,
) -> RunPlan:
    """Run every check on ``request``; return the checked plan, or raise the first :class:`Refusal`.

    :param kill_switch: why the kill switch is on, or None (Airflow adds the Variable's check).
    :param environments_text: the environments config (the Airflow Variable); default the file.
    :param lease_pid: the process that holds the target's lease: -1 this one (the CLI),
        None a DAG run (held until teardown or expiry).
    :param now: the time judged against the environment's allowed hours (default: now).
    :param resolver: looks the target's host up (``socket.getaddrinfo``'s signature), once.
    """
    state = Preflight(request=request, kill_switch=kill_switch, environments_text=environments_text,
                      lease_pid=lease_pid, now=now, resolver=resolver)
    try:
        for check in CHECKS:
            check(state)
    except BaseException:  # a refusal, or a crash after the lease was taken: nothing may stay held
        if state.leased:
            try:
                lease.release(run_id=state.plan.run_id)
            except Exception:  # noqa: BLE001 - the first failure is the news; the lease then expires by itself
                log.exception("Could not give back the lease of run %s (it expires by itself)", state.plan.run_id)
        raise
    log.info("Preflight passed: %s on %s (%s), peak %d users, %d workers", state.plan.scenario_name,
             state.plan.target, state.plan.environment, state.plan.peak_users, state.plan.workers)
    return state.plan
