"""The query Lambda: parity with the local server, bad requests, faults, CORS, metrics.

The data is the demo catalog, loaded through the ingest Lambda into the real
OpenSearch node (see tests/lambda_support.py); queries are encoded by the
endpoint emulator through boto3.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from clipsearch import config
from tests import api_cases
from tests.fault_proxy import FaultProxy
from tests.lambda_support import (
    ROOT,
    LambdaContext,
    api_event,
    aws_mock,  # noqa: F401  (fixture)
    call,
    endpoint_model_id,  # noqa: F401  (fixture)
    ingest_demo,
    load_handler,
    make_world,
)


@pytest.fixture(scope="module")
def world(aws_mock, opensearch_url, sagemaker_endpoint, endpoint_model_id, demo_products):  # noqa: F811
    world = make_world(opensearch_url, sagemaker_endpoint, endpoint_model_id)
    for name, value in world.env.items():
        aws_mock.setenv(name, value)
    world.query = load_handler("query")
    reports = ingest_demo(world, load_handler("ingest"), demo_products)
    assert all(not r.failed for r in reports)
    return world


@pytest.fixture
def endpoint(sagemaker_endpoint):
    sagemaker_endpoint.clear_faults()
    sagemaker_endpoint.requests.clear()
    yield sagemaker_endpoint
    sagemaker_endpoint.clear_faults()


def runtime_calls(endpoint) -> int:
    return sum(1 for r in endpoint.requests if r.path.startswith("/endpoints/"))


def lambda_request(world, case: api_cases.Case) -> tuple[int, dict[str, str], dict]:
    return call(world.query, api_event(case.method, case.path, case.query or None, case.body))


# --------------------------------------------------------------------------- parity


def _image_target(body, key: str | None = None):
    """Presigned URLs (`image`, and each of `images`) carry a signature and timestamp:
    compare what they point at."""
    if isinstance(body, dict):
        return {k: _image_target(v, k) for k, v in body.items()}
    if isinstance(body, list):
        return [_image_target(v, key) for v in body]
    if key in ("image", "images") and isinstance(body, str) and "?" in body:
        return urlsplit(body).path
    return body


def test_local_server_and_query_lambda_answer_identically(world, demo_products, endpoint,
                                                          endpoint_model_id):  # noqa: F811
    """Same requests, same data, two front doors: same status, headers that matter, JSON."""
    from fastapi.testclient import TestClient

    from clipsearch.aws.clients import s3_client
    from clipsearch.aws.s3 import Presigner
    from clipsearch.encoders.sagemaker import SageMakerEncoder
    from clipsearch.index.opensearch import OpenSearchIndex
    from clipsearch.server import create_app
    from clipsearch.service import SearchService

    env = world.env
    # The server side is built the way a local deployment would be: its own
    # encoder, index and presigner over the same endpoint, alias and bucket.
    service = SearchService(
        SageMakerEncoder(env["CLIPSEARCH_SAGEMAKER_ENDPOINT"],
                         endpoint_url=env["CLIPSEARCH_SAGEMAKER_ENDPOINT_URL"],
                         model_id=endpoint_model_id),
        OpenSearchIndex.from_url(env["CLIPSEARCH_OPENSEARCH_URL"], alias=world.alias))
    presigner = Presigner(s3_client(), world.bucket, images_prefix="images/", ttl=120)
    cases = api_cases.cases(demo_products)
    assert len(cases) >= 25
    with TestClient(create_app(service, image_url=presigner),
                        base_url="http://127.0.0.1") as client:
        for case in cases:
            status, headers, body = lambda_request(world, case)
            served = client.request(case.method, case.path, params=case.query or None,
                                    content=case.body,
                                    headers={"Content-Type": "application/json"}
                                    if case.body else None)
            assert status == served.status_code == case.status, case.name
            assert body.get("error") == case.error, (case.name, body)
            assert _image_target(api_cases.comparable(body)) == \
                _image_target(api_cases.comparable(served.json())), case.name
            for header in ("Retry-After", "Allow", "Content-Type"):
                assert headers.get(header) == served.headers.get(header), (case.name, header)
            if status == 200 and "results" in body:
                for result in body["results"]:
                    if result["image"]:
                        assert "X-Amz-Signature=" in result["image"]


# --------------------------------------------------------------------------- bad requests

HUGE_B64 = base64.b64encode(b'{"text": "' + b"a" * (config.MAX_REQUEST_BYTES + 10) + b'"}')


def _bad_requests(demo_products) -> list[tuple[str, dict, int, str | None]]:
    """(name, event, status, field) beyond the shared cases: what only a Lambda can be sent."""
    pid = demo_products[2].id

    def post(body, **kwargs):
        return api_event("POST", "/search", body=json.dumps(body), **kwargs)

    return [
        ("body marked base64 but is not",
         {**api_event("POST", "/search", body="{}"), "body": "%%%", "isBase64Encoded": True},
         400, "body"),
        ("huge base64 body", {**api_event("POST", "/search", body="{}"),
                              "body": HUGE_B64.decode(), "isBase64Encoded": True}, 413, "body"),
        ("declared length over the limit",
         api_event("POST", "/search", body='{"text": "red"}',
                   headers={"Content-Length": str(10 * 1024 * 1024)}), 413, "body"),
        ("image_s3_key outside images/", post({"image_s3_key": "catalog/demo.jsonl"}), 400,
         "image_s3_key"),
        ("image_s3_key escaping images/", post({"image_s3_key": "images/../catalog/demo.jsonl"}),
         400, "image_s3_key"),
        ("image_s3_key with no object", post({"image_s3_key": "images/no-such.png"}), 400,
         "image_s3_key"),
        ("image_s3_key in another bucket",
         post({"image_s3_key": "s3://someone-elses-bucket/images/a.png"}), 400, "image_s3_key"),
        ("image_s3_key empty", post({"image_s3_key": "  "}), 400, "image_s3_key"),
        ("image and image_s3_key", post({"image": api_cases.demo_image_b64(demo_products),
                                         "image_s3_key": "images/a.png"}), 400, "image_s3_key"),
        ("product_id with text", post({"product_id": pid, "text": "red"}), 400, "product_id"),
        ("unknown field", post({"text": "red", "colour": "red"}), 400, "colour"),
        ("text not a string", post({"text": 42}), 400, "text"),
        ("k not a number", api_event("GET", "/search", {"q": "red", "k": "ten"}), 400, "k"),
        ("k a boolean", post({"text": "red", "k": True}), 400, "k"),
        ("negative offset", post({"text": "red", "offset": -1}), 400, "offset"),
        ("min_score out of range", post({"text": "red", "min_score": 2}), 400, "min_score"),
        ("negative weight", post({"text": "red", "image_s3_key": "images/x.png",
                                  "weights": {"text": -1}}), 400, "weights.text"),
        ("weights both zero", post({"text": "red", "image_s3_key": "images/x.png",
                                    "weights": {"text": 0, "image": 0}}), 400, "weights"),
        ("filters not an object", post({"text": "red", "filters": ["red"]}), 400, "filters"),
        ("GET /search without q", api_event("GET", "/search"), 400, "q"),
        ("body JSON null", api_event("POST", "/search", body="null"), 400, "body"),
        ("query parameter on /health", api_event("GET", "/health", {"verbose": "1"}), 400,
         "verbose"),
        ("q on similar", api_event("GET", f"/products/{pid}/similar", {"q": "red"}), 400, "q"),
        ("product id with bad characters", api_event("GET", "/products/bad id!"), 400, "id"),
        ("PUT a product", api_event("PUT", f"/products/{pid}"), 405, None),
        ("data URL that is not base64", post({"image": "data:image/png;base64,@@@"}), 400,
         "image"),
    ]


def test_malformed_requests_get_a_4xx_with_a_clear_message_never_a_5xx(world, demo_products,
                                                                         endpoint):
    table = [(c.name, api_event(c.method, c.path, c.query or None, c.body), c.status, None)
             for c in api_cases.cases(demo_products) if c.status >= 400]
    table += _bad_requests(demo_products)
    assert len(table) >= 25
    for name, event, status, field in table:
        response = world.query.handler(event, LambdaContext("clipsearch-query"))
        body = json.loads(response["body"])
        assert 400 <= response["statusCode"] < 500, (name, response["statusCode"], body)
        assert response["statusCode"] == status, (name, body)
        assert set(body) == {"error", "message", "field"}, name
        assert isinstance(body["message"], str) and len(body["message"]) > 10, name
        assert "Traceback" not in response["body"] and 'File "' not in response["body"], name
        if field is not None:
            assert body["field"] == field, (name, body)


# --------------------------------------------------------------------------- faults


def test_endpoint_throttling_is_retried_then_answered_503_with_retry_after(world, endpoint,
                                                                           caplog):
    endpoint.inject("throttle", times=None)
    status, headers, body = call(world.query, api_event("POST", "/search",
                                                        body='{"text": "red circle"}'))
    assert status == 503
    # The endpoint's name and the throttling detail go to the log, not to the client (#18).
    assert body["error"] == "service_unavailable" and "SageMaker" not in body["message"]
    assert "SageMaker endpoint" in caplog.text
    assert int(headers["Retry-After"]) >= 1
    assert runtime_calls(endpoint) == 3  # CLIPSEARCH_ENCODER_MAX_ATTEMPTS
    # Catalog reads need no encoding and keep working meanwhile.
    status, _, _ = call(world.query, api_event("GET", "/health"))
    assert status == 200


def test_a_cold_endpoint_is_waited_out(world, endpoint):
    endpoint.inject("cold_start", times=2)
    status, _, body = call(world.query, api_event("GET", "/search", {"q": "blue rug"}))
    assert status == 200 and body["results"]
    assert runtime_calls(endpoint) == 3


def test_opensearch_429_is_retried_and_persistent_429_is_a_503(world, opensearch_url,
                                                               monkeypatch, endpoint, caplog):
    with FaultProxy(opensearch_url) as proxy:
        monkeypatch.setenv("CLIPSEARCH_OPENSEARCH_URL", proxy.url)
        query = load_handler("query")
        assert call(query, api_event("GET", "/health"))[0] == 200  # warm up the container
        # A text query is hybrid: its k-NN and lexical queries go in one _msearch.
        proxy.faults["_msearch"] = [429]
        status, _, body = call(query, api_event("GET", "/search", {"q": "red circle"}))
        assert status == 200 and body["results"]
        assert proxy.hits["_msearch"] == 2  # one throttled, one retried
        proxy.faults["_msearch"] = [429] * 10
        status, headers, body = call(query, api_event("GET", "/search", {"q": "red circle"}))
        assert status == 503 and "Retry-After" in headers
        assert body["error"] == "service_unavailable" and "429" not in body["message"]
        host = opensearch_url.split("//")[1].split(":")[0]
        assert host not in json.dumps(body) and "429" in caplog.text


def test_a_bug_becomes_an_opaque_500_without_internals(world, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail /var/task/handler.py")

    monkeypatch.setattr(world.query.api, "handle", broken)
    status, _, body = call(world.query, api_event("GET", "/health"))
    assert status == 500
    assert body == {"error": "internal_error", "message": "internal server error",
                    "field": None}


def test_missing_configuration_is_a_500_naming_the_variable(world, monkeypatch, caplog):
    monkeypatch.delenv("CLIPSEARCH_BUCKET")
    query = load_handler("query")
    status, _, body = call(query, api_event("GET", "/health"))
    assert status == 500
    # The operator reads the variable's name in the log; the client learns only the class.
    assert body["error"] == "configuration_error" and "log" in body["message"]
    assert "CLIPSEARCH_BUCKET" in caplog.text


# --------------------------------------------------------------------------- HTTP details


def test_base64_bodies_and_custom_domain_base_paths_route_like_any_other(world):
    body = json.dumps({"text": "red circle", "k": 3})
    plain = call(world.query, api_event("POST", "/search", body=body))
    encoded = call(world.query, api_event("POST", "/search", body=body, base64_body=True))
    based = api_event("POST", "/search", body=body)
    based["path"] = "/shop/search"  # a custom domain with base path "shop"
    with_base = call(world.query, based)
    ids = [[r["id"] for r in answer[2]["results"]] for answer in (plain, encoded, with_base)]
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 3


def test_cors_headers_follow_the_allowed_origins(world, monkeypatch):
    allowed = api_event("GET", "/health", headers={"Origin": "https://shop.example.com"})
    _, headers, _ = call(world.query, allowed)
    assert headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
    assert headers["Vary"] == "Origin" and "Retry-After" in headers[
        "Access-Control-Expose-Headers"]
    _, headers, _ = call(world.query, api_event("GET", "/health",
                                                headers={"Origin": "https://evil.example"}))
    assert "Access-Control-Allow-Origin" not in headers
    monkeypatch.setenv("CLIPSEARCH_CORS_ALLOW_ORIGINS", "*")
    _, headers, _ = call(load_handler("query"), api_event("GET", "/health"))
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_metrics_report_latency_result_count_and_errors(world, capsys):
    capsys.readouterr()
    call(world.query, api_event("GET", "/search", {"q": "red circle", "k": "4"}))
    call(world.query, api_event("GET", "/products/no-such-product"))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith('{"_aws"')]
    search = next(m for m in lines if m.get("route") == "/search")
    assert search["Results"] == [4.0] and search["Latency"][0] > 0
    assert search["ClientErrors"] == [0.0] and search["ServerErrors"] == [0.0]
    missing = next(m for m in lines if m.get("route") == "/products/{id}")
    assert missing["ClientErrors"] == [1.0]


def test_logs_carry_the_api_gateway_request_id_as_correlation_id(world, capsys, monkeypatch):
    # A service name of its own: Powertools configures a logger once per service
    # name, and this test wants one at INFO writing to this test's captured stdout.
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "clipsearch-query-logs")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    query = load_handler("query")
    event = api_event("GET", "/health")
    capsys.readouterr()
    call(query, event)
    logs = [json.loads(line) for line in capsys.readouterr().out.splitlines()
            if line.startswith("{") and '"level"' in line]
    served = next(entry for entry in logs if entry["message"] == "request served")
    assert served["correlation_id"] == event["requestContext"]["requestId"]
    assert served["status"] == 200 and served["route"] == "/health"


# --------------------------------------------------------------------------- packaging


def test_handlers_import_and_answer_without_torch_transformers_or_pil(tmp_path):
    """The Lambda bundle has no torch, transformers or PIL: prove the handlers never need them."""
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        BLOCKED = {{"torch", "torchvision", "transformers", "PIL", "faiss"}}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked in this test: " + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(ROOT)!r})
        modules = {{}}
        for name in ("query", "ingest"):
            spec = importlib.util.spec_from_file_location(
                "h_" + name, {str(ROOT)!r} + "/lambda/" + name + "/handler.py")
            modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[name])
        event = {{"resource": "/health", "path": "/health", "httpMethod": "GET",
                  "headers": None, "queryStringParameters": None, "body": None,
                  "requestContext": {{"requestId": "r-1"}}}}
        class Context:
            function_name = "q"; memory_limit_in_mb = 512; aws_request_id = "r-1"
            invoked_function_arn = "arn:aws:lambda:us-east-1:1:function:q"
        answer = modules["query"].handler(event, Context())
        print(json.dumps({{"status": answer["statusCode"], "body": json.loads(answer["body"]),
                          "loaded": sorted(m for m in sys.modules
                                           if m.split(".")[0] in BLOCKED)}}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env["POWERTOOLS_METRICS_NAMESPACE"] = "clipsearch"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["loaded"] == []
    # No configuration in that process: a clear 500, not an ImportError.
    assert answer["status"] == 500 and answer["body"]["error"] == "configuration_error"


def test_settings_reject_impossible_values():
    from clipsearch.aws.settings import LambdaSettings
    from clipsearch.errors import ConfigurationError

    base = {"CLIPSEARCH_BUCKET": "b", "CLIPSEARCH_SAGEMAKER_ENDPOINT": "e",
            "CLIPSEARCH_OPENSEARCH_URL": "search-x.us-east-1.es.amazonaws.com"}
    settings = LambdaSettings.from_env(base)
    assert settings.opensearch_url == "https://search-x.us-east-1.es.amazonaws.com"
    assert settings.opensearch_sigv4 is True  # an AWS domain: requests are signed
    assert LambdaSettings.from_env({**base, "CLIPSEARCH_OPENSEARCH_URL": "http://127.0.0.1:9200"}
                                   ).opensearch_sigv4 is False
    for name, value in (("CLIPSEARCH_IMAGE_URL_TTL", "0"), ("CLIPSEARCH_IMAGE_URL_TTL", "x"),
                        ("CLIPSEARCH_OPENSEARCH_SIGV4", "maybe"),
                        ("CLIPSEARCH_IMAGES_PREFIX", "../up")):
        with pytest.raises(ConfigurationError, match=name):
            LambdaSettings.from_env({**base, name: value})


def test_presigned_urls_only_for_images_in_the_bucket(aws_mock):  # noqa: F811
    from clipsearch.aws.clients import s3_client
    from clipsearch.aws.s3 import Presigner
    from clipsearch.catalog import Product

    sign = Presigner(s3_client(region_name="eu-west-1"), "shop", images_prefix="images/",
                     ttl=60)
    url = sign(Product("p", "P", "s3://shop/images/a b.png"))
    parts = urlsplit(url)
    assert parts.path.endswith("/images/a%20b.png") and "X-Amz-Expires=60" in parts.query
    # SigV4 with the bucket's region in the scope: SigV2 URLs fail in newer regions.
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in parts.query
    assert "eu-west-1%2Fs3%2Faws4_request" in parts.query
    assert sign(Product("p", "P", "images/c.png")).split("?")[0].endswith("images/c.png")
    assert sign(Product("p", "P", "https://cdn.example/x.jpg")) == "https://cdn.example/x.jpg"
    for image in ("s3://other/images/a.png", "s3://shop/catalog/a.jsonl", "images/../x.png",
                  None, Path("/tmp/a.png").as_posix()):
        assert sign(Product("p", "P", image)) is None, image


def test_query_cache_is_on_by_default_and_counted_in_metrics(world, endpoint, monkeypatch,
                                                             capsys):
    monkeypatch.delenv("CLIPSEARCH_QUERY_CACHE_ENTRIES")
    query = load_handler("query")
    event = api_event("GET", "/search", {"q": "striped cushion", "k": "3"})
    capsys.readouterr()
    first = call(query, event)
    calls = runtime_calls(endpoint)
    second = call(query, event)
    def unsigned(results):  # presigned image URLs carry the second they were signed in
        return [{k: v for k, v in r.items() if k != "image"} for r in results]

    assert first[0] == second[0] == 200
    assert unsigned(first[2]["results"]) == unsigned(second[2]["results"])
    assert runtime_calls(endpoint) == calls  # the repeat never reached SageMaker
    lines = [m for m in (json.loads(line) for line in capsys.readouterr().out.splitlines()
                         if line.startswith('{"_aws"')) if m.get("route") == "/search"]
    assert [(m["QueryCacheHits"], m["QueryCacheMisses"]) for m in lines] == \
        [([0.0], [1.0]), ([1.0], [0.0])]
    health = call(query, api_event("GET", "/health"))[2]["query_cache"]
    assert health["hits"] == 1 and health["misses"] == 1
