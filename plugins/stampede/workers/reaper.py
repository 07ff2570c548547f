"""The reaper: ends every cloud worker past its ``stampede:expires_at``, whatever run started it.

Workers end themselves at their expiry and every run tears its own down; this
is the net under both (a killed scheduler, a lost teardown). The
``loadtest_reaper`` DAG calls :func:`reap_expired_workers` every hour.
"""

from __future__ import annotations

import logging
import os
import time

from botocore.exceptions import ClientError, NoCredentialsError

from stampede.workers.cloud import TAG_EXPIRES_AT, CloudWorkers, parse_iso_utc

log = logging.getLogger(__name__)


# Any of these says this deployment uses cloud workers; without one the reaper asks AWS nothing
# (so a local-only install never reaches for credentials, instance metadata or AWS itself).
CLOUD_SETTINGS = ("STAMPEDE_ECS_CLUSTER", "STAMPEDE_EC2_LAUNCH_TEMPLATE", "STAMPEDE_EC2_AMI", "STAMPEDE_AWS_REGION",
                  "AWS_ENDPOINT_URL", "AIRFLOW_CONN_AWS_DEFAULT", "STAMPEDE_REAP_CLOUD")


def cloud_configured() -> bool:
    return any(os.environ.get(name) for name in CLOUD_SETTINGS)


def cloud_providers() -> list[CloudWorkers]:
    from stampede.hooks.aws import StampedeAwsHook
    from stampede.workers.ec2 import Ec2Workers
    from stampede.workers.ecs import EcsWorkers

    hook = StampedeAwsHook()
    return [EcsWorkers(hook=hook), Ec2Workers(hook=hook)]


def reap_expired_workers(now: float | None = None, *, providers: list[CloudWorkers] | None = None) -> list[str]:
    """Stop every tagged worker whose expiry has passed; return their handles (task ARNs, instance ids).

    A worker whose ``stampede:expires_at`` is missing or unreadable counts as expired.
    A provider with no AWS credentials, or no worker cluster, is skipped (nothing of it can run).
    """
    now = time.time() if now is None else now
    reaped: list[str] = []
    if providers is None and not cloud_configured():
        log.info("Reaper: no cloud worker configuration (%s); no cloud workers to reap", ", ".join(CLOUD_SETTINGS))
        return reaped
    for provider in cloud_providers() if providers is None else providers:
        try:
            tagged = provider.tagged()
        except NoCredentialsError:
            log.info("Reaper: no AWS credentials; skipping %s workers", provider.name)
            continue
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("ClusterNotFoundException",):
                log.info("Reaper: no %s worker cluster; nothing to reap", provider.name)
                continue
            raise
        expired = sorted(
            handle for handle, tags in tagged.items() if (parse_iso_utc(tags.get(TAG_EXPIRES_AT, "")) or 0) <= now
        )
        if expired:
            log.warning("Reaper: stopping %d expired %s workers: %s", len(expired), provider.name, expired)
            provider._stop(expired, reason="stampede reaper: past stampede:expires_at")
            reaped += expired
    return reaped
