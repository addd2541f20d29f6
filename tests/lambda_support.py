"""Test harness for the Lambdas: real handlers, moto S3/SQS, the endpoint emulator, real OpenSearch.

What is real and what stands in:
- the handler modules are loaded from `lambda/<name>/handler.py` exactly as the
  Lambda runtime loads them (a fresh module per world, so its module-level
  singletons start cold, as in a new container);
- S3 and SQS are moto (`mock_aws`). S3 sends its own event notifications to
  the queue (moto implements them, TestEvent included), and `Poller` plays
  the Lambda event source mapping: receive up to N messages, invoke the
  handler with a Lambda-shaped SQS event, delete what succeeded, make the
  reported failures visible again, and let the queue's redrive policy move a
  message to the dead-letter queue after `max_receive_count` receives;
- the SageMaker endpoint is the emulator serving the packaged tiny CLIP, reached
  by boto3's `sagemaker-runtime` client (moto passes requests to hosts it does
  not mock straight through: verified by these tests working at all);
- OpenSearch is the real node of the session; each world gets its own alias.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
_counter = itertools.count()


def load_handler(name: str) -> ModuleType:
    """A fresh import of lambda/<name>/handler.py (a cold container)."""
    path = ROOT / "lambda" / name / "handler.py"
    spec = importlib.util.spec_from_file_location(f"lambda_{name}_handler_{next(_counter)}",
                                                  path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LambdaContext:
    """The attributes of the Lambda context object that Powertools and the handlers read."""

    def __init__(self, name: str = "clipsearch-test", remaining_ms: int | None = 120_000,
                 remaining: Any = None) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 1024
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "test"
        self._remaining_ms = remaining_ms
        self._remaining = remaining

    def get_remaining_time_in_millis(self) -> int:
        if self._remaining is not None:
            return int(self._remaining())
        return int(self._remaining_ms or 0)


# --------------------------------------------------------------------------- API events


def route_template(path: str) -> tuple[str, dict[str, str] | None]:
    """The API Gateway resource a path matches, as the stack's routes define them."""
    parts = path.strip("/").split("/")
    if path in ("/search", "/health", "/facets"):
        return path, None
    if len(parts) == 2 and parts[0] == "products":
        return "/products/{id}", {"id": parts[1]}
    if len(parts) == 3 and parts[0] == "products" and parts[2] == "similar":
        return "/products/{id}/similar", {"id": parts[1]}
    return "/{proxy+}", {"proxy": path.lstrip("/")}


def api_event(method: str, path: str, query: Mapping[str, str] | None = None,
              body: bytes | str | None = None, headers: Mapping[str, str] | None = None,
              *, base64_body: bool = False) -> dict[str, Any]:
    """A REST API (v1) Lambda proxy event, shaped like the ones API Gateway sends."""
    resource, path_params = route_template(path)
    all_headers = {"Accept": "application/json", "Host": "abc123.execute-api.us-east-1."
                   "amazonaws.com", "X-Forwarded-Proto": "https", **(headers or {})}
    if body is not None and "Content-Type" not in all_headers:
        all_headers["Content-Type"] = "application/json"
    text: str | None = None
    is_b64 = False
    if body is not None:
        raw = body.encode() if isinstance(body, str) else body
        if base64_body:
            text, is_b64 = base64.b64encode(raw).decode(), True
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text, is_b64 = base64.b64encode(raw).decode(), True
    request_id = str(uuid.uuid4())
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": dict(query) if query else None,
        "multiValueQueryStringParameters": ({k: [v] for k, v in query.items()}
                                            if query else None),
        "pathParameters": path_params,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource, "httpMethod": method, "path": f"/v1{path}",
            "stage": "v1", "requestId": request_id, "accountId": "123456789012",
            "apiId": "abc123", "identity": {"sourceIp": "127.0.0.1"},
            "requestTimeEpoch": 0, "protocol": "HTTP/1.1",
        },
        "body": text,
        "isBase64Encoded": is_b64,
    }


