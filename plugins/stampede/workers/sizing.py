"""How many cloud workers, and how big, a run needs: derived from its peak users.

The capacity comes from the project's own benchmark (`make bench`, stock journeys,
3–8 s think time, 2026-12-02, after the journeys began writing their own request
head): each of 2 local worker processes drove 7,500 users (15,000 in all) at 0.254
of a core (25.7 % and 25.1 %), with 17.8 MiB per 1,000 users (levels 1,000–15,000),
while the target (2 processes), the master and other work shared the same 2 cores
(load average 5–7; the workers waited for a core 40 % of the time, so that level
failed the bench's p95 rule, not its CPU rule). On 2026-11-28, before that change
and on a quieter machine, the same 7,500 users took 0.59 of a core. A worker runs
one Locust process (the agent) and is planned at 5,000 users, two thirds of what
was measured, since other journeys cost more per user than the stock mix; its size
holds them with a 40 % head-room (5,000 / 29,500 per vCPU / 0.6 → 0.28 vCPU;
17.8 MiB per 1,000 users × 5 / 0.6 + base → 0.4 GiB: Fargate's 0.5 vCPU / 1 GB).
Heavier journeys or shorter think times need more: pass ``workers`` to override
the count, ``worker_size`` the size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# Measured by `make bench` (reports/bench.json: users_held, cpu/mib_per_1000_users), stock journeys.
MEASURED_USERS_PER_PROCESS = 7_500
MEASURED_CORES = 0.254
MIB_PER_1000_USERS = 17.8
USERS_PER_VCPU = MEASURED_USERS_PER_PROCESS / MEASURED_CORES  # ~29,500
SAFETY_MARGIN = 0.6  # size each worker with 40 % head-room over what the benchmark measured
BASE_MEMORY_MIB = 256  # Python, Locust and the agent before any user

HELD_CPU_LIMIT_PCT = 70.0  # a generator "holds" its users while it stays under this share of one core (the bench's rule)
USERS_PER_WORKER = 5_000  # planned per process: two thirds of the 7,500 one process held under the 70 % limit

# Fargate's valid (vCPU, memory GiB) pairs, smallest first (only the sizes we plan with).
FARGATE_SIZES: tuple[tuple[float, int], ...] = ((0.25, 1), (0.5, 1), (0.5, 2), (1, 2), (1, 4), (2, 4), (2, 8), (4, 8))
# Instance types with their (vCPU, memory GiB), cheapest first per family; the price table has them all.
EC2_SIZES: dict[str, tuple[int, int]] = {
    "c7i.large": (2, 4), "c6i.large": (2, 4), "m6i.large": (2, 8),
    "c7i.xlarge": (4, 8), "c6i.xlarge": (4, 8), "m6i.xlarge": (4, 16),
}
DEFAULT_INSTANCE_TYPE = "c6i.large"


@dataclass(frozen=True)
class WorkerPlan:
    """The workers a run gets: provider, count and size (``size`` names it for prices and tags)."""

    provider: str
    count: int
    vcpu: float
    memory_gib: float
    size: str  # "fargate-0.5vcpu-1gb" | an instance type | "local"
    spot: bool = False
    users_per_worker: int = USERS_PER_WORKER

    def to_dict(self) -> dict:
        return asdict(self)


def needed_per_worker(users_per_worker: int = USERS_PER_WORKER) -> tuple[float, float]:
    """(vCPU, memory MiB) one worker needs for its users, with the safety margin as head-room."""
    vcpu = users_per_worker / USERS_PER_VCPU / SAFETY_MARGIN
    memory_mib = BASE_MEMORY_MIB + users_per_worker / 1000 * MIB_PER_1000_USERS / SAFETY_MARGIN
    return vcpu, memory_mib


def worker_count(peak_users: int, users_per_worker: int = USERS_PER_WORKER) -> int:
    return max(1, math.ceil(peak_users / users_per_worker))


def plan_workers(
    peak_users: int, *, provider: str, count: int | None = None, spot: bool = False, size: str | None = None,
) -> WorkerPlan:
    """The worker plan for a run's peak users; ``count`` and ``size`` override the derived ones."""
    n = count if count else worker_count(peak_users)
    per_worker = max(1, math.ceil(peak_users / n))
    if provider == "local":
        return WorkerPlan(provider="local", count=n, vcpu=0, memory_gib=0, size="local", users_per_worker=per_worker)
    vcpu, memory_mib = needed_per_worker(per_worker)
    if provider == "ecs":
        if size:
            cpu, memory = parse_fargate_size(size)
        else:
            cpu, memory = next(
                ((c, m) for c, m in FARGATE_SIZES if c >= vcpu and m * 1024 >= memory_mib), FARGATE_SIZES[-1],
            )
        return WorkerPlan(provider="ecs", count=n, vcpu=cpu, memory_gib=memory, size=fargate_size_name(cpu, memory),
                          spot=spot, users_per_worker=per_worker)
    if provider == "ec2":
        instance_type = size or DEFAULT_INSTANCE_TYPE
        if instance_type not in EC2_SIZES:
            raise ValueError(f"workers.size: unknown instance type {instance_type!r}; fix: one of {sorted(EC2_SIZES)}")
        cpu, memory = EC2_SIZES[instance_type]
        return WorkerPlan(provider="ec2", count=n, vcpu=cpu, memory_gib=memory, size=instance_type,
                          spot=spot, users_per_worker=per_worker)
    raise ValueError(f"workers.provider: unknown provider {provider!r}; fix: use local, ecs or ec2")


def fargate_size_name(vcpu: float, memory_gib: float) -> str:
    return f"fargate-{vcpu:g}vcpu-{memory_gib:g}gb"


def parse_fargate_size(name: str) -> tuple[float, int]:
    """``fargate-0.5vcpu-1gb`` → (0.5, 1); only Fargate's valid pairs."""
    try:
        _, cpu, memory = name.split("-")
        pair = (float(cpu.removesuffix("vcpu")), int(memory.removesuffix("gb")))
    except ValueError:
        pair = None
    if pair not in FARGATE_SIZES:
        valid = ", ".join(fargate_size_name(c, m) for c, m in FARGATE_SIZES)
        raise ValueError(f"workers.size: {name!r} is not a Fargate size; fix: one of {valid}")
    return pair
