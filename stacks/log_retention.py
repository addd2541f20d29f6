"""Retention for the log groups AWS services create on the stack's behalf.

The stack's own log groups (Lambdas, API access logs, OpenSearch, VPC flow
logs) are made with `stacks.common.log_group`. Some services write to groups
of their own naming, which would otherwise be created on first use with no
expiry and outlive the stack:

- SageMaker endpoint logs, `/aws/sagemaker/Endpoints/<endpoint>`: created here,
  before the endpoint;
- API Gateway execution logs, `API-Gateway-Execution-Logs_<api id>/<stage>`:
  created here, before the stage that writes them;
- Lambdas that CDK adds itself (bucket notifications, auto-delete of objects,
  the default security group's restriction, this module's retention setter):
  an aspect points each at one stack log group through `LoggingConfig`, so
  none of them creates `/aws/lambda/<name>`;
- account-wide groups the deployment causes: `/aws/sagemaker/TransformJobs`
  (the bootstrap's batch transform) and `/aws/apigateway/welcome` (written when
  the account's API Gateway logging role is set). Other stacks may share them,
  so they are not created or deleted here; a retention custom resource
  (`logs.LogRetention`) sets the profile's retention, creating them if absent.

tests/test_stacks.py lists every resource type of the template and the log
groups each causes, so a new component without retention fails a test.
"""

from __future__ import annotations

import jsii
from aws_cdk import Aspects, CfnResource, IAspect, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct

from stacks.common import log_group, retention
from stacks.config import DeploymentConfig
from stacks.model_endpoint import ModelEndpoint
from stacks.nag import acknowledge
from stacks.query_api import STAGE_NAME, QueryApi

# Account-wide groups the deployment causes AWS to write (see the module docstring).
SHARED_LOG_GROUPS = ("/aws/sagemaker/TransformJobs", "/aws/apigateway/welcome")


@jsii.implements(IAspect)
class _LogToGroup:
    """Points every Lambda without a log group of its own at `group` (LoggingConfig)."""

    def __init__(self, group: logs.ILogGroup) -> None:
        self.group = group

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, lambda_.CfnFunction):
            if node.logging_config is None:
                node.logging_config = lambda_.CfnFunction.LoggingConfigProperty(
                    log_group=self.group.log_group_name)
        elif isinstance(node, CfnResource) and node.cfn_resource_type == "AWS::Lambda::Function":
            # CDK's custom-resource providers are plain CfnResources with no logging props.
            node.add_property_override("LoggingConfig.LogGroup", self.group.log_group_name)


class ServiceLogRetention(Construct):
    """The log groups described in the module docstring, each with the profile's retention."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig,
                 model: ModelEndpoint, api: QueryApi) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.helper_logs = log_group(self, "HelperFunctionLogs", config)
        # An aspect, so Lambdas added after this construct (or by CDK at synth) are seen.
        Aspects.of(stack).add(_LogToGroup(self.helper_logs))

        self.endpoint_logs = log_group(self, "EndpointLogs", config,
                                       name=f"/aws/sagemaker/Endpoints/{config.endpoint_name}")
        model.endpoint.node.add_dependency(self.endpoint_logs)

        self.execution_logs = log_group(
            self, "ApiExecutionLogs", config,
            name=f"API-Gateway-Execution-Logs_{api.api.rest_api_id}/{STAGE_NAME}")
        api.api.deployment_stage.node.add_dependency(self.execution_logs)

        self.shared = [
            logs.LogRetention(self, f"Retention{index}", log_group_name=name,
                              retention=retention(config.log_retention_days))
            for index, name in enumerate(SHARED_LOG_GROUPS)
        ]
        provider = stack.node.try_find_child("LogRetentionaae0aa3c5b4d4f87b02d85b201efdd8a")
        if provider is not None:
            acknowledge(
                provider, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                "service-role/AWSLambdaBasicExecutionRole]",
                "CDK's own retention setter; the AWS policy only lets it write its logs.")
            acknowledge(
                provider, "AwsSolutions-IAM5[Resource::*]",
                "CDK's retention setter needs logs:PutRetentionPolicy on groups that other "
                "stacks may share and that it does not own; it changes only their retention.")
