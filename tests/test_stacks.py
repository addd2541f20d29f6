"""The CDK stack, synthesized for real (dev and prod), checked property by property.

Each profile is synthesized once per test module (about 10 s each) with cdk-nag
attached exactly as `app.py` attaches it, with the dependency install skipped
(`bundle_dependencies=false`: same template, source-only Lambda assets) and a
fake model URI so no artifact is needed. Every security property of issue 5
has its own test that fails when the property is removed from stacks/.

Snapshots: tests/snapshots/<stack>.template.json, with asset hashes and other
volatile values normalised. After an intended change, regenerate them with
`UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_stacks.py -k snapshot`
and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk import App, Stack, Validations
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

from clipsearch.config import MAX_REQUEST_BYTES, MAX_TEXT_CHARS
from clipsearch.page import PAGE_CSP, WEB_DIR, page_files
from stacks.app_factory import build_app
from stacks.clipsearch_stack import OUTPUTS, ClipsearchStack
from stacks.config import (
    ENV_ENDPOINT,
    ENV_INDEX_ALIAS,
    ENV_INDEX_REPLICAS,
    ENV_OPENSEARCH_URL,
    SERVERLESS_MEMORY_CHOICES,
    ConfigError,
    DeploymentConfig,
)
from stacks.functions import RUNTIME
from stacks.nag import MIN_REASON_CHARS, acknowledge, add_checks
from stacks.network import Network
from stacks.search_domain import SearchDomain
from stacks.waf import RATE_RULE
from stacks.web import API_KEY_HEADER, API_PATH, response_headers
from tests.iam_policy import INGEST_FORBIDDEN, QUERY_FORBIDDEN, DomainPermissions, resolve

REPO = Path(__file__).resolve().parent.parent
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
FAKE_MODEL_URL = "s3://example-artifacts/clipsearch/model.tar.gz"
BASE_CONTEXT = {
    "model_data_url": FAKE_MODEL_URL,
    "bundle_dependencies": False,
    "region": "us-east-1",
}
ADMIN_ROLE = "arn:aws:iam::123456789012:role/clipsearch-admin"


@dataclass
class Synth:
    """One synthesized profile: its config, stack object, template and validation report."""

    config: DeploymentConfig
    stack: ClipsearchStack
    template: dict[str, Any]
    assertions: Template
    report: dict[str, Any]
    outdir: Path

    def resources(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == cfn_type}

    def one(self, cfn_type: str) -> tuple[str, dict[str, Any]]:
        found = self.resources(cfn_type)
        assert len(found) == 1, f"expected one {cfn_type}, found {sorted(found)}"
        return next(iter(found.items()))

    def logical_id(self, construct: Any) -> str:
        return self.stack.get_logical_id(construct.node.default_child)

    def logical_id_of(self, cfn_element: Any) -> str:
        """The logical id of an L1 resource (which has no default child)."""
        return self.stack.get_logical_id(cfn_element)


def _synth(profile: str, outdir: Path, **context: Any) -> Synth:
    app, stack = build_app({**BASE_CONTEXT, "profile": profile, **context}, outdir=str(outdir),
                           environ={})
    assembly = app.synth()  # raises if cdk-nag reports an unacknowledged finding
    artifact = assembly.get_stack_artifact(stack.artifact_id)
    template = artifact.template
    report_path = outdir / "validation-report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return Synth(stack.config, stack, template, Template.from_json(template), report, outdir)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return _synth("dev", tmp_path_factory.mktemp("cdk-dev"))


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return _synth("prod", tmp_path_factory.mktemp("cdk-prod"))


@pytest.fixture(scope="module", params=["dev", "prod"])
def synth(request: pytest.FixtureRequest) -> Synth:
    return request.getfixturevalue(request.param)


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _statements(document: Any) -> list[dict[str, Any]]:
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    return statements if isinstance(statements, list) else [statements]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _policy_documents(synth: Synth) -> Iterator[tuple[str, Any]]:
    """Every resource-based policy in the template: bucket, queue, topic, key, domain, logs.

    A Logs resource policy is a JSON string built with Fn::Join, so it is yielded
    as its serialised form and checked as text.
    """
    for logical_id, resource in synth.template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Policy":
            continue
        for key in ("PolicyDocument", "KeyPolicy", "AccessPolicies"):
            if key in props:
                yield logical_id, props[key]


def _role_statements(synth: Synth, role_construct: iam.Role) -> list[dict[str, Any]]:
    role_id = synth.stack.get_logical_id(role_construct.node.default_child)
    statements = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        roles = policy["Properties"].get("Roles", [])
        if {"Ref": role_id} in roles:
            statements += _statements(policy["Properties"]["PolicyDocument"])
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    return _as_list(statement["Action"])


# ----------------------------------------------------------------------------- storage


def _buckets(synth: Synth) -> dict[str, dict[str, Any]]:
    buckets = synth.resources("AWS::S3::Bucket")
    web = synth.stack.web
    expected = {synth.logical_id(b) for b in (
        synth.stack.storage.bucket, synth.stack.storage.log_bucket, web.bucket, web.log_bucket)}
    assert set(buckets) == expected, "catalog, access logs, page and CloudFront logs"
    return buckets


def test_buckets_are_encrypted(synth: Synth) -> None:
    for logical_id, bucket in _buckets(synth).items():
        rules = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        algorithms = {r["ServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules}
        assert algorithms <= {"AES256", "aws:kms"} and algorithms, logical_id


def test_buckets_block_all_public_access(synth: Synth) -> None:
    for logical_id, bucket in _buckets(synth).items():
        assert bucket["Properties"]["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True,
            "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
        }, logical_id


def _denies_insecure_transport(document: dict[str, Any]) -> bool:
    return any(
        s["Effect"] == "Deny"
        and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        for s in _statements(document)
    )


def test_buckets_enforce_ssl(synth: Synth) -> None:
    policies = synth.resources("AWS::S3::BucketPolicy").values()
    protected = {json.dumps(p["Properties"]["Bucket"]) for p in policies
                 if _denies_insecure_transport(p["Properties"]["PolicyDocument"])}
    for logical_id in _buckets(synth):
        assert json.dumps({"Ref": logical_id}) in protected, f"{logical_id} allows plain HTTP"


def test_catalog_bucket_is_versioned_and_logs_to_the_log_bucket(synth: Synth) -> None:
    catalog = synth.template["Resources"][synth.logical_id(synth.stack.storage.bucket)]
    log_id = synth.logical_id(synth.stack.storage.log_bucket)
    assert catalog["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    logging = catalog["Properties"]["LoggingConfiguration"]
    assert logging["DestinationBucketName"] == {"Ref": log_id}
    assert logging["LogFilePrefix"]
    noncurrent = catalog["Properties"]["LifecycleConfiguration"]["Rules"][0]
    assert noncurrent["NoncurrentVersionExpiration"]["NoncurrentDays"] == \
        synth.config.noncurrent_version_expiration_days


def test_access_log_buckets_have_an_expiry_lifecycle_rule(synth: Synth) -> None:
    for bucket in (synth.stack.storage.log_bucket, synth.stack.web.log_bucket):
        log_bucket = synth.template["Resources"][synth.logical_id(bucket)]
        rules = log_bucket["Properties"]["LifecycleConfiguration"]["Rules"]
        assert any(r.get("ExpirationInDays") == synth.config.access_log_expiration_days
                   and r["Status"] == "Enabled" for r in rules)


def test_buckets_other_than_the_log_target_log_their_access(synth: Synth) -> None:
    log_id = synth.logical_id(synth.stack.storage.log_bucket)
    for logical_id, bucket in _buckets(synth).items():
        if logical_id != log_id:
            target = bucket["Properties"]["LoggingConfiguration"]["DestinationBucketName"]
            assert target == {"Ref": log_id}, logical_id


def test_removal_policy_follows_the_profile(dev: Synth, prod: Synth) -> None:
    for synth, expected in ((dev, "Delete"), (prod, "Retain")):
        stateful = [*synth.resources("AWS::S3::Bucket").values(),
                    *synth.resources("AWS::OpenSearchService::Domain").values()]
        assert stateful
        for resource in stateful:
            assert resource["DeletionPolicy"] == expected
            assert resource["UpdateReplacePolicy"] == expected
    # Dev buckets are emptied on delete (or the delete fails); prod data is never touched.
    assert dev.resources("Custom::S3AutoDeleteObjects")
    assert not prod.resources("Custom::S3AutoDeleteObjects")
    assert prod.stack.termination_protection and not dev.stack.termination_protection


# ----------------------------------------------------------------------------- search domain


def _domain(synth: Synth) -> dict[str, Any]:
    return synth.one("AWS::OpenSearchService::Domain")[1]["Properties"]


def test_domain_is_opensearch_2_19(synth: Synth) -> None:
    assert _domain(synth)["EngineVersion"] == "OpenSearch_2.19"


def test_domain_encrypts_at_rest_and_between_nodes(synth: Synth) -> None:
    props = _domain(synth)
    assert props["EncryptionAtRestOptions"] == {"Enabled": True}
    assert props["NodeToNodeEncryptionOptions"] == {"Enabled": True}


def test_domain_enforces_https_and_tls_1_2(synth: Synth) -> None:
    options = _domain(synth)["DomainEndpointOptions"]
    assert options["EnforceHTTPS"] is True
    assert options["TLSSecurityPolicy"].startswith("Policy-Min-TLS-1-2")


def test_domain_access_policy_names_only_the_lambda_roles(synth: Synth) -> None:
    policy = _domain(synth)["AccessPolicies"]
    query = synth.logical_id(synth.stack.query_function.role)
    ingest = synth.logical_id(synth.stack.ingest_function.role)
    principals = set()
    for statement in _statements(policy):
        for principal in _as_list(statement["Principal"]["AWS"]):
            assert principal != "*", "the domain must not allow every principal"
            principals.add(principal["Fn::GetAtt"][0])
        assert all(a.startswith("es:ESHttp") for a in _actions(statement))
        assert "es:ESHttp*" not in _actions(statement), "Lambda grants name their methods"
    assert principals == {query, ingest}


def test_query_role_only_reads_and_ingest_can_neither_move_aliases_nor_drop_indexes(
        synth: Synth) -> None:
    """Both policies of each role, judged IAM-style (tests/iam_policy.py). The requests the
    Lambdas really send are checked against the same policies in tests/test_lambda_e2e.py."""
    permissions = DomainPermissions(synth.template, synth.config.region)
    alias = synth.config.index_alias
    roles = {name: synth.logical_id(getattr(synth.stack, f"{name}_function").role)
             for name in ("query", "ingest")}
    for name, forbidden in (("query", QUERY_FORBIDDEN), ("ingest", INGEST_FORBIDDEN)):
        for method, template in forbidden:
            path = template.format(alias=alias)
            assert permissions.verdict(roles[name], method, path).denied, (name, method, path)
    for name, method, path in (("query", "POST", f"/{alias}/_search"),
                               ("query", "GET", f"/{alias}/_doc/p-1"),
                               ("ingest", "POST", "/_bulk"),
                               ("ingest", "PUT", f"/{alias}-v12")):
        assert permissions.verdict(roles[name], method, path).allowed_by_each, (name, path)


def test_domain_logs_go_to_cloudwatch(synth: Synth) -> None:
    options = _domain(synth)["LogPublishingOptions"]
    assert set(options) == {"SEARCH_SLOW_LOGS", "INDEX_SLOW_LOGS", "ES_APPLICATION_LOGS"}
    for option in options.values():
        assert option["Enabled"] is True
        assert "Fn::GetAtt" in option["CloudWatchLogsLogGroupArn"]
    policy = synth.one("AWS::Logs::ResourcePolicy")[1]["Properties"]["PolicyDocument"]
    assert "es.amazonaws.com" in json.dumps(policy)


def test_domain_sizing_comes_from_the_profile(dev: Synth, prod: Synth) -> None:
    small = _domain(dev)["ClusterConfig"]
    assert small["InstanceType"] == "t3.small.search" and small["InstanceCount"] == 1
    assert small["ZoneAwarenessEnabled"] is False and small["DedicatedMasterEnabled"] is False
    big = _domain(prod)["ClusterConfig"]
    assert big["ZoneAwarenessEnabled"] is True
    assert big["ZoneAwarenessConfig"] == {"AvailabilityZoneCount": 3}
    assert big["DedicatedMasterEnabled"] is True and big["DedicatedMasterCount"] == 3
    assert big["InstanceCount"] == 3


def test_vpc_option(dev: Synth, prod: Synth) -> None:
    assert not dev.resources("AWS::EC2::VPC")
    assert "VPCOptions" not in _domain(dev)
    for fn in dev.resources("AWS::Lambda::Function").values():
        assert "VpcConfig" not in fn["Properties"]

    assert prod.one("AWS::EC2::VPC")
    subnets = prod.resources("AWS::EC2::Subnet")
    assert len(subnets) == 3
    assert not prod.resources("AWS::EC2::InternetGateway")
    assert not prod.resources("AWS::EC2::NatGateway")
    vpc_options = _domain(prod)["VPCOptions"]
    assert len(vpc_options["SubnetIds"]) == 3
    domain_sg = prod.logical_id(prod.stack.network.domain_security_group)
    lambda_sg = prod.logical_id(prod.stack.network.lambda_security_group)
    assert vpc_options["SecurityGroupIds"] == [{"Fn::GetAtt": [domain_sg, "GroupId"]}]
    # The domain accepts HTTPS from the Lambdas' security group and nothing else.
    ingress = [r["Properties"] for r in prod.resources("AWS::EC2::SecurityGroupIngress").values()
               if r["Properties"]["GroupId"] == {"Fn::GetAtt": [domain_sg, "GroupId"]}]
    assert [(i["FromPort"], i["ToPort"], i["SourceSecurityGroupId"]) for i in ingress] == \
        [(443, 443, {"Fn::GetAtt": [lambda_sg, "GroupId"]})]
    assert not prod.template["Resources"][domain_sg]["Properties"].get("SecurityGroupIngress")
    for fn in (prod.stack.query_function, prod.stack.ingest_function):
        config = prod.template["Resources"][prod.logical_id(fn.function)]["Properties"]
        assert config["VpcConfig"]["SecurityGroupIds"] == [{"Fn::GetAtt": [lambda_sg, "GroupId"]}]
    services = {json.dumps(e["Properties"]["ServiceName"])
                for e in prod.resources("AWS::EC2::VPCEndpoint").values()}
    assert any("sagemaker.runtime" in s for s in services)
    assert any(".s3" in s for s in services)
    assert prod.resources("AWS::EC2::FlowLog")


def test_admin_role_joins_the_domain_access_policy() -> None:
    """Tested on the construct alone: a full synth per knob would be too slow."""
    app = App()
    stack = Stack(app, "DomainOnly", env={"region": "us-east-1"})
    config = DeploymentConfig(admin_role_arn=ADMIN_ROLE)
    reader = iam.Role(stack, "Reader", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    writer = iam.Role(stack, "Writer", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    SearchDomain(stack, "Search", config=config, readers=[reader], writers=[writer],
                 network=None)
    policy = Template.from_stack(stack).find_resources("AWS::OpenSearchService::Domain")
    (domain,) = policy.values()
    (admin,) = [s for s in _statements(domain["Properties"]["AccessPolicies"])
                if s["Principal"]["AWS"] == ADMIN_ROLE]
    # The operator's role (it signs the bootstrap's alias swap): every HTTP method.
    assert admin["Effect"] == "Allow" and admin["Action"] == ["es:ESHttp*"]
    assert json.dumps(admin["Resource"]).endswith(':domain/clipsearch-dev/*"]]}')


# ----------------------------------------------------------------------------- model


def test_model_uses_the_hugging_face_cpu_dlc_and_the_configured_artifact(synth: Synth) -> None:
    container = synth.one("AWS::SageMaker::Model")[1]["Properties"]["PrimaryContainer"]
    assert container["Image"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"
        f"{synth.config.dlc_image_tag}")
    assert "-cpu-" in container["Image"]
    assert container["ModelDataUrl"] == FAKE_MODEL_URL


def test_endpoint_is_serverless_within_memory_bounds(synth: Synth) -> None:
    config = synth.one("AWS::SageMaker::EndpointConfig")[1]["Properties"]
    (variant,) = config["ProductionVariants"]
    serverless = variant["ServerlessConfig"]
    assert serverless["MemorySizeInMB"] in SERVERLESS_MEMORY_CHOICES
    assert 1024 <= serverless["MemorySizeInMB"] <= 6144
    assert serverless["MemorySizeInMB"] % 1024 == 0
    assert serverless["MaxConcurrency"] == synth.config.serverless_max_concurrency
    assert "InstanceType" not in variant
    endpoint = synth.one("AWS::SageMaker::Endpoint")[1]["Properties"]
    assert endpoint["EndpointName"] == synth.config.endpoint_name


def test_model_role_is_least_privilege(synth: Synth) -> None:
    statements = _role_statements(synth, synth.stack.model.role)
    for statement in statements:
        for action in _actions(statement):
            assert "*" not in action, f"wildcard action {action}"
        if statement["Resource"] == "*":
            assert _actions(statement) in (["ecr:GetAuthorizationToken"],
                                           ["cloudwatch:PutMetricData"]), statement
    ecr = next(s for s in statements if "ecr:BatchGetImage" in _actions(s))
    assert ecr["Resource"].endswith(":repository/huggingface-pytorch-inference")
    writes = [s for s in statements if "s3:PutObject" in _actions(s)]
    assert json.dumps(writes).count("/transform/*") == 1 and "/images/" not in json.dumps(writes)
    # Only the configured artifact object, and only GetObject (policies are minimized,
    # so it may share a statement with other GetObject resources).
    artifact_arn = "arn:aws:s3:::example-artifacts/clipsearch/model.tar.gz"
    holders = [s for s in statements if artifact_arn in _as_list(s["Resource"])]
    assert [_actions(s) for s in holders] == [["s3:GetObject"]]


# ----------------------------------------------------------------------------- ingestion


def _queues(synth: Synth) -> tuple[dict[str, Any], dict[str, Any]]:
    ingestion = synth.stack.ingestion
    resources = synth.template["Resources"]
    return (resources[synth.logical_id(ingestion.queue)]["Properties"],
            resources[synth.logical_id(ingestion.dead_letter_queue)]["Properties"])


def test_queue_has_a_dead_letter_queue_with_max_receive_count(synth: Synth) -> None:
    queue, _ = _queues(synth)
    dlq_id = synth.logical_id(synth.stack.ingestion.dead_letter_queue)
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": synth.config.max_receive_count,
    }
    assert 1 <= synth.config.max_receive_count <= 10


def test_visibility_timeout_is_at_least_six_times_the_lambda_timeout(synth: Synth) -> None:
    queue, _ = _queues(synth)
    fn = synth.template["Resources"][synth.logical_id(synth.stack.ingest_function.function)]
    assert queue["VisibilityTimeout"] >= 6 * fn["Properties"]["Timeout"]


def test_queues_are_encrypted_and_require_tls(synth: Synth) -> None:
    for queue in _queues(synth):
        assert queue["SqsManagedSseEnabled"] is True
    policies = synth.resources("AWS::SQS::QueuePolicy").values()
    protected = {json.dumps(q) for p in policies
                 if _denies_insecure_transport(p["Properties"]["PolicyDocument"])
                 for q in p["Properties"]["Queues"]}
    for queue in (synth.stack.ingestion.queue, synth.stack.ingestion.dead_letter_queue):
        assert json.dumps({"Ref": synth.logical_id(queue)}) in protected


def test_ingest_lambda_reads_batches_with_report_batch_item_failures(synth: Synth) -> None:
    (mapping,) = synth.resources("AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["EventSourceArn"] == {
        "Fn::GetAtt": [synth.logical_id(synth.stack.ingestion.queue), "Arn"]}
    assert props["BatchSize"] == synth.config.ingest_batch_size
    assert props["ScalingConfig"] == {"MaximumConcurrency": synth.config.ingest_max_concurrency}


def test_s3_events_on_images_and_catalog_feed_the_queue(synth: Synth) -> None:
    (notifications,) = synth.resources("Custom::S3BucketNotifications").values()
    configs = notifications["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    queue_arn = {"Fn::GetAtt": [synth.logical_id(synth.stack.ingestion.queue), "Arn"]}
    seen = set()
    for config in configs:
        assert config["QueueArn"] == queue_arn
        (rule,) = config["Filter"]["Key"]["FilterRules"]
        for event in config["Events"]:
            seen.add((rule["Value"], event))
    assert seen == {(prefix, event) for prefix in ("images/", "catalog/")
                    for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")}


def test_dead_letter_queue_depth_alarm_notifies_the_topic(synth: Synth) -> None:
    dlq = synth.logical_id(synth.stack.ingestion.dead_letter_queue)
    topic = synth.logical_id(synth.stack.monitoring.topic)
    synth.assertions.has_resource_properties("AWS::CloudWatch::Alarm", {
        "MetricName": "ApproximateNumberOfMessagesVisible",
        "Namespace": "AWS/SQS",
        "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}],
        "Threshold": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "AlarmActions": [{"Ref": topic}],
    })


def test_alarms_cover_every_component(synth: Synth) -> None:
    alarms = synth.resources("AWS::CloudWatch::Alarm").values()
    metrics = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]) for a in alarms}
    assert metrics >= {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/Lambda", "Errors"),
        ("AWS/ApiGateway", "5XXError"),
        ("AWS/ApiGateway", "Latency"),
        ("AWS/SageMaker", "Invocation5XXErrors"),
        ("AWS/ES", "ClusterStatus.red"),
        ("AWS/ES", "FreeStorageSpace"),
    }
    lambda_alarms = [a for a in alarms if a["Properties"]["Namespace"] == "AWS/Lambda"]
    assert len(lambda_alarms) == 2, "one error alarm per Lambda"
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"], "an alarm nobody hears is no alarm"
    topic = synth.one("AWS::SNS::Topic")[1]["Properties"]
    assert "KmsMasterKeyId" in topic


# ----------------------------------------------------------------------------- query API


def _methods(synth: Synth) -> dict[tuple[str, str], dict[str, Any]]:
    """(path, verb) -> method properties, with paths rebuilt from the resource tree."""
    resources = synth.resources("AWS::ApiGateway::Resource")
    api_id = synth.logical_id(synth.stack.api.api)

    def path(ref: Any) -> str:
        if ref == {"Fn::GetAtt": [api_id, "RootResourceId"]}:
            return ""
        resource = resources[ref["Ref"]]["Properties"]
        return f"{path(resource['ParentId'])}/{resource['PathPart']}"

    return {(path(m["Properties"]["ResourceId"]) or "/", m["Properties"]["HttpMethod"]):
            m["Properties"] for m in synth.resources("AWS::ApiGateway::Method").values()}


def test_api_routes_are_the_contract_routes(synth: Synth) -> None:
    routes = {key for key in _methods(synth) if key[1] != "OPTIONS"}
    contract = json.loads((REPO / "docs" / "openapi.json").read_text())["paths"]
    assert routes == {(path, verb.upper()) for path, item in contract.items()
                      for verb in item if verb in ("get", "post", "put", "delete", "patch")}
    assert routes >= {("/search", "POST"), ("/search", "GET"), ("/products/{id}", "GET"),
                      ("/products/{id}/similar", "GET"), ("/health", "GET")}
    fn = synth.logical_id(synth.stack.query_function.function)
    for key, method in _methods(synth).items():
        if key[1] != "OPTIONS":
            assert method["Integration"]["Type"] == "AWS_PROXY"
            assert fn in json.dumps(method["Integration"]["Uri"])


def test_api_validates_requests(synth: Synth) -> None:
    methods = _methods(synth)
    validators = synth.resources("AWS::ApiGateway::RequestValidator")
    post = methods[("/search", "POST")]
    body_validator = validators[post["RequestValidatorId"]["Ref"]]["Properties"]
    assert body_validator["ValidateRequestBody"] is True
    model_id = post["RequestModels"]["application/json"]["Ref"]
    schema = synth.template["Resources"][model_id]["Properties"]["Schema"]
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert schema["additionalProperties"] is False
    assert schema["properties"]["image"]["maxLength"] == MAX_REQUEST_BYTES, "the payload limit"
    assert schema["properties"]["text"]["maxLength"] == MAX_TEXT_CHARS
    assert "$ref" not in json.dumps(schema), "API Gateway models must be self-contained"
    get = methods[("/search", "GET")]
    assert get["RequestParameters"] == {"method.request.querystring.q": True}
    assert validators[get["RequestValidatorId"]["Ref"]]["Properties"][
        "ValidateRequestParameters"] is True


def test_api_model_accepts_the_search_modes_and_rejects_bad_values(synth: Synth) -> None:
    """The gateway's own validation of mode/explain/fusion/lexical_weight, run with a real
    draft-4 validator against the synthesized model (what API Gateway evaluates)."""
    import jsonschema

    post = _methods(synth)[("/search", "POST")]
    schema = synth.template["Resources"][post["RequestModels"]["application/json"]["Ref"]][
        "Properties"]["Schema"]
    validator = jsonschema.Draft4Validator(schema)
    for good in ({"text": "jar", "mode": "hybrid", "explain": True, "fusion": "weighted",
                  "lexical_weight": 0.3},
                 {"text": "jar", "mode": "lexical"}, {"text": "jar", "mode": "vector",
                                                      "fusion": "rrf", "lexical_weight": 0}):
        assert list(validator.iter_errors(good)) == [], good
    for bad, field in (({"text": "jar", "mode": "fuzzy"}, "mode"),
                       ({"text": "jar", "explain": "yes"}, "explain"),
                       ({"text": "jar", "fusion": "max"}, "fusion"),
                       ({"text": "jar", "lexical_weight": 1.5}, "lexical_weight"),
                       ({"text": "jar", "lexical_weight": -0.1}, "lexical_weight"),
                       ({"text": "jar", "lexical_weight": "half"}, "lexical_weight")):
        errors = list(validator.iter_errors(bad))
        assert [list(e.path) for e in errors] == [[field]], (bad, errors)


def test_api_requires_the_key_except_on_health_and_preflight(synth: Synth) -> None:
    for (path, verb), method in _methods(synth).items():
        expected = synth.config.api_key_required and path != "/health" and verb != "OPTIONS"
        assert method.get("ApiKeyRequired", False) is expected, (path, verb)
    # The operators' key and the page's key (which CloudFront adds), both in the plan.
    assert len(synth.resources("AWS::ApiGateway::ApiKey")) == 2
    assert len(synth.resources("AWS::ApiGateway::UsagePlanKey")) == 2


def test_api_throttling_from_config(synth: Synth) -> None:
    (settings,) = synth.one("AWS::ApiGateway::Stage")[1]["Properties"]["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == synth.config.api_rate_limit
    assert settings["ThrottlingBurstLimit"] == synth.config.api_burst_limit
    plan = synth.one("AWS::ApiGateway::UsagePlan")[1]["Properties"]
    assert plan["Throttle"] == {"RateLimit": synth.config.api_rate_limit,
                                "BurstLimit": synth.config.api_burst_limit}


def test_api_access_logs_execution_logs_and_tracing(synth: Synth) -> None:
    stage = synth.one("AWS::ApiGateway::Stage")[1]["Properties"]
    access_logs = synth.logical_id(synth.stack.api.access_logs)
    assert access_logs in json.dumps(stage["AccessLogSetting"]["DestinationArn"])
    assert "$context.requestId" in stage["AccessLogSetting"]["Format"]
    assert stage["TracingEnabled"] is True
    (settings,) = stage["MethodSettings"]
    assert settings["LoggingLevel"] == synth.config.api_execution_log_level
    assert settings["DataTraceEnabled"] is False, "bodies (shoppers' photos) stay out of logs"
    assert settings["MetricsEnabled"] is True


def test_api_errors_use_the_contract_error_body(synth: Synth) -> None:
    responses = {r["Properties"]["ResponseType"]: r["Properties"]
                 for r in synth.resources("AWS::ApiGateway::GatewayResponse").values()}
    assert {"BAD_REQUEST_BODY", "BAD_REQUEST_PARAMETERS", "DEFAULT_4XX", "DEFAULT_5XX"} <= \
        set(responses)
    for response in responses.values():
        template = response["ResponseTemplates"]["application/json"]
        assert '"error"' in template and '"message"' in template and '"field"' in template


def test_waf_per_profile(dev: Synth, prod: Synth) -> None:
    assert not dev.resources("AWS::WAFv2::WebACL")
    acl_id = prod.logical_id_of(prod.stack.api.web_acl)
    acl = prod.template["Resources"][acl_id]
    association = prod.one("AWS::WAFv2::WebACLAssociation")[1]["Properties"]
    assert association["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    assert acl["Properties"]["Scope"] == "REGIONAL"
    rules = {r["Name"]: r for r in acl["Properties"]["Rules"]}
    assert "rate-limit-per-ip" in rules
    # Image searches are large JSON bodies; the 8 KB body rule must not block them.
    common = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    assert {"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}} in \
        common["RuleActionOverrides"]


def test_cors_per_profile(dev: Synth, prod: Synth) -> None:
    assert ("/search", "OPTIONS") in _methods(dev)
    assert ("/search", "OPTIONS") not in _methods(prod), "prod has no origins by default"


# ----------------------------------------------------------------------------- Lambdas


def _function(synth: Synth, name: str) -> dict[str, Any]:
    fn = getattr(synth.stack, f"{name}_function").function
    return synth.template["Resources"][synth.logical_id(fn)]["Properties"]


def test_lambdas_use_the_newest_python_runtime_on_the_configured_arch(synth: Synth) -> None:
    newest = max((getattr(lambda_.Runtime, n) for n in dir(lambda_.Runtime)
                  if re.fullmatch(r"PYTHON_3_\d+", n)),
                 key=lambda r: int(r.name.split(".")[1]))
    assert RUNTIME.name == newest.name
    for name in ("query", "ingest"):
        fn = _function(synth, name)
        assert fn["Runtime"] == newest.name
        assert fn["Architectures"] == ["arm64"]
        assert fn["Handler"] == "handler.handler"
        assert fn["TracingConfig"] == {"Mode": "Active"}


def test_lambda_environment_names_the_endpoint_domain_and_alias(synth: Synth) -> None:
    domain_id = synth.one("AWS::OpenSearchService::Domain")[0]
    for name in ("query", "ingest"):
        env = _function(synth, name)["Environment"]["Variables"]
        assert env[ENV_ENDPOINT] == synth.config.endpoint_name
        assert env[ENV_INDEX_ALIAS] == synth.config.index_alias
        assert env[ENV_OPENSEARCH_URL] == {"Fn::Join": ["", [
            "https://", {"Fn::GetAtt": [domain_id, "DomainEndpoint"]}]]}
        assert env["POWERTOOLS_SERVICE_NAME"] == f"clipsearch-{name}"


def test_index_replicas_follow_the_data_nodes(dev: Synth, prod: Synth) -> None:
    """One replica whenever a second data node exists, for the Lambdas and the bootstrap."""
    assert dev.config.domain_instance_count == 1 and prod.config.domain_instance_count == 3
    for synth, replicas in ((dev, "0"), (prod, "1")):
        for name in ("query", "ingest"):
            env = _function(synth, name)["Environment"]["Variables"]
            assert env[ENV_INDEX_REPLICAS] == replicas
        assert synth.template["Outputs"]["IndexReplicas"]["Value"] == replicas
    two_nodes = DeploymentConfig(domain_instance_count=2, domain_az_count=2).validate()
    assert two_nodes.index_replicas == 1


def test_query_timeout_fits_under_api_gateway(synth: Synth) -> None:
    assert _function(synth, "query")["Timeout"] < 29


def test_lambda_roles_are_least_privilege(synth: Synth) -> None:
    endpoint = {"Ref": synth.one("AWS::SageMaker::Endpoint")[0]}
    for name, es_writes, prefixes in (("query", False, {"images/"}),
                                      ("ingest", True, {"images/", "catalog/"})):
        role = getattr(synth.stack, f"{name}_function").role
        role_resource = synth.template["Resources"][synth.logical_id(role)]["Properties"]
        assert "ManagedPolicyArns" not in role_resource, "no AWS managed policies"
        statements = _role_statements(synth, role)
        invoke = [s for s in statements if "sagemaker:InvokeEndpoint" in _actions(s)]
        assert [s["Resource"] for s in invoke] == [endpoint]
        es = {a for s in statements if s.get("Effect", "Allow") == "Allow"
              for a in _actions(s) if a.startswith("es:")}
        assert ("es:ESHttpPut" in es) is es_writes
        assert "es:ESHttpDelete" not in es, "documents are deleted through _bulk"
        s3_reads = [s for s in statements if any(a.startswith("s3:") for a in _actions(s))]
        assert {a for s in s3_reads for a in _actions(s)} == {"s3:GetObject"}
        readable = set(re.findall(r'"/(\w+/)\*"', json.dumps(s3_reads)))
        assert readable == prefixes
        for statement in statements:
            for action in _actions(statement):
                assert not action.endswith(":*"), f"wildcard action {action} on {name}"
            if statement["Resource"] == "*":
                assert all(a.startswith(("xray:", "ec2:")) for a in _actions(statement))


def test_no_resource_policy_allows_a_public_principal(synth: Synth) -> None:
    checked = 0
    for logical_id, document in _policy_documents(synth):
        if not isinstance(document, dict) or "Statement" not in document:
            text = json.dumps(document).replace("\\", "").replace(" ", "")
            assert '"Principal":"*"' not in text and '"AWS":"*"' not in text, logical_id
            checked += 1
            continue
        for statement in _statements(document):
            checked += 1
            if statement.get("Effect") != "Allow":
                continue
            principal = statement.get("Principal")
            assert principal not in ("*", {"AWS": "*"}), f"{logical_id} allows everyone"
            if isinstance(principal, dict):
                assert "*" not in _as_list(principal.get("AWS", [])), logical_id
    assert checked >= 5
    # Lambda invoke permissions go to API Gateway, scoped to this API's ARN.
    for permission in synth.resources("AWS::Lambda::Permission").values():
        props = permission["Properties"]
        if props["Principal"] == "apigateway.amazonaws.com":
            assert synth.logical_id(synth.stack.api.api) in json.dumps(props["SourceArn"])
        else:
            assert (props["Principal"].endswith(".amazonaws.com") and "SourceArn" in props) \
                or "SourceAccount" in props


# ----------------------------------------------------------------------------- search page


def _distribution(synth: Synth) -> dict[str, Any]:
    return synth.one("AWS::CloudFront::Distribution")[1]["Properties"]["DistributionConfig"]


def _origins(synth: Synth) -> tuple[dict[str, Any], dict[str, Any]]:
    """(page origin, API origin) of the distribution."""
    config = _distribution(synth)
    by_id = {o["Id"]: o for o in config["Origins"]}
    assert len(by_id) == 2, "the page bucket and the API, nothing else"
    page = by_id[config["DefaultCacheBehavior"]["TargetOriginId"]]
    (api_behaviour,) = config["CacheBehaviors"]
    return page, by_id[api_behaviour["TargetOriginId"]]


def test_distribution_serves_the_page_from_s3_and_the_api_under_api(synth: Synth) -> None:
    config = _distribution(synth)
    assert config["Enabled"] is True and config["DefaultRootObject"] == "index.html"
    assert config["PriceClass"] == synth.config.web_price_class
    page_behaviour = config["DefaultCacheBehavior"]
    (api_behaviour,) = config["CacheBehaviors"]
    policy = {"Ref": synth.logical_id(synth.stack.web.headers_policy)}

    assert page_behaviour["ViewerProtocolPolicy"] == "redirect-to-https"
    assert page_behaviour["AllowedMethods"] == ["GET", "HEAD"]
    assert page_behaviour["CachePolicyId"] == \
        cloudfront.CachePolicy.CACHING_OPTIMIZED.cache_policy_id
    assert page_behaviour["ResponseHeadersPolicyId"] == policy

    assert api_behaviour["PathPattern"] == f"{API_PATH}/*"
    assert api_behaviour["ViewerProtocolPolicy"] == "https-only"
    assert "POST" in api_behaviour["AllowedMethods"]
    # Search answers are never cached; the viewer's query string and headers reach the API.
    assert api_behaviour["CachePolicyId"] == \
        cloudfront.CachePolicy.CACHING_DISABLED.cache_policy_id
    assert api_behaviour["OriginRequestPolicyId"] == \
        cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER.origin_request_policy_id
    assert api_behaviour["ResponseHeadersPolicyId"] == policy
    (association,) = api_behaviour["FunctionAssociations"]
    assert association["EventType"] == "viewer-request"
    function_id = synth.one("AWS::CloudFront::Function")[0]
    assert association["FunctionARN"] == {"Fn::GetAtt": [function_id, "FunctionARN"]}

    page, api = _origins(synth)
    bucket_id = synth.logical_id(synth.stack.web.bucket)
    assert page["DomainName"] == {"Fn::GetAtt": [bucket_id, "RegionalDomainName"]}
    api_id = synth.logical_id(synth.stack.api.api)
    stage_id = synth.logical_id(synth.stack.api.api.deployment_stage)
    assert api_id in json.dumps(api["DomainName"]) and "execute-api" in json.dumps(api)
    assert stage_id in json.dumps(api["OriginPath"]), "the stage is the origin path"
    assert api["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
    assert api["CustomOriginConfig"]["OriginSSLProtocols"] == ["TLSv1.2"]


def test_distribution_is_https_only_and_logs_access(synth: Synth) -> None:
    config = _distribution(synth)
    behaviours = [config["DefaultCacheBehavior"], *config["CacheBehaviors"]]
    assert {b["ViewerProtocolPolicy"] for b in behaviours} <= {"redirect-to-https",
                                                               "https-only"}
    log_bucket = synth.logical_id(synth.stack.web.log_bucket)
    assert config["Logging"]["Bucket"] == {"Fn::GetAtt": [log_bucket, "RegionalDomainName"]}
    # The default certificate pins TLSv1 (acknowledged as CFR4); a custom one gets TLS 1.2+.
    assert "ViewerCertificate" not in config
    assert synth.config.web_certificate_arn is None


def test_a_custom_domain_gets_tls_1_2_or_newer() -> None:
    """Construct-level: the Web component alone, with a certificate (a full synth is slow)."""
    stack = Stack(App(), "WebOnly", env={"region": "us-east-1"})
    config = DeploymentConfig(web_domain_name="shop.example.com", web_certificate_arn=(
        "arn:aws:acm:us-east-1:123456789012:certificate/0d2f9c3e-1111-2222-3333-444455556666"))
    _web_only(stack, config)
    (distribution,) = Template.from_stack(stack).find_resources(
        "AWS::CloudFront::Distribution").values()
    config_out = distribution["Properties"]["DistributionConfig"]
    assert config_out["Aliases"] == ["shop.example.com"]
    assert config_out["ViewerCertificate"]["MinimumProtocolVersion"] == "TLSv1.2_2021"
    assert config_out["ViewerCertificate"]["SslSupportMethod"] == "sni-only"


def _web_only(stack: Stack, config: DeploymentConfig) -> Any:
    """The Web construct over a stand-in query API, for knob tests without a full synth."""
    from stacks.functions import PythonFunction
    from stacks.query_api import QueryApi
    from stacks.web import Web

    function = PythonFunction(stack, "Fn", config=config, name="query", description="query",
                              memory_mb=512, timeout_s=25, environment={}, network=None)
    api = QueryApi(stack, "Api", config=config, function=function)
    logs = s3.Bucket(stack, "Logs")
    return Web(stack, "Web", config=config, api=api, access_log_bucket=logs)


def test_origin_access_control_signs_every_page_request(synth: Synth) -> None:
    oac_id, oac = synth.one("AWS::CloudFront::OriginAccessControl")
    assert oac["Properties"]["OriginAccessControlConfig"] == {
        **oac["Properties"]["OriginAccessControlConfig"],
        "OriginAccessControlOriginType": "s3", "SigningBehavior": "always",
        "SigningProtocol": "sigv4"}
    page, _ = _origins(synth)
    assert page["OriginAccessControlId"] == {"Fn::GetAtt": [oac_id, "Id"]}
    assert page["S3OriginConfig"] == {"OriginAccessIdentity": ""}, "OAC, not a legacy OAI"


def test_page_bucket_policy_allows_only_the_distribution(synth: Synth) -> None:
    bucket_id = synth.logical_id(synth.stack.web.bucket)
    (policy,) = [p["Properties"]["PolicyDocument"]
                 for p in synth.resources("AWS::S3::BucketPolicy").values()
                 if p["Properties"]["Bucket"] == {"Ref": bucket_id}]
    allows = [s for s in _statements(policy) if s["Effect"] == "Allow"]
    (cloudfront_read,) = [s for s in allows if s["Principal"] == {
        "Service": "cloudfront.amazonaws.com"}]
    assert cloudfront_read["Action"] == "s3:GetObject"
    distribution_id = synth.one("AWS::CloudFront::Distribution")[0]
    source = cloudfront_read["Condition"]["StringEquals"]["AWS:SourceArn"]
    assert {"Ref": distribution_id} in source["Fn::Join"][1], "this distribution only"
    assert ":distribution/" in json.dumps(source)
    others = [s for s in allows if s is not cloudfront_read]
    # The only other grant is CDK's auto-delete (dev: the bucket is emptied on delete).
    assert [json.dumps(s["Principal"]) for s in others] == (
        [] if synth.config.retain else
        [json.dumps({"AWS": {"Fn::GetAtt": [
            "CustomS3AutoDeleteObjectsCustomResourceProviderRole3B1BD092", "Arn"]}})])
    bucket = synth.template["Resources"][bucket_id]["Properties"]
    assert "WebsiteConfiguration" not in bucket, "a private bucket, not a website endpoint"


def test_response_headers_policy(synth: Synth) -> None:
    config = synth.one("AWS::CloudFront::ResponseHeadersPolicy")[1]["Properties"][
        "ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    assert config["ContentSecurityPolicy"] == {"ContentSecurityPolicy": PAGE_CSP,
                                               "Override": True}
    assert "frame-ancestors 'none'" in PAGE_CSP and "script-src 'self'" in PAGE_CSP
    hsts = config["StrictTransportSecurity"]
    assert hsts["AccessControlMaxAgeSec"] >= 365 * 24 * 3600 and hsts["Override"] is True
    assert hsts["IncludeSubdomains"] is True
    assert config["ContentTypeOptions"] == {"Override": True}  # nosniff
    assert config["FrameOptions"] == {"FrameOption": "DENY", "Override": True}
    assert config["ReferrerPolicy"]["Override"] is True
    # The browser test's stand-in for CloudFront sends response_headers(): the same values.
    sent = response_headers()
    assert sent["Content-Security-Policy"] == PAGE_CSP
    assert sent["Strict-Transport-Security"] == \
        f"max-age={hsts['AccessControlMaxAgeSec']}; includeSubDomains"
    assert sent["X-Frame-Options"] == config["FrameOptions"]["FrameOption"]
    assert sent["Referrer-Policy"] == config["ReferrerPolicy"]["ReferrerPolicy"]
    assert sent["X-Content-Type-Options"] == "nosniff"


def test_api_key_is_added_by_cloudfront_on_the_api_origin_only(synth: Synth) -> None:
    page, api = _origins(synth)
    secret_id = synth.one("AWS::SecretsManager::Secret")[0]
    reference = {"Fn::Join": ["", ["{{resolve:secretsmanager:", {"Ref": secret_id},
                                   ":SecretString:::}}"]]}
    assert api["OriginCustomHeaders"] == [{"HeaderName": API_KEY_HEADER,
                                           "HeaderValue": reference}]
    assert "OriginCustomHeaders" not in page
    # The page's own key, in the usage plan: its value is the same secret, never a literal.
    page_key_id = synth.logical_id(synth.stack.web.api_key)
    keys = synth.resources("AWS::ApiGateway::ApiKey")
    assert keys[page_key_id]["Properties"]["Value"] == reference
    assert all("Value" not in k["Properties"] for i, k in keys.items() if i != page_key_id)
    plan_keys = {json.dumps(k["Properties"]["KeyId"])
                 for k in synth.resources("AWS::ApiGateway::UsagePlanKey").values()}
    assert json.dumps({"Ref": page_key_id}) in plan_keys
    # The header is nowhere else in the template (the page's files are checked below).
    assert json.dumps(synth.template).count('"x-api-key"') == 1


def _deployed_page_files(synth: Synth) -> dict[str, bytes]:
    """The files the BucketDeployment uploads, read from the synthesized cloud assembly."""
    (deployment,) = synth.resources("Custom::CDKBucketDeployment").values()
    (key,) = deployment["Properties"]["SourceObjectKeys"]
    staged = synth.outdir / f"asset.{key.removesuffix('.zip')}"
    return {p.name: p.read_bytes() for p in staged.iterdir()}


def test_page_files_are_the_served_files_with_a_generated_config(synth: Synth) -> None:
    deployed = _deployed_page_files(synth)
    assert deployed == page_files(API_PATH)
    for name in ("index.html", "app.js", "style.css", "favicon.svg"):
        assert deployed[name] == (WEB_DIR / name).read_bytes(), name
    config = deployed["config.js"].decode()
    assert config.startswith((WEB_DIR / "config.js").read_text().rstrip())
    assert '"apiBase": "/api"' in config
    json.loads(deployed["openapi.json"])
    for name, content in deployed.items():
        text = content.decode().lower()
        for secret_trace in ("x-api-key", "resolve:secretsmanager", "apikey"):
            assert secret_trace not in text, (name, secret_trace)
    (deployment,) = synth.resources("Custom::CDKBucketDeployment").values()
    assert deployment["Properties"]["DestinationBucketName"] == {
        "Ref": synth.logical_id(synth.stack.web.bucket)}
    assert deployment["Properties"]["SystemMetadata"] == {"cache-control": "no-cache"}


def test_cloudfront_function_strips_the_api_prefix(synth: Synth) -> None:
    """The function's code, run for real in node (CloudFront Functions are JavaScript)."""
    code = synth.one("AWS::CloudFront::Function")[1]["Properties"]["FunctionCode"]
    cases = {"/api/search": "/search", "/api/products/a%2Fb/similar": "/products/a%2Fb/similar",
             "/api/health": "/health", "/api/": "/"}
    script = code + "".join(
        f"console.log(handler({{request: {{uri: {json.dumps(uri)}, headers: {{}}}}}}).uri);\n"
        for uri in cases)
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.split() == list(cases.values())