def call(handler_module: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, str],
                                                                      dict[str, Any]]:
    """Invoke the query handler; (status, headers, parsed JSON body)."""
    response = handler_module.handler(event, LambdaContext("clipsearch-query"))
    assert set(response) >= {"statusCode", "headers", "body"}
    assert response.get("isBase64Encoded") is False
    return response["statusCode"], response["headers"], json.loads(response["body"])


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """One deployment's worth of resources: bucket, queue + DLQ, index alias, env."""

    s3: Any
    sqs: Any
    bucket: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    alias: str
    env: dict[str, str]
    max_receive_count: int
    opensearch: Any = None
    delivered: list[dict[str, Any]] = field(default_factory=list)

    def refresh(self) -> None:
        """Make index writes visible now (OpenSearch refreshes every second by itself)."""
        self.opensearch.indices.refresh(index=f"{self.alias}*", ignore_unavailable=True,
                                        allow_no_indices=True)

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def receive(self, limit: int = 10) -> list[dict[str, Any]]:
        out = self.sqs.receive_message(QueueUrl=self.queue_url,
                                       MaxNumberOfMessages=min(10, limit),
                                       AttributeNames=["All"]).get("Messages", [])
        return out

    def dead_letters(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10,
                                             VisibilityTimeout=300).get("Messages", [])
            if not batch:
                return found
            found.extend(batch)


