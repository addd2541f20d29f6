"""Hostile and broken input through the AWS interfaces (issue #18).

The endpoint handler (the packaged inference.py, in the emulator), the
SageMaker encoder, the SQS/S3 event parser, the ingest Lambda and the query
Lambda, with the same input classes as tests/test_hostile_local.py. The
query Lambda shares the router with the local server; what differs is the
gateway event (strings that are already decoded, base64 bodies) and its
serialisation, so those are exercised here.
"""

from __future__ import annotations

import base64
import json

import pytest

from clipsearch.aws.events import parse_sqs_event
from clipsearch.errors import InvalidImageError
from clipsearch.sagemaker import protocol as wire
from tests import hostile
from tests.lambda_support import (
    LambdaContext,
    api_event,
    aws_mock,  # noqa: F401  (fixture)
    drain,
    endpoint_model_id,  # noqa: F401  (fixture)
    jsonl,
    load_handler,
    make_world,
    png,
    sqs_event,
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------------ endpoint handler


def _lines(handler, body: bytes) -> list[dict]:
    result = handler.invoke(body, wire.JSONLINES, wire.JSONLINES)
    assert result.status == 200, result.body[:300]
    return [json.loads(line) for line in result.body.decode().splitlines() if line.strip()]


def test_jsonlines_bad_records_fail_alone_with_tagged_errors(sagemaker_endpoint):
    handler = sagemaker_endpoint.handler
    good = {"id": "good", "image": _b64(hostile.png())}
    bad = [{"id": f"img-{name}", "image": _b64(make())}
           for name, make in hostile.UNDECODABLE.items()]
    raw_lines = [json.dumps(good), *map(json.dumps, bad),
                 hostile.deep_json(100_000), '{"id": "nan", "text": NaN}',
                 '{"id": 1e999, "text": "x"}', '{"id": "s", "text": "\\ud800"}',
                 '{"id": "n", "text": "shoe", "extra": ' + "1" * 400 + "}",
                 json.dumps({"id": "t", "text": "red shoe"})]
    answers = _lines(handler, ("\n".join(raw_lines) + "\n").encode())
    assert len(answers) == len(raw_lines)
    assert "embedding" in answers[0] and "embedding" in answers[-1]
    for answer in answers[1:-1]:
        assert "embedding" not in answer and set(answer["error"]) == {"error", "message",
                                                                      "field"}
    codes = {a["id"]: a["error"]["error"] for a in answers[1:1 + len(bad)]}
    assert set(codes.values()) == {"invalid_image"}, codes


def test_json_requests_with_hostile_input_are_tagged_client_errors(sagemaker_endpoint):
    handler = sagemaker_endpoint.handler
    cases = [json.dumps({"images": [_b64(hostile.dds())]}).encode(),
             json.dumps({"images": [_b64(hostile.strip_png(20_000, 1))]}).encode(),
             hostile.deep_json(100_000).encode(), b'{"texts": ["\\ud800"]}',
             b'{"texts": ["x"], "apply_template": NaN}', b'{"texts": [' + b"1" * 500 + b"]}"]
    for body in cases:
        result = handler.invoke(body, wire.JSON, wire.JSON)
        assert result.status == 400
        error = wire.decode_client_error(result.body.decode())
        assert error is not None and error.status == 400, result.body[:300]
    single = handler.invoke(hostile.dds(), wire.X_IMAGE, wire.JSON)
    assert isinstance(wire.decode_client_error(single.body.decode()), InvalidImageError)


def test_the_encoder_isolates_bad_images_even_when_the_endpoint_fails_a_whole_request(
        sagemaker_endpoint, monkeypatch):
    from clipsearch.encoders.sagemaker import SageMakerEncoder

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)  # the emulator checks no signature
    encoder = SageMakerEncoder(sagemaker_endpoint.endpoint_name,
                               endpoint_url=sagemaker_endpoint.url, region_name="us-east-1")
    images = [hostile.png(), hostile.dds(), hostile.png(color=(0, 0, 200)),
              hostile.strip_png(20_000, 1)]
    results = encoder.encode_images_each(images)
    assert [type(r).__name__ for r in results] == ["ndarray", "InvalidImageError", "ndarray",
                                                   "InvalidImageError"]
    # An endpoint that fails any multi-record request as a whole (an untagged 400):
    # each record is retried alone, so only the bad one fails.
    module = sagemaker_endpoint.handler.module
    real = module.predict_fn

    def fragile(data, model):
        if data.kind == "lines" and len(data.records) > 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(data, model)

    monkeypatch.setattr(module, "predict_fn", fragile)
    results = encoder.encode_images_each(images)
    assert [type(r).__name__ for r in results] == ["ndarray", "InvalidImageError", "ndarray",
                                                   "InvalidImageError"]


# ------------------------------------------------------------------------------ SQS events


def _record(message_id: str, body: str) -> dict:
    return {"messageId": message_id, "body": body, "attributes": {}}


def _s3(key: str) -> str:
    return json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                    "s3": {"bucket": {"name": "b"}, "object": {"key": key}}}]})


