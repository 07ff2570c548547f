"""moto's server as a stand-in for AWS: on a free loopback port, with the workers stack deployed.

Used by the tests (and for trying the cloud providers without an AWS account):
the real CloudFormation template ``infra/aws/workers.cfn.yaml`` is deployed into
moto, and :meth:`MotoStandin.env` gives the environment that points boto3 and
Stampede's providers at it. moto's tasks and instances run no code, so the load
itself comes from local stand-in workers (``STAMPEDE_CLOUD_WORKERS_STANDIN=local``).

    with MotoStandin() as aws:
        os.environ.update(aws.deploy_workers_stack())
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "aws" / "workers.cfn.yaml"
REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
}


class MotoStandin:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1 and a port the kernel picks."""

    def __init__(self) -> None:
        self._server = None
        self.endpoint_url = ""

    def __enter__(self) -> MotoStandin:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.stop()

    def env(self) -> dict[str, str]:
        """Fake credentials, the region, the endpoint; no instance metadata lookups."""
        return FAKE_CREDENTIALS | {
            "AWS_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": REGION, "STAMPEDE_AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }

    def _post(self, path: str, payload: dict | None = None) -> None:
        request = urllib.request.Request(
            f"{self.endpoint_url}{path}", data=json.dumps(payload or {}).encode(), method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            response.read()

    def reset(self) -> None:
        """Forget every resource, then keep ECS tasks RUNNING until stopped (as a live worker would be).

        By default moto moves a task one status further on each DescribeTasks, so a
        task would seem to stop by itself after a few looks.
        """
        self._post("/moto-api/reset")
        self.keep_tasks_running()

    def keep_tasks_running(self) -> None:
        self._post("/moto-api/state-manager/set-transition", {
            "model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000},
        })

    def deploy_workers_stack(self, *, standin: bool = True) -> dict[str, str]:
        """Deploy infra/aws/workers.cfn.yaml into moto; return the STAMPEDE_* settings from its outputs."""
        import boto3

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION,
        )
        client = lambda name: session.client(name, endpoint_url=self.endpoint_url)  # noqa: E731
        ec2 = client("ec2")
        vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
        ami = ec2.register_image(Name="stampede-worker-test", RootDeviceName="/dev/xvda")["ImageId"]
        client("ssm").put_parameter(Name="/stampede/test/worker-ami", Value=ami, Type="String", Overwrite=True)
        secret = client("secretsmanager").create_secret(Name="stampede/target-password", SecretString="not-used")["ARN"]
        cloudformation = client("cloudformation")
        cloudformation.create_stack(
            StackName="stampede-workers", TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in {
                "VpcId": vpc, "WorkerImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/stampede-worker:test",
                "EcrRepositoryArn": "arn:aws:ecr:us-east-1:123456789012:repository/stampede-worker",
                "TargetPasswordSecretArn": secret, "WorkerAmi": "/stampede/test/worker-ami",
            }.items()],
        )
        stack = cloudformation.describe_stacks(StackName="stampede-workers")["Stacks"][0]
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise RuntimeError(f"workers stack: {stack['StackStatus']} {stack.get('StackStatusReason')}")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        env = {
            "STAMPEDE_ECS_CLUSTER": outputs["ClusterName"],
            "STAMPEDE_ECS_TASK_DEFINITION": outputs["TaskDefinition"],
            "STAMPEDE_AWS_SUBNETS": ",".join(subnets[:2]),
            "STAMPEDE_AWS_SECURITY_GROUPS": outputs["SecurityGroupId"],
            "STAMPEDE_EC2_LAUNCH_TEMPLATE": outputs["LaunchTemplateName"],
            "STAMPEDE_WORKER_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/stampede-worker:test",
            "STAMPEDE_TARGET_PASSWORD_SECRET_ARN": secret,
            "STAMPEDE_WORKER_READY_TIMEOUT_S": "20",
            "STAMPEDE_WORKER_TEARDOWN_TIMEOUT_S": "20",
        }
        if standin:
            env["STAMPEDE_CLOUD_WORKERS_STANDIN"] = "local"
        return env
