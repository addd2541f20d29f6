"""Ingestion: S3 events on images/ and catalog/ -> SQS -> the ingest Lambda.

Why a queue between S3 and the Lambda: uploads arrive in bursts (a bootstrap
writes thousands of objects) while the model endpoint has a fixed
concurrency. The queue absorbs the burst; `ingest_max_concurrency` caps how
many batches hit the endpoint at once; failed records retry on their own
(ReportBatchItemFailures) and a poison message lands in the dead-letter queue
after `max_receive_count` tries instead of blocking the rest.

The visibility timeout is six times the Lambda timeout (AWS guidance for SQS
event sources: room for the function's own retries and batching window
before SQS redelivers a message that is still being processed).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.config import CATALOG_PREFIX, IMAGES_PREFIX, DeploymentConfig
from stacks.functions import PythonFunction
from stacks.nag import acknowledge_wildcard


class IngestionPipeline(Construct):
    """Queue + DLQ, the S3 notifications into them, and the SQS event source of the Lambda."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig,
                 bucket: s3.Bucket, function: PythonFunction) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # The longest SQS allows: time to notice, fix and redrive.
            retention_period=Duration.days(14),
        )
        self.queue = sqs.Queue(
            self, "Queue",
            # SSE-SQS, not KMS: S3 event notifications cannot write to a queue
            # encrypted with the AWS-managed KMS key.
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(config.visibility_timeout_s),
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=config.max_receive_count),
        )
        destination = s3n.SqsDestination(self.queue)
        for prefix in (IMAGES_PREFIX, CATALOG_PREFIX):
            for event in (s3.EventType.OBJECT_CREATED, s3.EventType.OBJECT_REMOVED):
                bucket.add_event_notification(event, destination,
                                              s3.NotificationKeyFilter(prefix=prefix))

        function.function.add_event_source(sources.SqsEventSource(
            self.queue,
            batch_size=config.ingest_batch_size,
            max_batching_window=(Duration.seconds(config.ingest_batching_window_s)
                                 if config.ingest_batching_window_s else None),
            report_batch_item_failures=True,
            max_concurrency=config.ingest_max_concurrency,
        ))
        readable = [bucket.arn_for_objects(f"{p}*") for p in (IMAGES_PREFIX, CATALOG_PREFIX)]
        function.role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                                        resources=readable))
        for arn in readable:
            acknowledge_wildcard(function.role, arn,
                                 "The ingest Lambda reads whatever object an S3 event names "
                                 "under this prefix; keys are unknown until upload.")
