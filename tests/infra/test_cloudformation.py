"""The workers' infrastructure as code: cfn-lint passes, and the template keeps its promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

AWS = Path(__file__).resolve().parents[2] / "infra" / "aws"


class _Loader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !GetAtt) as plain values."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else loader.construct_sequence(node)
))


def test_the_template_passes_cfn_lint():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    completed = subprocess.run([str(cfn_lint), str(AWS / "workers.cfn.yaml")], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_template_has_every_piece_and_least_privilege():
    template = yaml.load((AWS / "workers.cfn.yaml").read_text(), Loader=_Loader)
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::ECS::Cluster", "AWS::ECS::TaskDefinition", "AWS::EC2::LaunchTemplate", "AWS::EC2::SecurityGroup",
            "AWS::IAM::Role", "AWS::Logs::LogGroup"} <= kinds
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert not any(a.endswith("*") for a in actions), (name, actions)
                if statement["Resource"] == "*":
                    assert actions == ["ecr:GetAuthorizationToken"], (name, actions)  # cannot be scoped by AWS
    group = template["Resources"]["WorkerSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group  # workers only connect out
    container = template["Resources"]["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert container["Secrets"][0]["Name"] == "STAMPEDE_TARGET_PASSWORD" and "Environment" not in container


def test_the_worker_image_carries_locust_the_load_tests_and_the_agent():
    dockerfile = (AWS / "worker.Dockerfile").read_text()
    assert "requirements.txt" in dockerfile and "COPY loadtests/" in dockerfile and "COPY plugins/" in dockerfile
    assert "stampede.workers.agent" in dockerfile and "docker build -f infra/aws/worker.Dockerfile" in dockerfile
