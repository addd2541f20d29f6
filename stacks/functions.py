"""The one way this project makes a Lambda function.

Both handlers get the same treatment: the newest Python runtime CDK offers,
the configured architecture with wheels bundled for it (no Docker), X-Ray
tracing, Powertools settings, a log group with the profile's retention, and a
role of their own with no managed policies: only logs for their own log
group, plus whatever each component grants explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.bundling import BundleSpec, lambda_code, lambda_requirements, python_version_of
from stacks.common import log_group
from stacks.config import REPO_ROOT, DeploymentConfig
from stacks.nag import acknowledge
from stacks.network import Network

RUNTIME = lambda_.Runtime.PYTHON_3_14
HANDLER = "handler.handler"
METRICS_NAMESPACE = "clipsearch"


def architecture(config: DeploymentConfig) -> lambda_.Architecture:
    return lambda_.Architecture.ARM_64 if config.lambda_architecture == "arm64" \
        else lambda_.Architecture.X86_64


class PythonFunction(Construct):
    """A Lambda for `lambda/<name>/handler.py`, bundled with clipsearch core + the aws group."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig,
                 name: str, description: str, memory_mb: int, timeout_s: int,
                 environment: Mapping[str, str], network: Network | None,
                 reserved_concurrency: int | None = None) -> None:
        super().__init__(scope, construct_id)
        self.log_group = log_group(self, "Logs", config)
        self.role = iam.Role(
            self, "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"clipsearch {name} Lambda",
        )
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[self.log_group.log_group_arn],
        ))
        spec = BundleSpec(
            handler_dir=REPO_ROOT / "lambda" / name,
            requirements=lambda_requirements(),
            architecture=config.lambda_architecture,
            python_version=python_version_of(RUNTIME),
            install_dependencies=config.bundle_dependencies,
        )
        if not (spec.handler_dir / "handler.py").is_file():
            raise FileNotFoundError(f"missing Lambda handler {spec.handler_dir / 'handler.py'}")
        self.function = lambda_.Function(
            self, "Function",
            description=description,
            runtime=RUNTIME,
            architecture=architecture(config),
            handler=HANDLER,
            code=lambda_code(spec),
            memory_size=memory_mb,
            timeout=Duration.seconds(timeout_s),
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved_concurrency,
            environment={
                "POWERTOOLS_SERVICE_NAME": f"clipsearch-{name}",
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "POWERTOOLS_LOG_LEVEL": "INFO",
                **environment,
            },
            vpc=network.vpc if network else None,
            vpc_subnets=network.subnets if network else None,
            security_groups=[network.lambda_security_group] if network else None,
        )
        wildcard_reason = ("X-Ray active tracing needs xray:PutTraceSegments and "
                           "PutTelemetryRecords, which support no resource-level permissions")
        if network is not None:
            # Passing our own role stops CDK from attaching the VPC access policy;
            # without these, Lambda refuses to create the function in the VPC.
            self.role.add_to_policy(iam.PolicyStatement(
                actions=["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
                         "ec2:DescribeSubnets", "ec2:DeleteNetworkInterface",
                         "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"],
                resources=["*"],
            ))
            wildcard_reason += (", and a VPC Lambda's ENI management (ec2:*NetworkInterface) "
                                "cannot be scoped to resources that do not exist yet")
        acknowledge(self.role, "AwsSolutions-IAM5[Resource::*]", wildcard_reason + ".")
        self.function_name = self.function.function_name