def test_web_waf_per_profile(dev: Synth, prod: Synth) -> None:
    assert "WebACLId" not in _distribution(dev)
    acl_id = prod.logical_id_of(prod.stack.web.web_acl)
    acl = prod.template["Resources"][acl_id]["Properties"]
    assert acl["Scope"] == "CLOUDFRONT" and prod.config.region == "us-east-1"
    assert _distribution(prod)["WebACLId"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    (rate,) = [r for r in acl["Rules"] if r["Name"] == RATE_RULE]
    assert rate["Action"] == {"Block": {}}
    assert rate["Statement"]["RateBasedStatement"] == {
        "AggregateKeyType": "IP", "Limit": prod.config.waf_rate_limit_per_5min}


def test_web_url_output_is_the_distribution(synth: Synth) -> None:
    distribution_id = synth.one("AWS::CloudFront::Distribution")[0]
    assert synth.template["Outputs"]["WebUrl"]["Value"] == {"Fn::Join": ["", [
        "https://", {"Fn::GetAtt": [distribution_id, "DomainName"]}, "/"]]}


def test_web_false_leaves_the_page_out() -> None:
    """`-c web=false`: the stack is built (not synthesized: that costs a minute) without it."""
    _, stack = build_app({**BASE_CONTEXT, "web": "false"}, environ={})
    assert stack.web is None
    assert stack.node.try_find_child("Web") is None
    assert stack.node.try_find_child("WebUrl") is None
    assert stack.node.try_find_child("ApiUrl") is not None


# ----------------------------------------------------------------------------- log retention
# Resource types that make AWS write log groups of their own (checked below, one by one),
# and those known to make none. A type in neither fails the test until its logs are
# accounted for: a new component cannot bring log groups that never expire.
CAUSES_LOG_GROUPS = frozenset({
    "AWS::Lambda::Function", "AWS::ApiGateway::Stage", "AWS::ApiGateway::Account",
    "AWS::CloudFront::Function",
    "AWS::SageMaker::Endpoint", "AWS::SageMaker::Model", "AWS::EC2::FlowLog",
    "AWS::OpenSearchService::Domain",
})
CAUSES_NO_LOG_GROUP = frozenset({
    "AWS::ApiGateway::ApiKey", "AWS::ApiGateway::Deployment", "AWS::ApiGateway::GatewayResponse",
    "AWS::ApiGateway::Method", "AWS::ApiGateway::Model", "AWS::ApiGateway::RequestValidator",
    "AWS::ApiGateway::Resource", "AWS::ApiGateway::RestApi", "AWS::ApiGateway::UsagePlan",
    "AWS::ApiGateway::UsagePlanKey", "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard",
    "AWS::EC2::RouteTable", "AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress",
    "AWS::EC2::Subnet", "AWS::EC2::SubnetRouteTableAssociation", "AWS::EC2::VPC",
    "AWS::EC2::VPCEndpoint", "AWS::IAM::Policy", "AWS::IAM::Role", "AWS::KMS::Key",
    "AWS::Lambda::EventSourceMapping", "AWS::Lambda::Permission", "AWS::Logs::LogGroup",
    "AWS::Logs::ResourcePolicy", "AWS::S3::Bucket", "AWS::S3::BucketPolicy", "AWS::SNS::Topic",
    "AWS::SNS::TopicPolicy", "AWS::SQS::Queue", "AWS::SQS::QueuePolicy",
    "AWS::SageMaker::EndpointConfig", "AWS::WAFv2::WebACL", "AWS::WAFv2::WebACLAssociation",
    "AWS::SecretsManager::Secret", "AWS::Lambda::LayerVersion",
    # Standard logs go to the (expiring) access-log bucket, not to CloudWatch.
    "AWS::CloudFront::Distribution", "AWS::CloudFront::OriginAccessControl",
    "AWS::CloudFront::ResponseHeadersPolicy",
    # CDK's custom resources: their Lambdas are AWS::Lambda::Function, checked as such.
    "Custom::S3AutoDeleteObjects", "Custom::S3BucketNotifications", "Custom::CDKBucketDeployment",
    "Custom::VpcRestrictDefaultSG", "Custom::LogRetention", "AWS::CDK::Metadata",
})


def test_every_log_group_the_deployment_causes_has_the_profile_retention(synth: Synth) -> None:
    """Lists every log group the deployment makes exist (its own, and the ones AWS services
    write on its behalf) and checks each is created, or has its retention set, here."""
    resources = synth.template["Resources"]
    days = synth.config.log_retention_days
    unknown = sorted({r["Type"] for r in resources.values()}
                     - CAUSES_LOG_GROUPS - CAUSES_NO_LOG_GROUP)
    assert unknown == [], "say which log groups these resource types cause"

    def name(value: Any) -> str:
        return resolve(value, synth.config.region)

    groups = {logical_id: r for logical_id, r in resources.items()
              if r["Type"] == "AWS::Logs::LogGroup"}

    def refers_to_group(value: Any) -> bool:
        """A Ref, GetAtt or ARN built from one of the template's log groups."""
        text = json.dumps(value)
        return any(f'"{logical_id}"' in text for logical_id in groups)
    for logical_id, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == days, logical_id
    retained = {name(g["Properties"]["LogGroupName"]): logical_id
                for logical_id, g in groups.items() if "LogGroupName" in g["Properties"]}
    for r in resources.values():
        if r["Type"] == "Custom::LogRetention":
            assert r["Properties"]["RetentionInDays"] == days
            retained[r["Properties"]["LogGroupName"]] = "Custom::LogRetention"

    caused: list[str] = []  # log groups named by AWS, which must be retained above
    for logical_id, r in resources.items():
        kind, props = r["Type"], r.get("Properties", {})
        if kind == "AWS::Lambda::Function":
            target = props.get("LoggingConfig", {}).get("LogGroup", {})
            assert target.get("Ref") in groups, f"{logical_id} logs to /aws/lambda/<name>"
        elif kind == "AWS::ApiGateway::Stage":
            assert refers_to_group(props["AccessLogSetting"]["DestinationArn"]), logical_id
            if any(s.get("LoggingLevel", "OFF") != "OFF" for s in props["MethodSettings"]):
                execution = (f"API-Gateway-Execution-Logs_{name(props['RestApiId'])}/"
                             f"{props['StageName']}")
                caused.append(execution)
                assert retained[execution] in r.get("DependsOn", []), "created before logging"
        elif kind == "AWS::ApiGateway::Account":
            caused.append("/aws/apigateway/welcome")
        elif kind == "AWS::SageMaker::Endpoint":
            endpoint = f"/aws/sagemaker/Endpoints/{name(props['EndpointName'])}"
            caused.append(endpoint)
            assert retained[endpoint] in r.get("DependsOn", []), "created before the endpoint"
        elif kind == "AWS::SageMaker::Model":
            caused.append("/aws/sagemaker/TransformJobs")  # the bootstrap's batch transform
        elif kind == "AWS::CloudFront::Function":
            # Its log group (/aws/cloudfront/function/<name>, us-east-1) appears only when
            # the code calls console.log, and could not be given retention from this stack.
            assert "console." not in json.dumps(props["FunctionCode"]), logical_id
        elif kind == "AWS::EC2::FlowLog":
            assert refers_to_group(props["LogGroupName"]), logical_id
        elif kind == "AWS::OpenSearchService::Domain":
            for option in props["LogPublishingOptions"].values():
                assert refers_to_group(option["CloudWatchLogsLogGroupArn"]), logical_id
    missing = [group for group in caused if group not in retained]
    assert missing == [], "log groups the deployment causes without retention"
    assert len(caused) >= 4


# ----------------------------------------------------------------------------- outputs


def test_outputs_have_stable_names(synth: Synth) -> None:
    assert set(synth.template["Outputs"]) == set(OUTPUTS)
    for required in ("ApiUrl", "ApiKeyId", "BucketName", "DomainEndpoint",
                     "SageMakerEndpointName", "IndexAlias", "ModelName", "TransformRoleArn"):
        assert required in synth.template["Outputs"]
    assert synth.template["Outputs"]["IndexAlias"]["Value"] == synth.config.index_alias
    assert synth.template["Outputs"]["TransformRoleArn"]["Value"] == {
        "Fn::GetAtt": [synth.logical_id(synth.stack.model.role), "Arn"]}


# ----------------------------------------------------------------------------- checks


def test_cdk_nag_reports_no_unacknowledged_findings(synth: Synth) -> None:
    # _synth already proved app.synth() passed; the report must agree.
    for plugin in synth.report.get("pluginReports", []):
        assert plugin["violations"] == [], plugin["pluginName"]
    nag_warnings = [m for m in _messages(synth) if "AwsSolutions" in json.dumps(m)]
    assert nag_warnings == []


def _messages(synth: Synth) -> list[Any]:
    manifest = json.loads((synth.outdir / "manifest.json").read_text())
    artifact = manifest["artifacts"][synth.stack.artifact_id]
    return [entry for entries in artifact.get("metadata", {}).values() for entry in entries
            if entry["type"] in ("aws:cdk:warning", "aws:cdk:error")]


def test_no_synth_warnings_or_errors(synth: Synth) -> None:
    assert _messages(synth) == []


def test_every_acknowledgement_carries_a_reason(synth: Synth) -> None:
    key = Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    acknowledged = {}
    for construct in synth.stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == key:
                acknowledged.update({f"{construct.node.path} {rule}": reason
                                     for rule, reason in entry.data.items()})
    assert acknowledged, "expected some acknowledged findings"
    ours = {rule: reason for rule, reason in acknowledged.items()
            if rule.split(" ")[1].startswith("AwsSolutions::AwsSolutions-")}
    assert ours, "expected acknowledged cdk-nag findings"
    for rule, reason in ours.items():
        assert len(reason) >= MIN_REASON_CHARS, rule
    # Anything else is CDK's own acknowledgement of its built-in template checks,
    # also with a reason.
    for rule, reason in acknowledged.items():
        assert rule in ours or rule.split(" ")[1].startswith("CloudFormation-Validate::"), rule
        assert reason.strip(), rule


def test_cdk_nag_is_really_attached() -> None:
    """A non-compliant bucket must fail synth through the same add_checks app.py uses."""
    app = App()
    stack = Stack(app, "Bad")
    s3.Bucket(stack, "Open")
    add_checks(app)
    with pytest.raises(RuntimeError, match=r"ValidationFailed(.|\n)*AwsSolutions-S1"):
        app.synth()


def test_acknowledge_refuses_empty_reasons() -> None:
    stack = Stack(App(), "S")
    with pytest.raises(ValueError, match="reason"):
        acknowledge(stack, "AwsSolutions-S1", "because")


# cfn-lint rules we accept, each with its reason.
CFN_LINT_ACCEPTED = {
    # CDK writes an explicit DependsOn next to a GetAtt for roles and queues; harmless.
    "W3005",
}


def _lint(synth: Synth) -> list[str]:
    from cfnlint.api import lint

    matches = lint(json.dumps(synth.template), regions=[synth.config.region])
    return [f"{m.rule.id}: {m.message} ({m.path})" for m in matches
            if m.rule.id not in CFN_LINT_ACCEPTED and not m.rule.id.startswith("I")]


def test_cfn_lint_passes(synth: Synth) -> None:
    assert _lint(synth) == []


def test_a_two_az_region_synthesizes_and_validates(tmp_path: Path) -> None:
    """prod with two zones in us-west-1 (two AZs for most accounts): zones picked at deploy
    time with Fn::GetAZs, never names guessed from the region (cfn-lint W3010)."""
    # Outside us-east-1 the page's CloudFront web ACL is made there and passed in.
    two = _synth("prod", tmp_path, region="us-west-1", domain_az_count=2,
                 domain_instance_count=2,
                 web_acl_arn="arn:aws:wafv2:us-east-1:123456789012:global/webacl/page/0a1b2c")
    assert _lint(two) == []
    subnets = two.resources("AWS::EC2::Subnet").values()
    assert sorted(json.dumps(s["Properties"]["AvailabilityZone"]) for s in subnets) == [
        json.dumps({"Fn::Select": [i, {"Fn::GetAZs": "us-west-1"}]}) for i in range(2)]
    cluster = _domain(two)["ClusterConfig"]
    assert cluster["ZoneAwarenessConfig"] == {"AvailabilityZoneCount": 2}
    assert len(_domain(two)["VPCOptions"]["SubnetIds"]) == 2
    assert two.template["Outputs"]["IndexReplicas"]["Value"] == "1"


def test_looked_up_zone_names_are_used_and_too_few_are_refused() -> None:
    """With an account, CDK's context lookup names the zones; the VPC uses those."""
    key = "availability-zones:account=123456789012:region=us-west-1"
    zones = ["us-west-1b", "us-west-1c"]
    config = DeploymentConfig(profile="prod", region="us-west-1", vpc_enabled=True,
                              domain_az_count=2, domain_instance_count=2).validate()
    stack = Stack(App(context={key: zones}), "Zones",
                  env={"account": "123456789012", "region": "us-west-1"})
    assert Network(stack, "Network", config=config).vpc.availability_zones == zones
    three = DeploymentConfig(profile="prod", region="us-west-1", vpc_enabled=True,
                             domain_az_count=3, domain_instance_count=3).validate()
    stack = Stack(App(context={key: zones}), "Zones",
                  env={"account": "123456789012", "region": "us-west-1"})
    with pytest.raises(ConfigError, match="offers 2 availability zone"):
        Network(stack, "Network", config=three)


_VOLATILE = re.compile(r"[0-9a-f]{32,}")


def normalise(template: dict[str, Any]) -> dict[str, Any]:
    """Replace asset hashes and hash-suffixed logical ids, stable across runs and machines.

    Request-model schemas come from docs/openapi.json (owned by the API contract and
    tested in test_api_validates_requests), so the snapshot does not repeat them.
    """
    result = json.loads(_VOLATILE.sub("<HASH>", json.dumps(template, sort_keys=True)))
    for resource in result["Resources"].values():
        if resource["Type"] == "AWS::ApiGateway::Model":
            resource["Properties"]["Schema"] = "<docs/openapi.json>"
    return result


def test_snapshot(synth: Synth) -> None:
    path = SNAPSHOTS / f"{synth.stack.stack_name}.template.json"
    current = normalise(synth.template)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert path.exists(), f"no snapshot at {path}; run with UPDATE_SNAPSHOTS=1 and review it"
    expected = json.loads(path.read_text())
    changed = sorted(
        f"{section}/{key}"
        for section in set(current) | set(expected)
        for key in set(current.get(section, {})) | set(expected.get(section, {}))
        if isinstance(current.get(section, {}), dict)
        and current.get(section, {}).get(key) != expected.get(section, {}).get(key)
    )
    assert current == expected, (f"template changed in {changed}; if intended, rerun with "
                                 "UPDATE_SNAPSHOTS=1 and review the diff")


# ----------------------------------------------------------------------------- entry point


def _run_app(context: dict[str, Any], outdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env.update(CDK_CONTEXT_JSON=json.dumps(context), CDK_OUTDIR=str(outdir))
    return subprocess.run([sys.executable, "app.py"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.slow
def test_app_py_synthesizes_the_same_template_without_docker_or_credentials(
        dev: Synth, tmp_path: Path) -> None:
    """The real entry point, in a fresh process with no AWS_* variables: same snapshot.

    This doubles as the determinism check: a second synth of the same inputs, in
    another process and directory, normalises to the same template.
    """
    result = _run_app({**BASE_CONTEXT, "profile": "dev"}, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    template = json.loads((tmp_path / "out" / "Clipsearch-dev.template.json").read_text())
    assert normalise(template) == normalise(dev.template)


def test_app_py_fails_clearly_without_a_model_artifact(tmp_path: Path) -> None:
    result = _run_app({"bundle_dependencies": False,
                       "model_artifact": str(tmp_path / "missing.tar.gz")}, tmp_path / "out")
    assert result.returncode == 1
    assert "scripts/package_model.py" in result.stderr
    assert "Traceback" not in result.stderr


def test_app_py_rejects_an_impossible_config(tmp_path: Path) -> None:
    result = _run_app({**BASE_CONTEXT, "serverless_memory_mb": "5000"}, tmp_path / "out")
    assert result.returncode == 1
    assert "serverless_memory_mb must be 1024-6144 in 1 GB steps" in result.stderr
