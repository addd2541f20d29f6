"""The CLIP model on SageMaker: model, serverless endpoint config and endpoint.

The container is the Hugging Face PyTorch inference DLC (CPU: serverless
inference has no GPUs). Its URI is built at synth time from facts, with no
network call: the DLC registry account for the region (CDK's region facts,
overridable with `dlc_account`), the region's domain suffix and a tag
(`dlc_image_tag`); `image_uri` replaces the whole thing.

The artifact (`model.tar.gz`, built by `scripts/package_model.py`) comes from
`model_data_url` (an S3 URI) or, failing that, from the local file
`model_artifact`, uploaded as a CDK asset. With neither, synth stops and says
how to build one.

The model's execution role is also the role for the bootstrap's batch
transform (a transform job runs with its model's role), so it may read
`images/` and `transform/` and write `transform/` in the catalog bucket.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from aws_cdk import ArnFormat, FileAssetPackaging, Stack, region_info
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from clipsearch.sagemaker import container
from clipsearch.sagemaker.package import RANDOM_MARKER, sha256_file
from stacks.config import (
    DLC_REPOSITORY,
    IMAGES_PREFIX,
    MODELS_PREFIX,
    REPO_ROOT,
    TRANSFORM_PREFIX,
    ConfigError,
    DeploymentConfig,
)
from stacks.nag import acknowledge, acknowledge_wildcard

ECR_URI = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repository>[a-z0-9._/-]+)[:@].+"
)


class ModelArtifactMissing(ConfigError):
    """No model artifact: neither model_data_url nor the packaged file exists."""


class RandomModelArtifact(ConfigError):
    """The artifact holds random weights (`clipsearch model random`), not a trained model."""


def refuse_random_weights(artifact: Path, allowed: bool) -> None:
    """Stop synth on a random-weight artifact unless `-c allow_random_model=true`.

    Such an artifact serves, and its vectors look like any others, so a
    deployment of it would search meaninglessly without a single error.
    """
    if allowed:
        return
    with tarfile.open(artifact, "r:gz") as tar:
        random = any(member.name.lstrip("./") == RANDOM_MARKER for member in tar)
    if random:
        raise RandomModelArtifact(
            f"{artifact} contains {RANDOM_MARKER}: it was packaged from a model with random "
            "weights (`clipsearch model random`), whose search results are meaningless. "
            "Package a trained model (scripts/package_model.py --model <id or directory>), "
            "or pass -c allow_random_model=true to deploy it anyway (for testing)")


def dlc_image_uri(config: DeploymentConfig) -> str:
    """The Hugging Face PyTorch inference CPU image for the region, from facts only."""
    if config.image_uri:
        return config.image_uri
    facts = region_info.RegionInfo.get(config.region)
    account = config.dlc_account or facts.dlc_repository_account
    if not account:
        raise ConfigError(
            f"no Deep Learning Containers account is known for region {config.region}; "
            "pass -c dlc_account=<12 digits> (see the SageMaker docs 'Docker Registry "
            "Paths') or -c image_uri=<full image URI>"
        )
    suffix = facts.domain_suffix or "amazonaws.com"
    return f"{account}.dkr.ecr.{config.region}.{suffix}/{DLC_REPOSITORY}:{config.dlc_image_tag}"


def _s3_object_arn(stack: Stack, url: str) -> str:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return f"arn:{stack.partition}:s3:::{bucket}/{key}"


class ModelEndpoint(Construct):
    """CfnModel + serverless CfnEndpointConfig + CfnEndpoint, and a least-privilege role."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig,
                 bucket: s3.IBucket) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        image = dlc_image_uri(config)
        match = ECR_URI.fullmatch(image)
        if not match:
            raise ConfigError(f"image_uri must be an ECR image URI; got {image!r}")

        self.role = iam.Role(
            self, "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="clipsearch SageMaker model: pull the DLC image, read the artifact, "
                        "read images and write batch-transform output",
        )
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
                     "ecr:GetDownloadUrlForLayer"],
            resources=[f"arn:{stack.partition}:ecr:{match['region']}:{match['account']}:"
                       f"repository/{match['repository']}"],
        ))
        sagemaker_logs = stack.format_arn(service="logs", resource="log-group",
                                          resource_name="/aws/sagemaker/*",
                                          arn_format=ArnFormat.COLON_RESOURCE_NAME)
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                     "logs:DescribeLogStreams"],
            resources=[sagemaker_logs],
        ))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
        ))
        prefixes = {p: bucket.arn_for_objects(f"{p}*")
                    for p in (IMAGES_PREFIX, MODELS_PREFIX, TRANSFORM_PREFIX)}
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=list(prefixes.values())))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{IMAGES_PREFIX}*",
                                                     f"{TRANSFORM_PREFIX}*"]}},
        ))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:PutObject", "s3:AbortMultipartUpload"],
            resources=[prefixes[TRANSFORM_PREFIX]],
        ))
        acknowledge(self.role, "AwsSolutions-IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken has no resource-level permissions; image "
                    "pulls themselves are limited to the one DLC repository.")
        acknowledge_wildcard(self.role, sagemaker_logs,
                             "SageMaker names endpoint and transform-job log groups itself, "
                             "under /aws/sagemaker/; the role can write nowhere else.")
        for prefix, arn in prefixes.items():
            acknowledge_wildcard(self.role, arn,
                                 f"Objects under {prefix} are created at run time, so access is "
                                 "scoped to the prefix of the one catalog bucket.")

        model_data_url = self._artifact(config, stack)

        self.model = sagemaker.CfnModel(
            self, "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image,
                model_data_url=model_data_url,
                mode="SingleModel",
                # The same environment the container-parity test serves with.
                environment={
                    **container.MODEL_ENVIRONMENT,
                    "SAGEMAKER_REGION": config.region,
                    "CLIPSEARCH_MODEL": config.model_name,
                },
            ),
        )
        # The model must not start before its role can pull the image and artifact.
        self.model.node.add_dependency(self.role)

        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self, "EndpointConfig",
            production_variants=[sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name="AllTraffic",
                model_name=self.model.attr_model_name,
                serverless_config=sagemaker.CfnEndpointConfig.ServerlessConfigProperty(
                    memory_size_in_mb=config.serverless_memory_mb,
                    max_concurrency=config.serverless_max_concurrency,
                    provisioned_concurrency=config.serverless_provisioned_concurrency,
                ),
            )],
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self, "Endpoint",
            endpoint_name=config.endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
        )
        self.endpoint_name = config.endpoint_name
        # Ref of AWS::SageMaker::Endpoint is its ARN.
        self.endpoint_arn = self.endpoint.ref
        self.model_name = self.model.attr_model_name

    def _artifact(self, config: DeploymentConfig, stack: Stack) -> str:
        """The artifact's S3 URI, granting the role read on exactly that object."""
        if config.model_data_url:
            self.role.add_to_policy(iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[_s3_object_arn(stack, config.model_data_url)]))
            return config.model_data_url
        path = Path(config.model_artifact)
        if not path.is_absolute():
            path = REPO_ROOT / path
        if not path.is_file():
            raise ModelArtifactMissing(
                f"no model artifact: {path} does not exist and model_data_url is not set.\n"
                "Build one with\n"
                "  .venv/bin/python scripts/package_model.py "
                f"--model {config.model_name} --output {config.model_artifact}\n"
                "or point at an uploaded one with -c model_data_url=s3://BUCKET/KEY/model.tar.gz"
            )
        refuse_random_weights(path, config.allow_random_model)
        # SageMaker documents ModelDataUrl as a .tar.gz; CDK names a file asset
        # <source hash><last extension>, which would drop ".tar". The source
        # hash is ours to give (the content's sha256), so ".tar" goes on it.
        location = stack.synthesizer.add_file_asset(
            file_name=str(path),
            packaging=FileAssetPackaging.FILE,
            source_hash=f"{sha256_file(path)}.tar",
        )
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:GetObject"],
            resources=[stack.format_arn(service="s3", region="", account="",
                                        resource=location.bucket_name,
                                        resource_name=location.object_key)]))
        return location.s3_object_url

