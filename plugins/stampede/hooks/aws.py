"""One hook for AWS: a lazily built boto3 session and cached clients.

Credentials and region come from the Airflow connection ``aws_default`` (through
the Amazon provider's ``AwsBaseHook``) when Stampede runs inside Airflow or an
``AIRFLOW_CONN_AWS_DEFAULT`` is set; otherwise from boto3's default chain
(environment, profile, instance role). ``AWS_ENDPOINT_URL`` (or the connection's
``endpoint_url`` extra) points every client at another endpoint, so moto's
server can stand in for AWS. Nothing here logs a credential.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "aws_default"
DEFAULT_REGION = "us-east-1"


class StampedeAwsHook:
    """Builds boto3 clients for the worker providers, the reaper and the cost check.

    :param aws_conn_id: Airflow connection to read credentials and region from, when Airflow is present.
    :param region_name: Region to use; default: ``STAMPEDE_AWS_REGION``, the connection's, boto3's, then us-east-1.
    """

    def __init__(self, *, aws_conn_id: str | None = DEFAULT_CONN_ID, region_name: str | None = None) -> None:
        self.aws_conn_id = aws_conn_id
        self._region_name = region_name or os.environ.get("STAMPEDE_AWS_REGION") or None
        self._clients: dict[str, Any] = {}
        self._conn_endpoint: str | None = None

    @cached_property
    def session(self) -> boto3.session.Session:
        # boto3 is imported as the session is built: its import (0.25 s) is for runs that call AWS, not for
        # every importer of DEFAULT_REGION (a local run's cost check, the analyse step's estimate)
        import boto3

        session = self._airflow_session()
        if session is None:
            session = boto3.session.Session(region_name=self._region_name)
            log.info("AWS session from boto3's default credential chain (region %s)", session.region_name)
        return session

    @property
    def region_name(self) -> str:
        return self._region_name or self.session.region_name or DEFAULT_REGION

    @property
    def endpoint_url(self) -> str | None:
        self.session  # noqa: B018 - resolves the connection's endpoint too
        return os.environ.get("AWS_ENDPOINT_URL") or self._conn_endpoint

    def client(self, service: str) -> Any:
        """A cached boto3 client for ``service`` in this hook's region and endpoint."""
        if service not in self._clients:
            self._clients[service] = self.session.client(
                service, region_name=self.region_name, endpoint_url=self.endpoint_url,
            )
        return self._clients[service]

    def _airflow_session(self) -> boto3.session.Session | None:
        """The session of the Airflow connection, when Airflow runs us or the connection is set in the env."""
        if not self.aws_conn_id:
            return None
        in_airflow = "airflow.sdk" in sys.modules and bool(os.environ.get("AIRFLOW_CTX_DAG_ID"))
        if not (in_airflow or os.environ.get(f"AIRFLOW_CONN_{self.aws_conn_id.upper()}")):
            return None
        try:
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        except ImportError:
            return None
        hook = AwsBaseHook(aws_conn_id=self.aws_conn_id, region_name=self._region_name)
        config = hook.conn_config
        if not config:  # AwsConnectionWrapper is falsy without a connection
            return None  # no such connection: boto3's default chain, as outside Airflow
        self._conn_endpoint = config.endpoint_url
        self._region_name = self._region_name or config.region_name
        log.info("AWS session from Airflow connection %r (region %s)", self.aws_conn_id, self._region_name)
        return hook.get_session(region_name=self._region_name)


def aws_tags(tags: dict[str, str], *, key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    """``{"a": "b"}`` → ``[{"Key": "a", "Value": "b"}]`` (ECS spells them ``key``/``value``)."""
    return [{key: k, value: v} for k, v in tags.items()]
