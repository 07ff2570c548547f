"""The run plan: one or more scenarios, a target and a run id, checked and ready to load.

A plan is what preflight hands to every later step (through XCom as a dict).
Several scenarios (the nightly normal → peak → stress) become one sequence of
stages, each carrying its own scenario's thresholds, so one Locust master
drives the workers through all of them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from stampede.plan.cleanup_declaration import CleanupDeclaration, CreateRule, declaration_for
from stampede.plan.scenario import Scenario

DEFAULT_ACCOUNTS = {
    "agent": "agent@demo.stampede.local",
    "broker": "broker@demo.stampede.local",
    "admin": "admin@demo.stampede.local",
    "readonly": "readonly@demo.stampede.local",
}
PASSWORD_ENV = "STAMPEDE_TARGET_PASSWORD"


def run_tag_for(run_id: str) -> str:
    """``LT-<slug>``: the tag every entity of this run carries, searchable and URL-safe."""
    slug = re.sub(r"[^A-Za-z0-9]+", "", run_id)[-24:] or "run"
    return f"LT-{slug}"


@dataclass(frozen=True)
class PlannedStage:
    name: str
    scenario: str
    users: int
    spawn_rate: float
    duration_s: int
    thresholds: dict[str, float] = field(default_factory=dict)
    abort: bool = False
    abort_delay_s: int | None = None  # None: the plugin's default (twice the window)
    abort_window_s: int | None = None  # None: the plugin's default (10 s)
    judged: bool = True  # False for a ramp-down: reported, not held to the thresholds
    rate: float | None = None  # open model: iterations/s at the stage's end (users = pre-allocated users)
    start_rate: float | None = None  # open model: iterations/s at its start (None: constant rate)


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

    @property
    def run_tag(self) -> str:
        return run_tag_for(self.run_id)

    @property
    def scenario_name(self) -> str:
        return "+".join(s.name for s in self.scenarios)

    @property
    def stages(self) -> list[PlannedStage]:
        planned = []
        many = len(self.scenarios) > 1
        for scenario in self.scenarios:
            previous_users = 0
            for stage in scenario.stages:
                # A stage that lowers the load (ramp-down, recovery) is reported but not judged, and the
                # throughput floor applies only at the scenario's peak: the seed's "> 100 req/s" is a
                # figure for 1,000 users, not for the 100-user warm-up on the way there.
                judged = stage.users > 0 and stage.users >= previous_users
                thresholds = dict(scenario.thresholds.items()) if judged else {}
                if stage.users < scenario.peak_users:
                    thresholds.pop("min_rps", None)
                previous_users = stage.users
                planned.append(PlannedStage(
                    name=f"{scenario.name}/{stage.name}" if many else stage.name,
                    scenario=scenario.name,
                    users=stage.users,
                    spawn_rate=stage.spawn_rate,
                    duration_s=stage.duration_s,
                    thresholds=thresholds,
                    abort=scenario.abort_on_breach and judged,
                    abort_delay_s=scenario.abort.delay_s,
                    abort_window_s=scenario.abort.window_s,
                    judged=judged,
                    rate=stage.rate,
                    start_rate=stage.start_rate,
                ))
        return planned

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

    def locust_plan(self) -> dict[str, Any]:
        """The JSON the Locust processes receive (no secrets: the password stays in the environment)."""
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
            "creates": [rule.to_dict() for rule in self.creates],  # the workers' ledger rules
            "cleanup": self.cleanup.to_dict() if self.cleanup else None,  # the ledger's header, for the reaper
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
        )
