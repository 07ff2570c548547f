"""EC2 workers against moto's server: tags, counts, user data, spot, teardown and the reaper."""

from __future__ import annotations

import base64
import time

import boto3
import pytest

from stampede.workers import reap_expired_workers
from stampede.workers.cloud import TAG_EXPIRES_AT, TAG_RUN_ID, TAG_SCENARIO, parse_iso_utc
from stampede.workers.ec2 import Ec2Workers

pytestmark = pytest.mark.integration

LOCUSTFILES = "/work/elsewhere/plugin.py"


def _running(run_id: str) -> list[dict]:
    pages = boto3.client("ec2").describe_instances(Filters=[
        {"Name": f"tag:{TAG_RUN_ID}", "Values": [run_id]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ])["Reservations"]
    return [i for r in pages for i in r["Instances"]]


def test_provision_starts_tagged_instances_from_the_launch_template_with_the_agent(cloud_only, tmp_path):
    before = time.time()
    workers = Ec2Workers().provision(run_id="scheduled__ec2-1", run_dir=tmp_path, count=2, locustfiles=LOCUSTFILES,
                                     ttl_s=1200, scenario="stress", size="c7i.large")
    instances = _running("scheduled__ec2-1")
    assert sorted(i["InstanceId"] for i in instances) == sorted(workers.handles) and len(instances) == 2
    ec2 = boto3.client("ec2")
    for instance in instances:
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags[TAG_RUN_ID] == "scheduled__ec2-1" and tags[TAG_SCENARIO] == "stress"
        assert before + 1200 - 5 <= parse_iso_utc(tags[TAG_EXPIRES_AT]) <= time.time() + 1200
        assert instance["InstanceType"] == "c7i.large"  # the sizing's type over the template's c6i.large
        assert instance["State"]["Name"] == "running" and "InstanceLifecycle" not in instance
        raw = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
        script = base64.b64decode(raw["UserData"]["Value"]).decode()
        assert script.startswith("#!/bin/bash")
        assert "shutdown -h +21" in script and script.rstrip().endswith("shutdown -h now")
        assert "docker run --rm --network host -e STAMPEDE_TARGET_PASSWORD " in script
        assert "python -m stampede.workers.agent --master-host 10.0.1.20 --master-port 5557" in script
        assert f"--locustfiles {LOCUSTFILES} --expires-at {int(workers.expires_at)}" in script
        assert "secretsmanager get-secret-value" in script and "not-used" not in script  # no secret in user data
        shutdown = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"],
                                                   Attribute="instanceInitiatedShutdownBehavior")
        assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    assert Ec2Workers().teardown(workers) == []
    assert _running("scheduled__ec2-1") == []


def test_spot_instances(cloud_only, tmp_path):
    workers = Ec2Workers().provision(run_id="ec2-spot", run_dir=tmp_path, count=1, locustfiles=LOCUSTFILES,
                                     ttl_s=600, spot=True)
    assert [i.get("InstanceLifecycle") for i in _running("ec2-spot")] == ["spot"]
    assert Ec2Workers().teardown(workers) == []


def test_the_reaper_terminates_an_expired_orphan_instance(cloud_only, tmp_path):
    orphan = Ec2Workers().provision(run_id="crashed-scheduler", run_dir=tmp_path / "a", count=1,
                                    locustfiles=LOCUSTFILES, ttl_s=30)
    live = Ec2Workers().provision(run_id="healthy-run", run_dir=tmp_path / "b", count=1,
                                  locustfiles=LOCUSTFILES, ttl_s=3600)
    reaped = reap_expired_workers(now=time.time() + 60)
    assert set(orphan.handles) <= set(reaped) and not set(live.handles) & set(reaped)
    assert _running("crashed-scheduler") == []
    assert len(_running("healthy-run")) == 1
    Ec2Workers().teardown(live)
