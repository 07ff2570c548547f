"""ECS Fargate workers: one task per worker, on FARGATE or FARGATE_SPOT.

The cluster, task definition (the worker image, its log group and the target
password from Secrets Manager), subnets and security group come from
``infra/aws/workers.cfn.yaml``; a run only overrides the container command (the
agent, with this run's master and expiry) and the task's CPU and memory (the
sizing), and tags every task.
"""

from __future__ import annotations

import logging
from datetime import datetime

from stampede.hooks.aws import aws_tags
from stampede.workers.base import WorkerSet
from stampede.workers.cloud import TAG_RUN_ID, CloudWorkers
from stampede.workers.sizing import parse_fargate_size

log = logging.getLogger(__name__)

RUN_TASK_MAX = 10  # ECS starts at most 10 tasks per call
DESCRIBE_MAX = 100
_STATES = {
    "PROVISIONING": "starting", "PENDING": "starting", "ACTIVATING": "starting", "RUNNING": "running",
    "DEACTIVATING": "stopping", "STOPPING": "stopping", "DEPROVISIONING": "stopping", "STOPPED": "stopped",
    "DELETED": "stopped",
}


class EcsWorkers(CloudWorkers):
    """Workers as ECS Fargate tasks (``spot``: the FARGATE_SPOT capacity provider)."""

    name = "ecs"

    @property
    def ecs(self):
        return self.hook.client("ecs")

    def _start(self, *, count, command, tags, spot, size, ttl_s) -> list[str]:
        if not self.config.subnets:
            raise ValueError("workers: STAMPEDE_AWS_SUBNETS is not set; fix: the subnet ids from the workers stack")
        network = {"awsvpcConfiguration": {
            "subnets": list(self.config.subnets), "securityGroups": list(self.config.security_groups),
            "assignPublicIp": "ENABLED" if self.config.assign_public_ip else "DISABLED",
        }}
        overrides: dict = {"containerOverrides": [{"name": self.config.container, "command": command}]}
        if size:
            cpu, memory = parse_fargate_size(size)
            overrides |= {"cpu": str(int(cpu * 1024)), "memory": str(memory * 1024)}
        placement = (
            {"capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]}
            if spot else {"launchType": "FARGATE"}
        )
        handles: list[str] = []
        while len(handles) < count:
            batch = min(RUN_TASK_MAX, count - len(handles))
            response = self.ecs.run_task(
                cluster=self.config.cluster, taskDefinition=self.config.task_definition, count=batch,
                networkConfiguration=network, overrides=overrides, tags=aws_tags(tags, key="key", value="value"),
                startedBy="stampede", enableECSManagedTags=True, **placement,
            )
            handles += [task["taskArn"] for task in response["tasks"]]
            if response.get("failures"):
                reasons = "; ".join(f"{f.get('arn', '')} {f.get('reason', '')}".strip() for f in response["failures"])
                log.error("ECS could not start every task: %s", reasons)
                break  # the readiness wait reports the shortfall and tears down what started
        return handles

    def _describe(self, handles: list[str]) -> list[dict]:
        tasks: list[dict] = []
        for start in range(0, len(handles), DESCRIBE_MAX):
            chunk = handles[start:start + DESCRIBE_MAX]
            tasks += self.ecs.describe_tasks(cluster=self.config.cluster, tasks=chunk, include=["TAGS"])["tasks"]
        return tasks

    def _states(self, handles: list[str]) -> dict[str, str]:
        if not handles:
            return {}
        return {t["taskArn"]: _STATES.get(t.get("lastStatus", ""), "starting") for t in self._describe(handles)}

    def _stop(self, handles: list[str], reason: str) -> None:
        for arn in handles:
            self.ecs.stop_task(cluster=self.config.cluster, task=arn, reason=reason[:255])

    def tagged(self, run_id: str | None = None) -> dict[str, dict[str, str]]:
        arns: list[str] = []
        paginator = self.ecs.get_paginator("list_tasks")
        for page in paginator.paginate(cluster=self.config.cluster, desiredStatus="RUNNING"):
            arns += page["taskArns"]
        found = {}
        for task in self._describe(arns) if arns else []:
            tags = {t["key"]: t["value"] for t in task.get("tags", [])}
            if TAG_RUN_ID in tags and (run_id is None or tags[TAG_RUN_ID] == run_id) \
                    and task.get("lastStatus") != "STOPPED":
                found[task["taskArn"]] = tags
        return found

    def lifetimes(self, workers: WorkerSet, *, stopped_at: float) -> list[float]:
        """From each task's own ``startedAt``/``stoppedAt`` where ECS reports them, else the recorded times."""
        seconds = []
        by_arn = {t["taskArn"]: t for t in self._describe(workers.handles)} if workers.handles else {}
        for arn in workers.handles:
            task = by_arn.get(arn, {})
            start = _epoch(task.get("startedAt") or task.get("createdAt")) or workers.started_at
            stop = _epoch(task.get("stoppedAt")) or stopped_at
            seconds.append(max(0.0, stop - start))
        return seconds


def _epoch(value) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None