def make_world(opensearch_url: str, endpoint: Any, model_id: str, *,
               max_receive_count: int = 3, extra_env: Mapping[str, str] | None = None
               ) -> World:
    """Create the resources (inside an active mock_aws) the way the stack wires them."""
    s3 = boto3.client("s3", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    suffix = uuid.uuid4().hex[:10]
    bucket = f"clipsearch-catalog-{suffix}"
    s3.create_bucket(Bucket=bucket)
    dlq_url = sqs.create_queue(QueueName=f"ingest-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]
                                       )["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(QueueName=f"ingest-{suffix}", Attributes={
        "VisibilityTimeout": "720",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                     "maxReceiveCount": max_receive_count}),
    })["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"]
                                         )["Attributes"]["QueueArn"]
    # As stacks/ingestion.py configures it: created and removed, images/ and catalog/.
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [
            {"QueueArn": queue_arn, "Events": [event],
             "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}}
            for prefix in ("images/", "catalog/")
            for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
        ]})
    alias = f"products-{suffix}"
    env = {
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "CLIPSEARCH_BUCKET": bucket,
        "CLIPSEARCH_SAGEMAKER_ENDPOINT": endpoint.endpoint_name,
        "CLIPSEARCH_SAGEMAKER_ENDPOINT_URL": endpoint.url,
        "CLIPSEARCH_OPENSEARCH_URL": opensearch_url,
        "CLIPSEARCH_INDEX_ALIAS": alias,
        "CLIPSEARCH_MODEL": model_id,
        "CLIPSEARCH_IMAGES_PREFIX": "images/",
        "CLIPSEARCH_CATALOG_PREFIX": "catalog/",
        "CLIPSEARCH_IMAGE_URL_TTL": "120",
        "CLIPSEARCH_CORS_ALLOW_ORIGINS": "https://shop.example.com",
        "CLIPSEARCH_ENCODER_MAX_ATTEMPTS": "3",
        "CLIPSEARCH_ENCODER_BASE_DELAY_S": "0.01",
        # Fault tests count endpoint calls per query, so the shared world runs
        # without the query cache; tests/test_lambda_query.py covers it on.
        "CLIPSEARCH_QUERY_CACHE_ENTRIES": "0",
        "POWERTOOLS_SERVICE_NAME": "clipsearch-test",
        "POWERTOOLS_METRICS_NAMESPACE": "clipsearch",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    from clipsearch.index.opensearch import make_client

    return World(s3, sqs, bucket, queue_url, queue_arn, dlq_url, alias, env,
                 max_receive_count, make_client(opensearch_url))


def sqs_event(world: World, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """What Lambda's SQS event source mapping hands the function for these messages."""
    return {"Records": [{
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": {},
        "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": world.queue_arn,
        "awsRegion": REGION,
    } for m in messages]}


@dataclass
class DrainReport:
    invocations: int = 0
    processed: int = 0
    failed: list[str] = field(default_factory=list)  # message ids, each time reported
    responses: list[dict[str, Any]] = field(default_factory=list)


def drain(world: World, handler_module: ModuleType, *, batch_size: int = 10,
          max_rounds: int = 50, context: LambdaContext | None = None) -> DrainReport:
    """Play the event source mapping until the queue is empty (failed messages come back)."""
    report = DrainReport()
    for _ in range(max_rounds):
        messages = world.receive(batch_size)
        if not messages:
            return report
        world.delivered.extend(messages)
        response = handler_module.handler(sqs_event(world, messages),
                                          context or LambdaContext("clipsearch-ingest"))
        report.invocations += 1
        report.responses.append(response)
        world.refresh()
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        assert failed <= {m["MessageId"] for m in messages}, "unknown itemIdentifier"
        for message in messages:
            if message["MessageId"] in failed:
                report.failed.append(message["MessageId"])
                world.sqs.change_message_visibility(QueueUrl=world.queue_url,
                                                    ReceiptHandle=message["ReceiptHandle"],
                                                    VisibilityTimeout=0)
            else:
                report.processed += 1
                world.sqs.delete_message(QueueUrl=world.queue_url,
                                         ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError(f"the queue did not drain in {max_rounds} rounds")


def index_state(client: Any, alias: str) -> dict[str, dict[str, Any]]:
    """Every document behind the alias (vectors rounded), for comparing index states."""
    client.indices.refresh(index=alias)
    hits = client.search(index=alias, body={"size": 10_000, "query": {"match_all": {}}}
                         )["hits"]["hits"]
    out = {}
    for hit in hits:
        source = dict(hit["_source"])
        source["vectors"] = [{**v, "vector": [round(x, 5) for x in v["vector"]]}
                             for v in source.get("vectors", [])]
        out[hit["_id"]] = source
    return out


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 32), seed: int = 0) -> bytes:
    """A small PNG with some noise, so different colours give different embeddings."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color, dtype=np.int16)[None, None, :]
                     + rng.integers(-20, 20, size=(size[1], size[0], 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype("uint8")).save(buffer, "PNG")
    return buffer.getvalue()


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(r) for r in records) + "\n").encode()


def iter_failures(response: dict[str, Any]) -> Iterator[str]:
    for item in response.get("batchItemFailures", []):
        yield item["itemIdentifier"]


# --------------------------------------------------------------------------- fixtures
# Imported by the test_lambda_* modules. Module scope: one moto mock per module
# (nested mock_aws would reset the backends under a running world).



@pytest.fixture(scope="module")
def aws_mock():
    """moto for everything boto3 talks to, with fake credentials, for the whole module.

    Also puts the `clipsearch` logger back as it was afterwards: the handlers point
    it at Powertools' JSON handler (without propagation), which would otherwise
    hide clipsearch's log records from later tests' caplog.
    """
    import logging

    from moto import mock_aws

    package_logger = logging.getLogger("clipsearch")
    saved = (list(package_logger.handlers), package_logger.propagate, package_logger.level)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                     "AWS_LAMBDA_FUNCTION_NAME", "LAMBDA_TASK_ROOT"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_REGION", REGION)
        try:
            with mock_aws():
                yield patch
        finally:
            package_logger.handlers = saved[0]
            package_logger.propagate = saved[1]
            package_logger.setLevel(saved[2])


@pytest.fixture(scope="module")
def endpoint_model_id(sagemaker_endpoint, aws_mock) -> str:
    """The model id the packaged tiny CLIP reports (what the stack puts in CLIPSEARCH_MODEL)."""
    from clipsearch.encoders.sagemaker import SageMakerEncoder

    sagemaker_endpoint.clear_faults()
    probe = SageMakerEncoder(sagemaker_endpoint.endpoint_name,
                             endpoint_url=sagemaker_endpoint.url, region_name=REGION)
    return probe.model_id


def demo_catalog_records(world: World, demo_products: list[Any]) -> list[dict[str, Any]]:
    """The demo catalog as it would sit in catalog/: images referenced three ways."""
    records = []
    for i, product in enumerate(demo_products):
        name = Path(product.image).name
        image = (f"s3://{world.bucket}/images/{name}", f"../images/{name}",
                 f"images/{name}")[i % 3]
        records.append({"id": product.id, "title": product.title, "image": image,
                        "attributes": dict(product.attributes)})
    return records


def ingest_demo(world: World, ingest: ModuleType, demo_products: list[Any]) -> list[DrainReport]:
    """Half the images, then the catalog, then the other half: every path of the ingest."""
    reports = []
    half = len(demo_products) // 2
    for product in demo_products[:half]:
        world.put(f"images/{Path(product.image).name}", Path(product.image).read_bytes())
    reports.append(drain(world, ingest))
    world.put("catalog/demo.jsonl", jsonl(demo_catalog_records(world, demo_products)))
    reports.append(drain(world, ingest))
    for product in demo_products[half:]:
        world.put(f"images/{Path(product.image).name}", Path(product.image).read_bytes())
    reports.append(drain(world, ingest))
    return reports
