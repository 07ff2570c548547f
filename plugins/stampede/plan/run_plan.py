"""The run plan: one or more scenarios, a target and a run id, checked and ready to load.

A plan is what preflight hands to every later step (through XCom as a dict).
Several scenarios (the nightly normal → peak → stress) become one sequence of
stages, each carrying its own scenario's threshold table (``threshold_table``:
the :class:`stampede.core.thresholds.Threshold` rules that apply to it, with the
scenario's abort settings filled in), so one Locust master drives the workers
through all of them and judges the abort thresholds by the same rules that
validation judges after the run.

The plan's ``target`` is the canonical URL (:mod:`stampede.plan.target`) and
``target_addresses`` what preflight resolved its host to: the load processes'
egress guard lets them connect to those addresses only, the name pinned to them.

**The run tag** (:func:`run_tag_for`) names the run everywhere outside Airflow:
its folder (``reports/<run tag>/``), the test data it creates (every entity
carries the tag) and the tag registry the reaper trusts (``stampede.state.tags``).
It is unique per DAG id *and* run id: a readable start (the run id's letters and
digits, its timestamp compacted, so ``manual__2026-12-01T20:04:59+00:00`` reads
``manual20261201T200459``), an ``x``, and 12 hex digits of a SHA-256 of the DAG id
and the run id. ``run-1`` and ``run_1``, or one run id in two DAGs, get different
tags, folders and leases; the registry refuses the rare tag that was already
issued to another run, so two runs never share one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from stampede.core.thresholds import Threshold, legacy_view
from stampede.plan.cleanup_declaration import CleanupDeclaration, CreateRule, declaration_for
from stampede.plan.scenario import DEFAULT_OWNER_GRACE_S, Scenario, judged_stages
from stampede.plan.target import Target, parse_target

# a master started again after one died (stampede.load.runner) plays the stages from this epoch (the run's
# first stage's start), not from zero: the shape (stampede.load.shape) continues where the clock is
RESUME_KEY = "resume_load_started_at"

DEFAULT_ACCOUNTS = {
    "agent": "agent@demo.stampede.local",
    "broker": "broker@demo.stampede.local",
    "admin": "admin@demo.stampede.local",
    "readonly": "readonly@demo.stampede.local",
}
PASSWORD_ENV = "STAMPEDE_TARGET_PASSWORD"


RUN_TAG_PREFIX = "LT-"
READABLE_CHARS = 28
DIGEST_CHARS = 12  # 48 bits; a clash is refused by the tag registry, never shared
_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")


def run_tag_for(run_id: str, dag_id: str = "") -> str:
    """``LT-<readable>x<digest>``: the tag every entity of this run carries (letters and digits only)."""
    compact = _TIMESTAMP.sub(lambda m: "{}{}{}T{}{}{}".format(*m.groups()), run_id)
    readable = re.sub(r"[^A-Za-z0-9]+", "", compact)[:READABLE_CHARS]
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}".encode()).hexdigest()[:DIGEST_CHARS]
    return f"{RUN_TAG_PREFIX}{readable}x{digest}"


@dataclass(frozen=True)
class PlannedStage:
    name: str
    scenario: str
    users: int
    spawn_rate: float
    duration_s: int
    thresholds: dict[str, float] = field(default_factory=dict)  # the legacy view of threshold_table (charts)
    abort: bool = False  # the scenario aborts on a breach here (abort_on_breach), or one of its thresholds does
    abort_delay_s: int | None = None  # None: the plugin's default (twice the window)
    abort_window_s: int | None = None  # None: the plugin's default (10 s)
    judged: bool = True  # False for a ramp-down: reported, not held to the thresholds
    rate: float | None = None  # open model: iterations/s at the stage's end (users = pre-allocated users)
    start_rate: float | None = None  # open model: iterations/s at its start (None: constant rate)
    threshold_table: tuple[Threshold, ...] = ()  # every threshold judged on this stage, abort settings resolved
    live: bool = False  # a live search's next step: the master waits for its level (stampede.load.shape)


def stage_table(scenario: Scenario, stage_name: str, *, judged: bool, at_peak: bool) -> tuple[Threshold, ...]:
    """The thresholds one stage is held to.

    A ramp-down is held to none; a throughput floor only at the scenario's peak users (the seed's
    "> 100 req/s" is a figure for 1,000 users, not for the 100-user warm-up on the way there).
    Each threshold gets the scenario's ``abort_on_breach`` and ``abort`` block where it has no
    setting of its own.
    """
    if not judged:
        return ()
    return tuple(
        rule.with_defaults(abort=scenario.abort_on_breach, delay_s=scenario.abort.delay_s,
                           abort_window_s=scenario.abort.window_s)
        for rule in scenario.threshold_rules
        if rule.applies_to(stage_name) and (at_peak or not rule.is_throughput_floor)
    )


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    target: str  # base URL including /v1
    environment: str
    scenarios: tuple[Scenario, ...]
    workers: int
    accounts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ACCOUNTS))
    password_env: str = PASSWORD_ENV
    progress_interval_s: float = 5.0
    out_dir: str | None = None  # where the run's files go; default reports/<run tag>/
    worker_provider: str = "local"  # local | ecs | ec2 (stampede.workers.provider_for)
    worker_spot: bool = False  # FARGATE_SPOT / EC2 spot for cloud workers
    worker_size: str = ""  # override: a Fargate size (fargate-1vcpu-2gb) or an instance type; empty: derived
    allowed_hours: tuple[tuple[int, int], ...] = ()  # the environment's UTC windows; the load stops when they close
    dag_id: str = ""  # the Airflow DAG of the run ("" for the command line)
    target_addresses: tuple[str, ...] = ()  # what preflight resolved the target's host to (the egress pins)
    local_ips: tuple[str, ...] = ()  # the load's source addresses, in turn (stampede.plan.local_ips); (): the kernel's

    @property
    def run_tag(self) -> str:
        return run_tag_for(self.run_id, self.dag_id)

    @property
    def target_record(self) -> Target:
        """The canonical target with the addresses preflight resolved (no lookup here)."""
        parsed = parse_target(self.target)
        return Target(parsed.scheme, parsed.host, parsed.port, parsed.path, tuple(self.target_addresses))

    def egress_policy(self) -> dict[str, Any]:
        """What a load process may connect to: the target's resolved addresses, its name pinned to them."""
        return self.target_record.egress_policy()

    @property
    def scenario_name(self) -> str:
        return "+".join(s.name for s in self.scenarios)

    @property
    def stages(self) -> list[PlannedStage]:
        planned = []
        many = len(self.scenarios) > 1
        for scenario in self.scenarios:
            for stage, judged in zip(scenario.stages, judged_stages(scenario.stages)):
                table = stage_table(scenario, stage.name, judged=judged, at_peak=stage.users >= scenario.peak_users)
                planned.append(PlannedStage(
                    name=f"{scenario.name}/{stage.name}" if many else stage.name,
                    scenario=scenario.name,
                    users=stage.users,
                    spawn_rate=stage.spawn_rate,
                    duration_s=stage.duration_s,
                    thresholds=legacy_view(table),
                    abort=(scenario.abort_on_breach and judged) or any(rule.aborts for rule in table),
                    abort_delay_s=scenario.abort.delay_s,
                    abort_window_s=scenario.abort.window_s,
                    judged=judged,
                    rate=stage.rate,
                    start_rate=stage.start_rate,
                    threshold_table=table,
                    live=stage.live,
                ))
        return planned

    @property
    def owner_grace_s(self) -> float:
        """How long the load outlives a dead owner: the longest any of its scenarios asks for, else the default."""
        asked = [s.owner_grace_s for s in self.scenarios if s.owner_grace_s is not None]
        return max(asked) if asked else DEFAULT_OWNER_GRACE_S

    @property
    def peak_users(self) -> int:
        return max(s.peak_users for s in self.scenarios)

    @property
    def load_duration_s(self) -> int:
        return sum(s.duration_s for s in self.scenarios)

    @property
    def locustfile(self) -> str | None:
        files = {s.locustfile for s in self.scenarios}
        if len(files) > 1:
            raise ValueError("scenarios: one run can only use one locustfile; fix: run them separately")
        return files.pop()

    @property
    def cleanup(self) -> CleanupDeclaration | None:
        """How to remove the run's test data (the scenarios share a locustfile, so one declaration)."""
        return declaration_for([s.cleanup_declaration for s in self.scenarios])

    @property
    def creates(self) -> tuple[CreateRule, ...]:
        """Which requests create what (the workers record those in the ledger)."""
        return tuple(dict.fromkeys(rule for s in self.scenarios for rule in s.creates))

    def journeys(self) -> dict[str, float]:
        """Journey weights; for several scenarios, the first one's mix (they share workers)."""
        return dict(self.scenarios[0].journeys)

    def locust_plan(self, *, resume_from: float | None = None) -> dict[str, Any]:
        """The JSON the Locust processes receive (no secrets: the password stays in the environment)."""
        resumed = {} if resume_from is None else {RESUME_KEY: resume_from}
        return {
            "run_id": self.run_id,
            "run_tag": self.run_tag,
            "target": self.target,
            "journeys": self.journeys(),
            "think_time_s": list(self.scenarios[0].think_time_s),
            "accounts": dict(self.accounts),
            "password_env": self.password_env,
            "stages": [asdict(s) for s in self.stages],
            "model": self.scenarios[0].model,  # closed | open (one model per run: they share the workers)
            "progress_interval_s": self.progress_interval_s,
            "owner_grace_s": self.owner_grace_s,  # stampede.load.owner: the load stops when its owner's beat is older
            "egress": self.egress_policy(),  # stampede.load.egress: the only addresses a load process may reach
            "local_ips": list(self.local_ips),  # stampede.load.fixes: new connections bind to these in turn
            "creates": [rule.to_dict() for rule in self.creates],  # the workers' ledger rules
            "cleanup": self.cleanup.to_dict() if self.cleanup else None,  # the ledger's header, for the reaper
            **resumed,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "target": self.target,
            "environment": self.environment,
            "scenarios": [s.to_dict() for s in self.scenarios],
            "workers": self.workers,
            "accounts": dict(self.accounts),
            "password_env": self.password_env,
            "progress_interval_s": self.progress_interval_s,
            "out_dir": self.out_dir,
            "worker_provider": self.worker_provider,
            "worker_spot": self.worker_spot,
            "worker_size": self.worker_size,
            "allowed_hours": [list(w) for w in self.allowed_hours],
            "dag_id": self.dag_id,
            "target_addresses": list(self.target_addresses),
            "local_ips": list(self.local_ips),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPlan:
        return cls(
            run_id=data["run_id"],
            target=data["target"],
            environment=data["environment"],
            scenarios=tuple(Scenario.from_dict(s) for s in data["scenarios"]),
            workers=int(data["workers"]),
            accounts=dict(data.get("accounts") or DEFAULT_ACCOUNTS),
            password_env=data.get("password_env", PASSWORD_ENV),
            progress_interval_s=float(data.get("progress_interval_s", 5.0)),
            out_dir=data.get("out_dir"),
            worker_provider=data.get("worker_provider") or "local",
            worker_spot=bool(data.get("worker_spot", False)),
            worker_size=data.get("worker_size") or "",
            allowed_hours=tuple((int(a), int(b)) for a, b in data.get("allowed_hours") or ()),
            dag_id=data.get("dag_id") or "",
            target_addresses=tuple(data.get("target_addresses") or ()),
            local_ips=tuple(data.get("local_ips") or ()),
        )