@pytest.mark.parametrize("body", [
    hostile.deep_json(100_000), hostile.deep_json(5_000, "{"),
    '{"Records": [{"eventSource": "aws:s3", "eventName": "x", "s3": ' + hostile.deep_json(40)
    + "}]}",
    '{"Records": NaN}', '{"Records": [], "n": ' + "9" * 400 + "}",
    _s3("images/%ED%A0%80.png"), _s3("images/\ud800.png").replace("\ud800", "\\ud800"),
    _s3("images/a%00b.png"),
    json.dumps({"Type": "Notification", "Message": hostile.deep_json(1000)}),
    json.dumps({"source": "aws.s3", "detail": {"bucket": {"name": "b"},
                                              "object": {"key": 5}}}),
])
def test_hostile_event_bodies_are_one_poison_message_each(body):
    event = {"Records": [_record("ok", _s3("images/fine.png")), _record("bad", body),
                         _record("ok2", _s3("images/caf%C3%A9+2.png"))]}
    messages, problems = parse_sqs_event(event)
    assert not problems
    by_id = {m.message_id: m for m in messages}
    assert by_id["bad"].problem, body[:80]
    assert by_id["ok"].objects[0].key == "images/fine.png"
    assert by_id["ok2"].objects[0].key == "images/café 2.png"


# ------------------------------------------------------------------------------ ingest Lambda


@pytest.fixture(scope="module")
def world(aws_mock, opensearch_url, sagemaker_endpoint, endpoint_model_id):  # noqa: F811
    world = make_world(opensearch_url, sagemaker_endpoint, endpoint_model_id,
                       max_receive_count=5)
    for name, value in world.env.items():
        aws_mock.setenv(name, value)
    world.ingest = load_handler("ingest")
    world.query = load_handler("query")
    drain(world, world.ingest)  # the s3:TestEvent
    return world


@pytest.mark.slow
def test_ingest_lambda_fails_only_the_messages_of_bad_images_and_lines(world):
    names = ["dds-unimplemented", "strip-20000x1", "eps", "truncated-png"]
    records = [{"id": f"g{i}", "title": f"good {i}", "image": f"g{i}.png",
                "attributes": {"price": float(i)}} for i in range(3)]
    records += [{"id": f"b{i}", "title": name, "image": f"{name}.img"}
                for i, name in enumerate(names)]
    catalog = jsonl(records)
    catalog += b'{"id": "x1", "title": "t", "attributes": {"price": 1e999}}\n'
    catalog += hostile.deep_json(100_000).encode() + b"\n"
    catalog += b'{"id": "x2", "title": "\\ud800"}\n\xff\xfe not utf-8\n'
    world.put("catalog/hostile.jsonl", catalog)
    assert not drain(world, world.ingest).failed  # bad lines are reported, not fatal
    for i in range(3):
        world.put(f"images/g{i}.png", png((60 * i, 100, 200), seed=i))
    for name in names:
        world.put(f"images/{name}.img", hostile.UNDECODABLE[name]())
    messages = []
    for _ in range(10):
        messages += world.receive(10)
        if len(messages) >= 3 + len(names):
            break
    response = world.ingest.handler(sqs_event(world, messages), LambdaContext())
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    keys = {m["MessageId"]: json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"]
            for m in messages}
    assert {keys[mid] for mid in failed} == {f"images%2F{name}.img" for name in names}
    world.refresh()
    from tests.lambda_support import index_state

    # The products of the undecodable images stay findable by their titles: no image vector.
    state = index_state(world.opensearch, world.alias)
    assert {pid: [v["key"].rsplit("/", 1)[-1] for v in doc["vectors"]]
            for pid, doc in state.items()} == {
        **{f"g{i}": [f"g{i}.png", "title"] for i in range(3)},
        **{f"b{i}": ["title"] for i in range(len(names))}}


# ------------------------------------------------------------------------------ query Lambda


def _query(world, event) -> tuple[int, dict, dict]:
    response = world.query.handler(event, LambdaContext("clipsearch-query"))
    body = json.loads(response["body"])  # always JSON, always UTF-8
    response["body"].encode("utf-8")
    return response["statusCode"], response["headers"], body


@pytest.mark.slow
def test_query_lambda_answers_hostile_requests_with_4xx_and_cors(world):
    origin = {"Origin": "https://shop.example.com"}
    events = [
        api_event("GET", "/search", {"q": "\ud800"}, headers=origin),
        api_event("GET", "/search", {"q": "x", "filters": json.dumps({"\ud800": 1})},
                  headers=origin),
        api_event("GET", "/search", {"q": "x", "filters": hostile.deep_json(100_000)},
                  headers=origin),
        api_event("GET", "/products/\ud800", headers=origin),
        api_event("POST", "/search", body=hostile.deep_json(100_000), headers=origin),
        api_event("POST", "/search", body='{"text": "\\ud800"}', headers=origin),
        api_event("POST", "/search", body='{"text": "x", "k": 1e999}', headers=origin),
        api_event("POST", "/search", body=json.dumps({"image": _b64(hostile.dds())}),
                  headers=origin),
        api_event("POST", "/search",
                  body=json.dumps({"image": _b64(hostile.strip_png(20_000, 1))}),
                  headers=origin),
        api_event("POST", "/search", body=json.dumps({"image_s3_key": "images/\ud800.png"}),
                  headers=origin),
    ]
    raw = api_event("POST", "/search", headers=origin)
    raw["body"] = '{"text": "\ud800"}'  # a str the runtime decoded, lone surrogate included
    events.append(raw)
    for event in events:
        status, headers, body = _query(world, event)
        assert 400 <= status < 500, (event["path"], status, body)
        assert headers.get("Access-Control-Allow-Origin") == "https://shop.example.com"
        assert set(body) == {"error", "message", "field"}
