"""Alarms and a dashboard: the signals that mean shoppers or the catalog are affected.

Every alarm notifies one SNS topic (subscribe with `alarm_email`). The topic
is encrypted with a customer-managed KMS key because CloudWatch cannot
publish to a topic encrypted with the AWS-managed SNS key.

Alarms:
- DLQ depth >= 1: an ingest message failed `max_receive_count` times; the
  catalog is missing something until it is redriven.
- ingest and query Lambda errors (unhandled exceptions, timeouts);
- API 5XX and p99 latency;
- SageMaker endpoint invocation errors (model or container failures);
- OpenSearch cluster status red and low free storage.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks.common import removal_policy
from stacks.config import DeploymentConfig
from stacks.functions import PythonFunction
from stacks.ingestion import IngestionPipeline
from stacks.model_endpoint import ModelEndpoint
from stacks.query_api import QueryApi
from stacks.search_domain import SearchDomain

FIVE_MINUTES = Duration.minutes(5)


class Monitoring(Construct):
    """SNS topic, the alarms listed in the module docstring, and a dashboard."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig,
                 ingestion: IngestionPipeline, ingest_function: PythonFunction,
                 query_function: PythonFunction,
                 api: QueryApi, model: ModelEndpoint, domain: SearchDomain) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        key = kms.Key(self, "TopicKey", enable_key_rotation=True,
                      description="clipsearch alarm topic",
                      removal_policy=removal_policy(config),
                      pending_window=Duration.days(7))
        key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"),
                  "kms:Decrypt", "kms:GenerateDataKey*")
        self.topic = sns.Topic(self, "AlarmTopic", master_key=key, enforce_ssl=True,
                               display_name="clipsearch alarms")
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        action = actions.SnsAction(self.topic)

        fn_ingest = ingest_function.function
        fn_query = query_function.function
        domain_dims = {"DomainName": domain.domain_name, "ClientId": stack.account}

        def metric(namespace: str, name: str, dims: dict[str, str], statistic: str = "Sum",
                   period: Duration = FIVE_MINUTES) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=namespace, metric_name=name,
                                     dimensions_map=dims, statistic=statistic, period=period)

        specs: list[tuple[str, str, cloudwatch.IMetric, float, int]] = [
            ("DeadLetterQueueDepth",
             "Ingest messages are in the dead-letter queue: the catalog is missing updates. "
             "Fix the cause, then redrive the DLQ.",
             ingestion.dead_letter_queue.metric_approximate_number_of_messages_visible(
                 period=Duration.minutes(1), statistic="Maximum"), 1, 1),
            ("IngestErrors", "The ingest Lambda failed (exceptions or timeouts).",
             fn_ingest.metric_errors(period=FIVE_MINUTES), 1, 1),
            ("QueryErrors", "The query Lambda failed (exceptions or timeouts).",
             fn_query.metric_errors(period=FIVE_MINUTES), 5, 1),
            ("Api5xx", "The query API returned 5XX responses.",
             api.api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"), 5, 1),
            ("ApiLatencyP99", "The query API p99 latency is above the target.",
             api.api.metric_latency(period=FIVE_MINUTES, statistic="p99"),
             config.api_latency_alarm_ms, 3),
            ("EndpointErrors", "The SageMaker endpoint returned invocation errors.",
             metric("AWS/SageMaker", "Invocation5XXErrors",
                    {"EndpointName": model.endpoint_name, "VariantName": "AllTraffic"}), 5, 1),
            ("DomainClusterRed", "The OpenSearch cluster status is red: some shards are "
             "unassigned and searches may miss products.",
             metric("AWS/ES", "ClusterStatus.red", domain_dims, "Maximum",
                    Duration.minutes(1)), 1, 1),
        ]
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for name, description, alarm_metric, threshold, periods in specs:
            alarm = cloudwatch.Alarm(
                self, name,
                alarm_description=description,
                metric=alarm_metric,
                threshold=threshold,
                evaluation_periods=periods,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            self.alarms[name] = alarm

        # FreeStorageSpace is in MB per node; alert below a quarter of one node's volume.
        low_storage = cloudwatch.Alarm(
            self, "DomainLowStorage",
            alarm_description="An OpenSearch node has less than 25% of its volume free.",
            metric=metric("AWS/ES", "FreeStorageSpace", domain_dims, "Minimum"),
            threshold=config.domain_volume_gb * 1024 * 0.25,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        low_storage.add_alarm_action(action)
        self.alarms["DomainLowStorage"] = low_storage

        dashboard = cloudwatch.Dashboard(self, "Dashboard",
                                         dashboard_name=f"{config.stack_name}-clipsearch")
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(alarms=list(self.alarms.values()), width=24,
                                         title="clipsearch alarms"),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="API requests and errors", width=12, left=[
                api.api.metric_count(period=FIVE_MINUTES),
                api.api.metric_client_error(period=FIVE_MINUTES),
                api.api.metric_server_error(period=FIVE_MINUTES)]),
            cloudwatch.GraphWidget(title="API latency (p50, p99)", width=12, left=[
                api.api.metric_latency(period=FIVE_MINUTES, statistic="p50"),
                api.api.metric_latency(period=FIVE_MINUTES, statistic="p99")]),
            cloudwatch.GraphWidget(title="Ingest queue", width=12, left=[
                ingestion.queue.metric_approximate_number_of_messages_visible(),
                ingestion.queue.metric_approximate_age_of_oldest_message(),
                ingestion.dead_letter_queue.metric_approximate_number_of_messages_visible()]),
            cloudwatch.GraphWidget(title="Endpoint invocations", width=12, left=[
                metric("AWS/SageMaker", "Invocations",
                       {"EndpointName": model.endpoint_name, "VariantName": "AllTraffic"}),
                metric("AWS/SageMaker", "ModelLatency",
                       {"EndpointName": model.endpoint_name, "VariantName": "AllTraffic"},
                       "p99")]),
        )
