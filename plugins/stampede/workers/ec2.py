"""EC2 workers: one instance per worker (on-demand or spot), from a launch template or an AMI.

The instance's user data installs Docker if needed, runs the worker image with
the agent as its command, and shuts the instance down when the agent ends (at
its expiry at the latest); the instances start with
``InstanceInitiatedShutdownBehavior=terminate``, so a shut-down worker is gone. A
``shutdown`` timer set at boot is the backstop should the agent hang.
"""

from __future__ import annotations

import logging
import shlex

from stampede.hooks.aws import aws_tags
from stampede.workers.cloud import TAG_RUN_ID, CloudWorkers

log = logging.getLogger(__name__)

_STATES = {
    "pending": "starting", "running": "running", "stopping": "stopping", "stopped": "stopped",
    "shutting-down": "stopped", "terminated": "stopped",
}
LIVE_STATES = ["pending", "running", "stopping", "stopped"]  # "stopped" still holds volumes: terminate it too


def user_data(*, command: list[str], image: str, region: str, ttl_s: float, password_secret_arn: str = "") -> str:
    """The boot script: Docker, the image, the agent; then shut down (→ terminate)."""
    ttl_min = max(1, int(ttl_s // 60) + 1)
    lines = [
        "#!/bin/bash",
        "# Stampede load-test worker: runs the worker agent, then shuts the instance down (it terminates).",
        "set -u",
        f"shutdown -h +{ttl_min}  # backstop: gone at its expiry whatever happens",
        "command -v docker >/dev/null || (dnf install -y docker || yum install -y docker)",
        "systemctl start docker",
    ]
    if ".dkr.ecr." in image:
        registry = image.split("/")[0]
        lines.append(
            f"aws ecr get-login-password --region {shlex.quote(region)} | "
            f"docker login --username AWS --password-stdin {shlex.quote(registry)}"
        )
    env = ""
    if password_secret_arn:  # the secret is fetched on the instance; it never appears in the user data
        lines.append(
            "STAMPEDE_TARGET_PASSWORD=$(aws secretsmanager get-secret-value --region "
            f"{shlex.quote(region)} --secret-id {shlex.quote(password_secret_arn)} --query SecretString --output text)"
        )
        lines.append("export STAMPEDE_TARGET_PASSWORD")
        env = "-e STAMPEDE_TARGET_PASSWORD "
    lines.append(
        f"docker run --rm --network host {env}{shlex.quote(image)} " + " ".join(shlex.quote(c) for c in command)
    )
    lines.append("shutdown -h now")
    return "\n".join(lines) + "\n"


class Ec2Workers(CloudWorkers):
    """Workers as EC2 instances (``spot``: one-time spot requests that terminate on interruption)."""

    name = "ec2"

    @property
    def ec2(self):
        return self.hook.client("ec2")

    def _start(self, *, count, command, tags, spot, size, ttl_s) -> list[str]:
        if not (self.config.launch_template or self.config.ami):
            raise ValueError(
                "workers: neither STAMPEDE_EC2_LAUNCH_TEMPLATE nor STAMPEDE_EC2_AMI is set; "
                "fix: the launch template from the workers stack"
            )
        if not self.config.image:
            raise ValueError("workers: STAMPEDE_WORKER_IMAGE is not set; fix: the worker image's URI (see infra/aws)")
        request: dict = {
            "MinCount": count, "MaxCount": count,
            "UserData": user_data(command=command, image=self.config.image, region=self.hook.region_name,
                                  ttl_s=ttl_s, password_secret_arn=self.config.password_secret_arn),
            "InstanceInitiatedShutdownBehavior": "terminate",
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": aws_tags(tags)} for kind in ("instance", "volume")
            ],
        }
        if self.config.launch_template:
            key = "LaunchTemplateId" if self.config.launch_template.startswith("lt-") else "LaunchTemplateName"
            request["LaunchTemplate"] = {key: self.config.launch_template, "Version": "$Latest"}
        else:
            request["ImageId"] = self.config.ami
        if size:
            request["InstanceType"] = size
        if self.config.subnets:
            request["SubnetId"] = self.config.subnets[0]
        if self.config.security_groups:
            request["SecurityGroupIds"] = list(self.config.security_groups)
        if self.config.instance_profile:
            request["IamInstanceProfile"] = {"Name": self.config.instance_profile}
        if spot:
            request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        response = self.ec2.run_instances(**request)
        return [instance["InstanceId"] for instance in response["Instances"]]

    def _instances(self, filters: list[dict] | None = None, ids: list[str] | None = None) -> list[dict]:
        kwargs: dict = {}
        if filters:
            kwargs["Filters"] = filters
        if ids:
            kwargs["InstanceIds"] = ids
        found = []
        for page in self.ec2.get_paginator("describe_instances").paginate(**kwargs):
            for reservation in page["Reservations"]:
                found += reservation["Instances"]
        return found

    def _states(self, handles: list[str]) -> dict[str, str]:
        if not handles:
            return {}
        return {i["InstanceId"]: _STATES.get(i["State"]["Name"], "starting") for i in self._instances(ids=handles)}

    def _stop(self, handles: list[str], reason: str) -> None:
        log.info("Terminating instances (%s): %s", reason, handles)
        self.ec2.terminate_instances(InstanceIds=handles)

    def tagged(self, run_id: str | None = None) -> dict[str, dict[str, str]]:
        filters = [{"Name": "instance-state-name", "Values": LIVE_STATES}]
        filters.append({"Name": f"tag:{TAG_RUN_ID}", "Values": [run_id]} if run_id else
                       {"Name": "tag-key", "Values": [TAG_RUN_ID]})
        return {i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])} for i in self._instances(filters)}

    def _still_running(self, workers) -> list[str]:
        # "stopped" instances still exist (and keep their volumes): they count as left until terminated
        states = {i["InstanceId"]: i["State"]["Name"] for i in self._instances(ids=workers.handles)} \
            if workers.handles else {}
        recorded = [h for h, state in states.items() if state in LIVE_STATES]
        return sorted(set(recorded) | set(self.tagged(workers.run_id)))

    def lifetimes(self, workers, *, stopped_at: float) -> list[float]:
        by_id = {i["InstanceId"]: i for i in self._instances(ids=workers.handles)} if workers.handles else {}
        seconds = []
        for handle in workers.handles:
            launched = by_id.get(handle, {}).get("LaunchTime")
            start = launched.timestamp() if launched is not None else workers.started_at
            seconds.append(max(0.0, stopped_at - start))
        return seconds
