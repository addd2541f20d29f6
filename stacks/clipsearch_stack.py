"""The whole system in one stack, wired from one construct per component.

One stack rather than several: the bootstrap script and users read every
output from a single `describe_stacks`, and there are no cross-stack exports
to lock resources in place. Components are still separate constructs
(`Network`, `Storage`, `SearchDomain`, `ModelEndpoint`, `IngestionPipeline`,
`QueryApi`, `Monitoring`, `Web`), each in its own module under stacks/.

The outputs below are an interface (scripts/bootstrap.py and the docs read
them): their names are stable and tested.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Environment, Stack, Tags
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.config import (
    CATALOG_PREFIX,
    ENV_BUCKET,
    ENV_CATALOG_PREFIX,
    ENV_CORS_ORIGINS,
    ENV_ENDPOINT,
    ENV_IMAGE_URL_TTL,
    ENV_IMAGES_PREFIX,
    ENV_INDEX_ALIAS,
    ENV_INDEX_REPLICAS,
    ENV_MODEL,
    ENV_OPENSEARCH_URL,
    IMAGES_PREFIX,
    DeploymentConfig,
)
from stacks.functions import PythonFunction
from stacks.ingestion import IngestionPipeline
from stacks.log_retention import ServiceLogRetention
from stacks.model_endpoint import ModelEndpoint
from stacks.monitoring import Monitoring
from stacks.nag import acknowledge, acknowledge_wildcard
from stacks.network import Network
from stacks.query_api import QueryApi
from stacks.search_domain import SearchDomain
from stacks.storage import Storage
from stacks.web import Web

# CDK's singleton Lambda that applies S3 bucket notifications.
_NOTIFICATIONS_HANDLER = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"

# Output name -> what it is. Names are part of the bootstrap's interface.
OUTPUTS = {
    "ApiUrl": "Base URL of the query API (stage included)",
    "ApiKeyId": "Id of the API key; get its value with aws apigateway get-api-key "
                "--api-key ID --include-value",
    "BucketName": "Catalog bucket (images/, catalog/, models/, transform/)",
    "DomainEndpoint": "OpenSearch domain endpoint (host name)",
    "OpenSearchUrl": "OpenSearch domain URL (https://host)",
    "DomainArn": "OpenSearch domain ARN",
    "SageMakerEndpointName": "SageMaker serverless endpoint name",
    "ModelName": "SageMaker model name (for batch transform)",
    "TransformRoleArn": "Execution role of the model, used by batch transform jobs",
    "IndexAlias": "OpenSearch index alias the Lambdas query",
    "IndexReplicas": "Replicas of every index the system creates (follows the data nodes)",
    "IngestQueueUrl": "Ingestion queue URL",
    "DeadLetterQueueUrl": "Ingestion dead-letter queue URL",
    "AlarmTopicArn": "SNS topic all alarms notify",
    "Region": "Region of the deployment",
    "WebUrl": "The search page (CloudFront); absent with -c web=false",
}
# Outputs that exist only when their component is on.
OPTIONAL_OUTPUTS = {"WebUrl"}


class ClipsearchStack(Stack):
    """Storage, search domain, model endpoint, ingestion, query API and monitoring."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(
            scope, construct_id,
            stack_name=config.stack_name,
            env=Environment(account=config.account, region=config.region),
            description=f"clipsearch multimodal product search ({config.profile})",
            termination_protection=config.is_prod,
        )
        self.config = config
        Tags.of(self).add("project", "clipsearch")
        Tags.of(self).add("profile", config.profile)

        self.network = Network(self, "Network", config=config) if config.vpc_enabled else None
        self.storage = Storage(self, "Storage", config=config)
        bucket = self.storage.bucket
        self.model = ModelEndpoint(self, "Model", config=config, bucket=bucket)

        common_env = {
            ENV_BUCKET: bucket.bucket_name,
            ENV_ENDPOINT: self.model.endpoint_name,
            ENV_INDEX_ALIAS: config.index_alias,
            ENV_INDEX_REPLICAS: str(config.index_replicas),
            ENV_MODEL: config.model_name,
            ENV_IMAGES_PREFIX: IMAGES_PREFIX,
            ENV_CATALOG_PREFIX: CATALOG_PREFIX,
        }
        self.query_function = PythonFunction(
            self, "QueryFunction", config=config, name="query",
            description="clipsearch query API handler",
            memory_mb=config.query_memory_mb, timeout_s=config.query_timeout_s,
            environment={**common_env, ENV_IMAGE_URL_TTL: str(config.image_url_ttl_s),
                         ENV_CORS_ORIGINS: ",".join(config.cors_allow_origins)},
            network=self.network, reserved_concurrency=config.query_reserved_concurrency,
        )
        self.ingest_function = PythonFunction(
            self, "IngestFunction", config=config, name="ingest",
            description="clipsearch ingestion: S3 events from SQS to the index",
            memory_mb=config.ingest_memory_mb, timeout_s=config.ingest_timeout_s,
            environment=common_env, network=self.network,
        )
        query_role, ingest_role = self.query_function.role, self.ingest_function.role

        self.domain = SearchDomain(self, "Search", config=config, readers=[query_role],
                                   writers=[ingest_role], network=self.network)
        self.domain.grant(query_role, write=False)
        self.domain.grant(ingest_role, write=True)
        for fn in (self.query_function, self.ingest_function):
            fn.function.add_environment(ENV_OPENSEARCH_URL, self.domain.url)
            fn.role.add_to_policy(iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpoint"], resources=[self.model.endpoint_arn]))
        # Presigned image URLs are signed with the query role, and image_s3_key
        # queries read the object: images only, never the catalog or models.
        images = bucket.arn_for_objects(f"{IMAGES_PREFIX}*")
        query_role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                                     resources=[images]))
        acknowledge_wildcard(query_role, images,
                             "The query Lambda presigns and reads product images, whose keys "
                             "come from the catalog at run time; images/ only.")

        self.ingestion = IngestionPipeline(self, "Ingestion", config=config, bucket=bucket,
                                           function=self.ingest_function)
        self.api = QueryApi(self, "Api", config=config, function=self.query_function)
        self.log_retention = ServiceLogRetention(self, "ServiceLogs", config=config,
                                                 model=self.model, api=self.api)
        self.monitoring = Monitoring(
            self, "Monitoring", config=config, ingestion=self.ingestion,
            ingest_function=self.ingest_function, query_function=self.query_function,
            api=self.api, model=self.model, domain=self.domain)
        self.web = (Web(self, "Web", config=config, api=self.api,
                        access_log_bucket=self.storage.log_bucket) if config.web else None)

        self._acknowledge(config)
        self._outputs()

    def _outputs(self) -> None:
        values = {
            "ApiUrl": self.api.url,
            "ApiKeyId": self.api.api_key.key_id,
            "BucketName": self.storage.bucket.bucket_name,
            "DomainEndpoint": self.domain.endpoint,
            "OpenSearchUrl": self.domain.url,
            "DomainArn": self.domain.domain.attr_arn,
            "SageMakerEndpointName": self.model.endpoint.attr_endpoint_name,
            "ModelName": self.model.model_name,
            "TransformRoleArn": self.model.role.role_arn,
            "IndexAlias": self.config.index_alias,
            "IndexReplicas": str(self.config.index_replicas),
            "IngestQueueUrl": self.ingestion.queue.queue_url,
            "DeadLetterQueueUrl": self.ingestion.dead_letter_queue.queue_url,
            "AlarmTopicArn": self.monitoring.topic.topic_arn,
            "Region": self.region,
        }
        if self.web is not None:
            values["WebUrl"] = self.web.url
        assert set(OUTPUTS) - OPTIONAL_OUTPUTS <= set(values) <= set(OUTPUTS), \
            "OUTPUTS and the values must list the same names"
        for name, value in values.items():
            CfnOutput(self, name, value=value, description=OUTPUTS[name])

    def _acknowledge(self, config: DeploymentConfig) -> None:
        """Findings on resources this project chose to accept, each with its reason."""
        acknowledge(self.storage.log_bucket, "AwsSolutions-S1",
                    "This is the access-log target bucket; logging its own access would "
                    "recurse. It blocks public access, enforces TLS and expires objects.")
        if not config.vpc_enabled:
            acknowledge(self.domain, "AwsSolutions-OS1",
                        "VPC placement is off in this profile (vpc_enabled=false) so the "
                        "bootstrap can reach the domain; access is IAM-signed requests from "
                        "the named roles only.")
        if config.domain_master_count == 0:
            acknowledge(self.domain, "AwsSolutions-OS4",
                        "Dedicated master nodes are off in this profile to keep a single-node "
                        "dev domain cheap; prod enables three.")
        if config.domain_az_count == 1:
            acknowledge(self.domain, "AwsSolutions-OS7",
                        "Zone awareness is off in this profile (one data node); prod spreads "
                        "three nodes over three AZs.")
        handler = self.node.try_find_child(_NOTIFICATIONS_HANDLER)
        if handler is not None:
            acknowledge(
                handler, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                "service-role/AWSLambdaBasicExecutionRole]",
                "CDK's own singleton that configures S3 bucket notifications at deploy time; "
                "it only needs to write its logs, which is what this AWS policy allows.")
        acknowledge(self.model, "AwsSolutions-SM1",
                    "SageMaker serverless inference does not support VPC configuration; the "
                    "model has no inbound network path, only the runtime API.")
        acknowledge(self.model, "AwsSolutions-SM2",
                    "The endpoint-config KMS key encrypts the ML storage volume of instance-"
                    "backed variants; a serverless variant has no such volume to configure, and "
                    "SageMaker encrypts its data at rest with service-managed keys.")
