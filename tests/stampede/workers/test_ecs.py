"""ECS Fargate workers against moto's server: real boto3 calls, the stack deployed from infra/aws."""

from __future__ import annotations

import time

import boto3
import pytest

from stampede.workers import provider_for, reap_expired_workers
from stampede.workers.cloud import TAG_EXPIRES_AT, TAG_RUN_ID, TAG_SCENARIO, WorkersNotReady, parse_iso_utc
from stampede.workers.ecs import EcsWorkers

pytestmark = pytest.mark.integration

LOCUSTFILES = "/work/elsewhere/plugin.py"


def _ecs():
    return boto3.client("ecs")  # region, endpoint and fake credentials from the fixture's environment


def _tasks(cluster: str, run_id: str | None = None, status: str = "RUNNING") -> list[dict]:
    arns = _ecs().list_tasks(cluster=cluster, desiredStatus=status)["taskArns"]
    tasks = _ecs().describe_tasks(cluster=cluster, tasks=arns, include=["TAGS"])["tasks"] if arns else []
    return [t for t in tasks if t["lastStatus"] != "STOPPED"
            and (run_id is None or {"key": TAG_RUN_ID, "value": run_id} in t.get("tags", []))]


def test_provision_starts_tagged_fargate_tasks_running_the_agent(cloud_only, tmp_path, monkeypatch):
    provider = provider_for("ecs")
    before = time.time()
    workers = provider.provision(run_id="manual__ecs-1", run_dir=tmp_path, count=3, locustfiles=LOCUSTFILES,
                                 ttl_s=900, scenario="peak", size="fargate-0.5vcpu-1gb")

    assert workers.provider == "ecs" and workers.count == 3 and len(workers.handles) == 3
    assert (workers.master_host, workers.master_port) == ("10.0.1.20", 5557)
    tasks = _tasks("stampede-workers", "manual__ecs-1")
    assert sorted(t["taskArn"] for t in tasks) == sorted(workers.handles)
    for task in tasks:
        tags = {t["key"]: t["value"] for t in task["tags"]}
        assert tags[TAG_RUN_ID] == "manual__ecs-1" and tags[TAG_SCENARIO] == "peak"
        assert before + 900 - 5 <= parse_iso_utc(tags[TAG_EXPIRES_AT]) <= time.time() + 900
        assert task["launchType"] == "FARGATE" and task["lastStatus"] == "RUNNING"
        assert task["overrides"]["cpu"] == "512" and task["overrides"]["memory"] == "1024"
        command = task["overrides"]["containerOverrides"][0]["command"]
        assert command[:3] == ["python", "-m", "stampede.workers.agent"]
        assert command[command.index("--master-host") + 1] == "10.0.1.20"
        assert command[command.index("--master-port") + 1] == "5557"
        assert command[command.index("--locustfiles") + 1] == LOCUSTFILES
        assert int(command[command.index("--expires-at") + 1]) == int(workers.expires_at)
    assert (tmp_path / "workers.json").exists()

    assert provider.teardown(workers) == []
    assert _tasks("stampede-workers", "manual__ecs-1") == []


def test_spot_uses_the_fargate_spot_capacity_provider(cloud_only, tmp_path):
    workers = EcsWorkers().provision(run_id="spot-1", run_dir=tmp_path, count=2, locustfiles=LOCUSTFILES,
                                     ttl_s=600, spot=True)
    assert {t["capacityProviderName"] for t in _tasks("stampede-workers", "spot-1")} == {"FARGATE_SPOT"}
    assert EcsWorkers().teardown(workers) == []


def test_provision_is_idempotent_for_the_same_run(cloud_only, tmp_path):
    first = EcsWorkers().provision(run_id="again-1", run_dir=tmp_path, count=2, locustfiles=LOCUSTFILES, ttl_s=600)
    second = EcsWorkers().provision(run_id="again-1", run_dir=tmp_path, count=2, locustfiles=LOCUSTFILES, ttl_s=600)
    assert second.handles == first.handles
    assert len(_tasks("stampede-workers", "again-1")) == 2
    EcsWorkers().teardown(second)


def test_teardown_stops_everything_tagged_with_the_run_even_if_not_on_record(cloud_only, tmp_path):
    workers = EcsWorkers().provision(run_id="orphan-1", run_dir=tmp_path, count=2, locustfiles=LOCUSTFILES, ttl_s=600)
    lost = EcsWorkers().provision(run_id="orphan-1", run_dir=tmp_path / "other", count=1, locustfiles=LOCUSTFILES,
                                  ttl_s=600)
    assert len(_tasks("stampede-workers", "orphan-1")) == 3
    assert EcsWorkers().teardown(workers) == []  # only 2 on record; the tag finds the third
    assert _tasks("stampede-workers", "orphan-1") == [] and lost.handles


def test_workers_that_stop_while_starting_fail_clearly_and_are_torn_down(cloud_only, tmp_path):
    cloud_only._post("/moto-api/state-manager/set-transition",
                     {"model_name": "ecs::task", "transition": {"progression": "immediate"}})
    with pytest.raises(WorkersNotReady, match="stopped while starting.*torn down"):
        EcsWorkers().provision(run_id="crash-1", run_dir=tmp_path, count=2, locustfiles=LOCUSTFILES, ttl_s=600)
    assert _tasks("stampede-workers", "crash-1") == []


def test_the_reaper_stops_expired_workers_of_any_run_and_spares_live_ones(cloud_only, tmp_path):
    expired = EcsWorkers().provision(run_id="old-run", run_dir=tmp_path / "a", count=2, locustfiles=LOCUSTFILES,
                                     ttl_s=60)
    live = EcsWorkers().provision(run_id="live-run", run_dir=tmp_path / "b", count=1, locustfiles=LOCUSTFILES,
                                  ttl_s=3600)

    reaped = reap_expired_workers(now=time.time() + 120)  # two minutes later: old-run is past its expiry

    assert set(expired.handles) <= set(reaped) and not set(live.handles) & set(reaped)
    assert _tasks("stampede-workers", "old-run") == []
    assert len(_tasks("stampede-workers", "live-run")) == 1
    EcsWorkers().teardown(live)


def test_missing_network_settings_are_refused_with_a_fix(cloud_only, tmp_path, monkeypatch):
    monkeypatch.delenv("STAMPEDE_AWS_SUBNETS")
    with pytest.raises(ValueError, match="STAMPEDE_AWS_SUBNETS.*fix"):
        EcsWorkers().provision(run_id="x", run_dir=tmp_path, count=1, locustfiles=LOCUSTFILES, ttl_s=60)
    monkeypatch.delenv("STAMPEDE_MASTER_HOST")
    with pytest.raises(ValueError, match="STAMPEDE_MASTER_HOST.*fix"):
        EcsWorkers().provision(run_id="x", run_dir=tmp_path, count=1, locustfiles=LOCUSTFILES, ttl_s=60)
