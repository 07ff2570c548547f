"""Worker sizing from peak users: the benchmark's capacity with the safety margin."""

from __future__ import annotations

import pytest

from stampede.workers.sizing import (
    SAFETY_MARGIN, USERS_PER_WORKER, needed_per_worker, parse_fargate_size, plan_workers, worker_count,
)


def test_a_worker_is_planned_at_the_margin_of_the_measured_capacity():
    assert SAFETY_MARGIN == 0.6
    assert USERS_PER_WORKER == 5000  # two thirds of what one worker process held in `make bench`
    vcpu, memory_mib = needed_per_worker()
    assert vcpu == pytest.approx(5000 / (7500 / 0.254) / 0.6)  # 0.28 vCPU: 5,000 users with head-room
    assert memory_mib == pytest.approx(256 + 5 * 17.8 / 0.6)


@pytest.mark.parametrize(("users", "count"), [
    pytest.param(1, 1, id="tiny"),
    pytest.param(5000, 1, id="one-full-worker"),
    pytest.param(5001, 2, id="just-over"),
    pytest.param(10_000, 2, id="10k"),
    pytest.param(20_000, 4, id="20k-stress"),
])
def test_worker_count_from_peak_users(users, count):
    assert worker_count(users) == count


def test_ecs_plan_picks_the_smallest_fargate_size_that_fits():
    plan = plan_workers(10_000, provider="ecs")
    assert (plan.count, plan.vcpu, plan.memory_gib, plan.size) == (2, 0.5, 1, "fargate-0.5vcpu-1gb")
    assert plan.users_per_worker == 5000


def test_fewer_workers_than_derived_get_bigger_tasks():
    plan = plan_workers(20_000, provider="ecs", count=2)
    assert plan.users_per_worker == 10_000
    assert (plan.vcpu, plan.memory_gib) == (1, 2)


def test_explicit_overrides_win():
    plan = plan_workers(20_000, provider="ec2", count=3, size="c7i.xlarge", spot=True)
    assert (plan.count, plan.size, plan.vcpu, plan.memory_gib, plan.spot) == (3, "c7i.xlarge", 4, 8, True)
    assert plan_workers(100, provider="ecs", size="fargate-1vcpu-2gb").size == "fargate-1vcpu-2gb"


@pytest.mark.parametrize("bad", ["fargate-3vcpu-1gb", "m5.large", "nonsense"])
def test_bad_sizes_are_refused_with_a_fix(bad):
    with pytest.raises(ValueError, match="fix:"):
        parse_fargate_size(bad) if bad.startswith("fargate") or bad == "nonsense" else plan_workers(
            10, provider="ec2", size=bad)
