"""The ingest Lambda under faults: corrupt images, rejected documents, poison messages,
redelivery, throttling (endpoint and OpenSearch), time running out, bad catalog lines.

Each test gets its own bucket, queue (with the stack's redrive policy to a DLQ)
and index alias; S3 notifications come from moto's S3. See tests/lambda_support.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

import clipsearch.deadline
from clipsearch.aws.events import parse_sqs_event, parse_sqs_record
from clipsearch.aws.s3 import resolve_image_key
from tests.fault_proxy import FaultProxy
from tests.lambda_support import (
    LambdaContext,
    aws_mock,  # noqa: F401  (fixture)
    drain,
    endpoint_model_id,  # noqa: F401  (fixture)
    index_state,
    iter_failures,
    jsonl,
    load_handler,
    make_world,
    png,
    sqs_event,
)

COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220),
          (220, 30, 220), (120, 60, 20), (250, 150, 0), (90, 90, 90), (250, 250, 250),
          (10, 10, 10), (150, 0, 90)]


@pytest.fixture
def endpoint(sagemaker_endpoint):
    sagemaker_endpoint.clear_faults()
    sagemaker_endpoint.requests.clear()
    yield sagemaker_endpoint
    sagemaker_endpoint.clear_faults()


@pytest.fixture
def new_world(aws_mock, opensearch_url, endpoint, endpoint_model_id, monkeypatch):  # noqa: F811
    """A factory: a fresh world with its env applied and a cold ingest handler."""

    def make(**kwargs):
        world = make_world(opensearch_url, endpoint, endpoint_model_id, **kwargs)
        for name, value in world.env.items():
            monkeypatch.setenv(name, value)
        world.ingest = load_handler("ingest")
        drain(world, world.ingest)  # the s3:TestEvent from configuring notifications
        return world

    return make


def products(n: int, prefix: str = "p", **attributes) -> list[dict]:
    return [{"id": f"{prefix}{i}", "title": f"Product {prefix}{i}", "image": f"{prefix}{i}.png",
             "attributes": {"price": float(i + 1), "color": f"c{i % 3}", **attributes}}
            for i in range(n)]


def receive_all(world, expected: int) -> list[dict]:
    messages: list[dict] = []
    for _ in range(10):
        messages += world.receive(10)
        if len(messages) >= expected:
            break
    assert len(messages) == expected, [m["Body"][:80] for m in messages]
    return messages


def body_key(message: dict) -> str:
    return json.loads(message["Body"])["Records"][0]["s3"]["object"]["key"]


def images_of(state: dict[str, dict]) -> dict[str, list[str]]:
    """Product id -> the keys of its image vectors (a title vector is always there)."""
    out = {}
    for pid, doc in state.items():
        keys = [v["key"] for v in doc["vectors"]]
        assert keys.count("title") == 1, (pid, keys)
        out[pid] = [k.rsplit("/", 1)[-1] for k in keys if k.startswith("image:")]
    return out


def test_one_corrupt_image_in_a_batch_of_ten(new_world, endpoint):
    world = new_world(max_receive_count=3)
    world.put("catalog/shop.jsonl", jsonl(products(10)))
    # No image yet: each product is indexed by its title meanwhile.
    assert not drain(world, world.ingest).failed
    assert images_of(index_state(world.opensearch, world.alias)) == {
        f"p{i}": [] for i in range(10)}
    for i in range(10):
        data = b"these bytes are not an image" if i == 6 else png(COLORS[i], seed=i)
        world.put(f"images/p{i}.png", data)
    batch = receive_all(world, 10)
    response = world.ingest.handler(sqs_event(world, batch), LambdaContext())
    corrupt = next(m["MessageId"] for m in batch if body_key(m) == "images%2Fp6.png")
    assert list(iter_failures(response)) == [corrupt]
    world.refresh()
    # The corrupt image left no vector; p6 stays findable by its title.
    assert images_of(index_state(world.opensearch, world.alias)) == {
        f"p{i}": [] if i == 6 else [f"p{i}.png"] for i in range(10)}
    # Redelivered until the redrive policy moves it to the DLQ; reported every time.
    for message in batch:
        if message["MessageId"] == corrupt:
            world.sqs.change_message_visibility(QueueUrl=world.queue_url,
                                                ReceiptHandle=message["ReceiptHandle"],
                                                VisibilityTimeout=0)
        else:
            world.sqs.delete_message(QueueUrl=world.queue_url,
                                     ReceiptHandle=message["ReceiptHandle"])
    report = drain(world, world.ingest)
    assert report.failed == [corrupt] * (world.max_receive_count - 1)
    (dead,) = world.dead_letters()
    assert dead["MessageId"] == corrupt


def test_the_same_batches_delivered_twice_or_reordered_give_the_same_index(new_world):
    world = new_world()
    world.put("catalog/shop.jsonl", jsonl(products(6)))
    for i in range(6):
        world.put(f"images/p{i}.png", png(COLORS[i], seed=i))
    world.put("catalog/more.jsonl", jsonl(products(3, prefix="m")))
    for i in range(3):
        world.put(f"images/m{i}.png", png(COLORS[6 + i], seed=10 + i))
    world.delete("images/p5.png")
    messages = receive_all(world, 12)
    batches = [messages[:5], messages[5:]]
    for batch in batches:
        assert not list(iter_failures(world.ingest.handler(sqs_event(world, batch),
                                                           LambdaContext())))
    first = index_state(world.opensearch, world.alias)
    # p5's image was deleted: p5 is there by its title only.
    assert images_of(first) == {**{f"p{i}": [f"p{i}.png"] for i in range(5)}, "p5": [],
                                **{f"m{i}": [f"m{i}.png"] for i in range(3)}}
    for batch in reversed(batches):  # redelivered, in the other order
        assert not list(iter_failures(world.ingest.handler(sqs_event(world, batch),
                                                           LambdaContext())))
    duplicated = sqs_event(world, messages[:3] + messages[:3])  # the same message twice
    assert not list(iter_failures(world.ingest.handler(duplicated, LambdaContext())))
    assert index_state(world.opensearch, world.alias) == first


def test_a_document_opensearch_rejects_fails_only_its_message(new_world):
    world = new_world(max_receive_count=2)
    world.put("catalog/a.jsonl", jsonl(products(3)))
    for i in range(3):
        world.put(f"images/p{i}.png", png(COLORS[i], seed=i))
    assert not drain(world, world.ingest).failed  # attributes.price is now a double
    world.put("images/odd.png", png(COLORS[5], seed=5))
    world.put("images/q0.png", png(COLORS[6], seed=6))
    world.put("images/q1.png", png(COLORS[7], seed=7))
    assert not drain(world, world.ingest).failed  # no catalog uses them yet
    odd = {"id": "odd", "title": "Priced in words", "image": "odd.png",
           "attributes": {"price": "cheap"}}
    world.put("catalog/b.jsonl", jsonl(products(2, prefix="q")))
    world.put("catalog/c.jsonl", jsonl([odd]))
    batch = receive_all(world, 2)
    response = world.ingest.handler(sqs_event(world, batch), LambdaContext())
    odd_message = next(m["MessageId"] for m in batch if body_key(m) == "catalog%2Fc.jsonl")
    assert list(iter_failures(response)) == [odd_message]
    world.refresh()
    assert images_of(index_state(world.opensearch, world.alias)) == {
        **{f"p{i}": [f"p{i}.png"] for i in range(3)},
        **{f"q{i}": [f"q{i}.png"] for i in range(2)}}


def test_poison_messages_are_reported_on_every_delivery_and_end_in_the_dlq(new_world):
    world = new_world(max_receive_count=3)
    other_bucket = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                 "s3": {"bucket": {"name": "someone-else"},
                                        "object": {"key": "images/x.png"}}}]}
    no_key = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                           "s3": {"bucket": {"name": world.bucket}, "object": {}}}]}
    poison = ["this is not JSON", json.dumps({"hello": "world"}), json.dumps(other_bucket),
              json.dumps(no_key), json.dumps([1, 2, 3])]
    for body in poison:
        world.sqs.send_message(QueueUrl=world.queue_url, MessageBody=body)
    world.sqs.send_message(QueueUrl=world.queue_url, MessageBody=json.dumps(
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": world.bucket}))
    report = drain(world, world.ingest)
    assert report.processed == 1  # the TestEvent, acknowledged
    assert len(report.failed) == len(poison) * (world.max_receive_count)
    assert sorted(m["Body"] for m in world.dead_letters()) == sorted(poison)


def test_a_malformed_sqs_event_fails_the_whole_invocation(new_world):
    world = new_world()
    with pytest.raises(RuntimeError, match="messageId"):
        world.ingest.handler({"Records": [{"body": "{}"}]}, LambdaContext())


def test_endpoint_throttling_fails_the_batch_and_redelivery_recovers(new_world, endpoint):
    world = new_world()
    world.put("catalog/shop.jsonl", jsonl(products(3)))
    assert not drain(world, world.ingest).failed  # indexed by title (one text request)
    endpoint.requests.clear()
    endpoint.inject("throttle", times=None)
    for i in range(3):
        world.put(f"images/p{i}.png", png(COLORS[i], seed=i))
    batch = receive_all(world, 3)
    response = world.ingest.handler(sqs_event(world, batch), LambdaContext())
    assert sorted(iter_failures(response)) == sorted(m["MessageId"] for m in batch)
    assert sum(r.path.startswith("/endpoints/") for r in endpoint.requests) == 3  # retried
    endpoint.clear_faults()
    response = world.ingest.handler(sqs_event(world, batch), LambdaContext())
    assert not list(iter_failures(response))
    world.refresh()
    assert sorted(index_state(world.opensearch, world.alias)) == ["p0", "p1", "p2"]


def test_opensearch_throttling_on_bulk_writes_is_retried(new_world, opensearch_url,
                                                         monkeypatch):
    with FaultProxy(opensearch_url) as proxy:
        monkeypatch.setenv("CLIPSEARCH_OPENSEARCH_URL", proxy.url)
        world = new_world()
        monkeypatch.setenv("CLIPSEARCH_OPENSEARCH_URL", proxy.url)
        world.ingest = load_handler("ingest")
        for i in range(4):
            world.put(f"images/p{i}.png", png(COLORS[i], seed=i))
        assert not drain(world, world.ingest).failed
        proxy.faults["_bulk"] = [429, 429]
        world.put("catalog/shop.jsonl", jsonl(products(4)))
        report = drain(world, world.ingest)
        assert not report.failed and report.invocations == 1
        assert proxy.hits["_bulk"] >= 3  # two throttled, then through
    assert sorted(index_state(world.opensearch, world.alias)) == ["p0", "p1", "p2", "p3"]


def test_a_catalog_too_big_for_one_invocation_finishes_over_redeliveries(new_world, endpoint,
                                                                         monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_INGEST_ENCODE_BATCH", "2")
    world = new_world()
    for i in range(6):
        world.put(f"images/p{i}.png", png(COLORS[i], seed=i))
    assert not drain(world, world.ingest).failed
    world.put("catalog/shop.jsonl", jsonl(products(6)))
    (message,) = receive_all(world, 1)
    endpoint.requests.clear()

    def clock() -> float:
        """Real time until the fourth encoder call, then 82 s later: 18 s of the 100 s
        are left, enough to write the second chunk but not to start a third (15 s
        margin + 1 s reserve + 3 s for the shortest encoder call). A chunk of two
        products is two calls: their images, then their titles."""
        calls = sum(r.path.startswith("/endpoints/") for r in endpoint.requests)
        return time.monotonic() + (0.0 if calls < 4 else 82.0)

    with monkeypatch.context() as patch:
        patch.setattr(clipsearch.deadline, "clock", clock)
        response = world.ingest.handler(sqs_event(world, [message]),
                                        LambdaContext(remaining_ms=100_000))
    assert list(iter_failures(response)) == [message["MessageId"]]
    world.refresh()
    done = index_state(world.opensearch, world.alias)
    assert len(done) == 4  # two chunks of two, then out of time
    first_calls = sum(r.path.startswith("/endpoints/") for r in endpoint.requests)
    response = world.ingest.handler(sqs_event(world, [message]), LambdaContext())
    assert not list(iter_failures(response))
    world.refresh()
    assert len(index_state(world.opensearch, world.alias)) == 6
    # The redelivery encoded only what was left: two images and two titles.
    assert sum(r.path.startswith("/endpoints/") for r in endpoint.requests) - first_calls == 2


# The slow-endpoint run: a 20 s invocation, each encoder call held 3 s by the proxy.
SLOW_BUDGET_S, SLOW_MARGIN_S, SLOW_DELAY_S, SLOW_IMAGES = 20, 4, 3.0, 6


def test_a_slow_endpoint_ends_the_invocation_in_time_failing_exactly_what_is_not_indexed(
        new_world, endpoint, monkeypatch):
    """Finding 4 of #12: encoder calls bounded by the time left.

    The arithmetic keeps the outcome's shape independent of the box's load. Each
    image is its own chunk and encoder call, held SLOW_DELAY_S by the proxy in
    front of the emulator. Encoder calls may use 20 - 1 (reserve) - 4 (margin)
    = 15 s, so at most 4 of the 6 can finish even with no overhead at all (the
    5th would start with at most 3 s, get a 1 s read timeout and be cut), while
    the first gets an 8 s read timeout for its 3 s answer: load would have to
    add 5 s to it before nothing is indexed. Every encoder call ends 5 s before
    the timeout and nothing after the last one waits on the network but a write
    (itself ending 1 s before), so returning late would take seconds of pure
    CPU work: the bound asserted is the timeout itself, with no tolerance.
    """
    monkeypatch.setenv("CLIPSEARCH_INGEST_ENCODE_BATCH", "1")
    monkeypatch.setenv("CLIPSEARCH_INGEST_TIME_MARGIN_S", str(SLOW_MARGIN_S))
    with FaultProxy(endpoint.url) as proxy:
        world = new_world()
        monkeypatch.setenv("CLIPSEARCH_SAGEMAKER_ENDPOINT_URL", proxy.url)
        world.ingest = load_handler("ingest")
        world.put("catalog/shop.jsonl", jsonl(products(SLOW_IMAGES)))
        # Warm (its clients are built); the products are indexed by title meanwhile.
        assert not drain(world, world.ingest).failed
        for i in range(SLOW_IMAGES):
            world.put(f"images/p{i}.png", png(COLORS[i], seed=i))
        batch = receive_all(world, SLOW_IMAGES)
        product_of = {m["MessageId"]: body_key(m).removeprefix("images%2F").removesuffix(
            ".png") for m in batch}
        proxy.delays["/invocations"] = SLOW_DELAY_S
        warm_calls = sum(1 for _, _, path in proxy.recorded if "/invocations" in path)

        started = time.monotonic()
        response = world.ingest.handler(sqs_event(world, batch),
                                        LambdaContext(remaining_ms=SLOW_BUDGET_S * 1000))
        elapsed = time.monotonic() - started
        calls = sum(1 for _, _, path in proxy.recorded if "/invocations" in path) - warm_calls
        print(f"slow endpoint: returned after {elapsed:.1f} s of {SLOW_BUDGET_S} s, "
              f"{len(list(iter_failures(response)))} of {SLOW_IMAGES} failed, {calls} calls")

        # Returned before the simulated timeout: every call was bounded.
        assert elapsed < SLOW_BUDGET_S, f"returned after {elapsed:.1f} s"
        failed = set(iter_failures(response))
        world.refresh()
        state = images_of(index_state(world.opensearch, world.alias))
        assert set(state) == set(product_of.values())
        indexed = {pid for pid, images in state.items() if images}
        # Exactly the messages whose image is not in the index, read back from the node.
        assert failed == {mid for mid, pid in product_of.items() if pid not in indexed}
        assert 1 <= len(indexed) <= 4, f"{len(indexed)} indexed in {elapsed:.1f} s"
        assert len(failed) == SLOW_IMAGES - len(indexed)
        # The chunks left when time ran out were never started: fewer calls than images.
        assert calls < SLOW_IMAGES

        # Redelivered with time to spare and a fast endpoint, the failed ones are indexed.
        proxy.delays.clear()
        redelivered = [m for m in batch if m["MessageId"] in failed]
        response = world.ingest.handler(sqs_event(world, redelivered), LambdaContext())
        assert not list(iter_failures(response))
        world.refresh()
        assert images_of(index_state(world.opensearch, world.alias)) == {
            pid: [f"{pid}.png"] for pid in product_of.values()}


def test_a_stalled_s3_read_is_given_up_at_the_deadline_and_fails_its_message(new_world,
                                                                              monkeypatch):
    """botocore's timeouts bound each socket read, not a whole GetObject with retries: the
    read is waited for only as long as the deadline allows, then its message fails."""
    monkeypatch.setenv("CLIPSEARCH_INGEST_TIME_MARGIN_S", "2")
    world = new_world()
    world.put("images/p0.png", png(COLORS[0], seed=0))
    assert not drain(world, world.ingest).failed  # warm: the ingestor is built
    bucket = world.ingest._ingestor.bucket
    release = threading.Event()
    real_get = bucket.get

    def stalled_get(key, **kwargs):
        if key.startswith("catalog/"):
            release.wait(60)  # a read that hangs (until the test ends)
        return real_get(key, **kwargs)

    bucket.get = stalled_get
    try:
        world.put("catalog/shop.jsonl", jsonl(products(1)))
        (message,) = receive_all(world, 1)
        started = time.monotonic()
        # 8 s: reads may take 8 - 1 - 2 (margin) = 5 s.
        response = world.ingest.handler(sqs_event(world, [message]),
                                        LambdaContext(remaining_ms=8_000))
        elapsed = time.monotonic() - started
    finally:
        bucket.get = real_get
        release.set()
    assert list(iter_failures(response)) == [message["MessageId"]]
    assert 4.5 < elapsed < 8.0, f"returned after {elapsed:.1f} s"
    assert not world.opensearch.indices.exists_alias(name=world.alias)  # nothing indexed


def test_bad_catalog_lines_are_skipped_and_reported_the_rest_is_indexed(new_world, capsys):
    world = new_world()
    good = products(2)
    good.append({"id": "spaced", "title": "Odd file name", "image": "red shoe+1.png"})
    lines = [json.dumps(r).encode() for r in good]
    lines += [b'{"id": "broken", "title": ', json.dumps({"id": "bad id!", "title": "x"}).encode(),
              json.dumps({"id": "web", "title": "Hosted", "image": "https://cdn.x/y.png"}).encode(),
              b'{"id": "latin1", "title": "caf\xe9"}']
    world.put("catalog/shop.jsonl", b"\n".join(lines) + b"\n")
    for i in range(2):
        world.put(f"images/p{i}.png", png(COLORS[i], seed=i))
    world.put("images/red shoe+1.png", png(COLORS[3], seed=3))
    capsys.readouterr()
    report = drain(world, world.ingest)
    assert not report.failed
    # "web"'s image cannot be read by the Lambda (a URL): it is found by its title.
    assert images_of(index_state(world.opensearch, world.alias)) == {
        "p0": ["p0.png"], "p1": ["p1.png"], "spaced": ["red shoe+1.png"], "web": []}
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines()
               if line.startswith('{"_aws"')]
    assert sum(m.get("CatalogRecordErrors", [0])[0] for m in metrics) == 4
    assert sum(m.get("ProductsIndexed", [0])[0] for m in metrics) == 4



def test_a_catalog_file_is_accounted_for_product_by_product(new_world, caplog):
    """indexed + waiting + failed == the products the file names, in the batch's log."""
    world = new_world(max_receive_count=5)
    for i in range(6):
        world.put(f"images/p{i}.png", b"not an image at all" if i == 5 else png(COLORS[i], seed=i))
    drain(world, world.ingest)  # images before their catalog: nothing to encode yet
    records = products(7)  # p6's image is never uploaded: it waits for it
    records.append({"id": "web", "title": "Hosted", "image": "https://cdn.example/y.png"})
    world.put("catalog/shop.jsonl", jsonl(records) + b'{"id": "broken", "title": \n')
    # The handler's log handlers depend on the test order: listen on the logger itself.
    logger = logging.getLogger("clipsearch.aws.ingest")
    logger.addHandler(caplog.handler)
    try:
        (message,) = receive_all(world, 1)
        response = world.ingest.handler(sqs_event(world, [message]), LambdaContext())
    finally:
        logger.removeHandler(caplog.handler)
    assert list(iter_failures(response)) == [message["MessageId"]]  # p5 is retried
    accounts = [r.catalog_accounts for r in caplog.records if hasattr(r, "catalog_accounts")]
    assert len(accounts) == 1
    catalog = accounts[0]
    assert catalog["products"] == 9
    assert (catalog["indexed"], catalog["waiting"], catalog["failed"]) == (5, 1, 3)
    assert catalog["indexed"] + catalog["waiting"] + catalog["failed"] == catalog["products"]
    failed = {item["id"]: item["reason"] for item in catalog["failed_items"]}
    assert set(failed) == {"p5", "web", "line 9"}
    assert "not a readable image" in failed["p5"]
    world.refresh()
    # Every product is searchable; those without a usable image by their title and words.
    assert images_of(index_state(world.opensearch, world.alias)) == {
        **{f"p{i}": [f"p{i}.png"] for i in range(5)}, "p5": [], "p6": [], "web": []}


def test_every_image_is_a_vector_and_a_removed_image_takes_only_its_own(new_world, endpoint):
    world = new_world()
    jar = {"id": "jar", "title": "Kilner jar", "description": "A glass preserving jar",
           "images": ["jar-front.png", "jar-side.png", "jar-top.png"],
           "attributes": {"price": 4.0}}
    cup = {"id": "cup", "title": "Cup", "image": "cup.png", "attributes": {"price": 2.0}}
    world.put("catalog/shop.jsonl", jsonl([jar, cup]))
    for i, name in enumerate(("jar-front", "jar-side", "cup")):
        world.put(f"images/{name}.png", png(COLORS[i], seed=i))
    assert not drain(world, world.ingest).failed
    state = index_state(world.opensearch, world.alias)
    assert images_of(state) == {"jar": ["jar-front.png", "jar-side.png"], "cup": ["cup.png"]}
    uri = f"s3://{world.bucket}/images/"
    # The document lists the images it has vectors for, main first, and the description.
    assert state["jar"]["images"] == [uri + "jar-front.png", uri + "jar-side.png"]
    assert state["jar"]["image"] == uri + "jar-front.png"
    assert state["jar"]["description"] == "A glass preserving jar"

    # A metadata change re-encodes nothing: every vector is reused.
    before = len(endpoint.requests)
    world.put("catalog/shop.jsonl", jsonl([{**jar, "description": "Holds a litre"}, cup]))
    assert not drain(world, world.ingest).failed
    assert len(endpoint.requests) == before
    state = index_state(world.opensearch, world.alias)
    assert state["jar"]["description"] == "Holds a litre"
    assert images_of(state)["jar"] == ["jar-front.png", "jar-side.png"]

    world.put("images/jar-top.png", png(COLORS[3], seed=3))
    assert not drain(world, world.ingest).failed
    state = index_state(world.opensearch, world.alias)
    assert images_of(state)["jar"] == ["jar-front.png", "jar-side.png", "jar-top.png"]
    side = next(v["vector"] for v in state["jar"]["vectors"] if v["key"].endswith("side.png"))

    # New bytes under the same key: that image is encoded again.
    world.put("images/jar-side.png", png(COLORS[8], seed=8))
    assert not drain(world, world.ingest).failed
    state = index_state(world.opensearch, world.alias)
    assert next(v["vector"] for v in state["jar"]["vectors"]
                if v["key"].endswith("side.png")) != side

    world.delete("images/jar-front.png")
    assert not drain(world, world.ingest).failed
    state = index_state(world.opensearch, world.alias)
    assert images_of(state) == {"jar": ["jar-side.png", "jar-top.png"], "cup": ["cup.png"]}
    assert state["jar"]["image"] == uri + "jar-side.png"  # the main image is the first left

    for name in ("jar-side", "jar-top"):
        world.delete(f"images/{name}.png")
    assert not drain(world, world.ingest).failed
    state = index_state(world.opensearch, world.alias)
    # No image left: still indexed, by its title and words.
    assert images_of(state) == {"jar": [], "cup": ["cup.png"]}
    assert state["jar"]["image"] is None and state["jar"]["title"] == "Kilner jar"

    world.put("images/jar-top.png", png(COLORS[3], seed=3))
    assert not drain(world, world.ingest).failed
    assert images_of(index_state(world.opensearch, world.alias))["jar"] == ["jar-top.png"]


def test_concurrent_invocations_on_one_product_lose_no_image(new_world, monkeypatch):
    """Two invocations handle two images of one product at once: the later write must not
    drop the vector the other one wrote between its read and its write."""
    from clipsearch.aws.ingest import Ingestor

    world = new_world()
    jar = {"id": "jar", "title": "Kilner jar", "images": ["a.png", "b.png", "c.png"]}
    world.put("catalog/shop.jsonl", jsonl([jar]))
    world.put("images/a.png", png(COLORS[0], seed=0))
    assert not drain(world, world.ingest).failed
    assert images_of(index_state(world.opensearch, world.alias)) == {"jar": ["a.png"]}

    world.put("images/b.png", png(COLORS[1], seed=1))
    world.put("images/c.png", png(COLORS[2], seed=2))
    (b_message,) = [m for m in receive_all(world, 2) if body_key(m) == "images%2Fb.png"]
    uri = f"s3://{world.bucket}/images/"
    read = Ingestor._indexed

    def read_then_other_invocation_writes(self, ids):
        current = read(self, ids)
        # Meanwhile another invocation indexes c.png (here: its document, written
        # directly), after this one read the document and before it writes.
        doc = world.opensearch.get(index=world.alias, id="jar")["_source"]
        a_vector = next(v["vector"] for v in doc["vectors"] if v["key"].endswith("a.png"))
        doc["vectors"].append({"key": f"image:{uri}c.png", "vector": a_vector})
        doc["images"] = [*doc["images"], f"{uri}c.png"]
        world.opensearch.index(index=world.alias, id="jar", body=doc, refresh=True)
        return current

    with monkeypatch.context() as patch:
        patch.setattr(Ingestor, "_indexed", read_then_other_invocation_writes)
        response = world.ingest.handler(sqs_event(world, [b_message]), LambdaContext())
    # The conditional write lost the race: b's message fails, c's vector is intact.
    assert list(iter_failures(response)) == [b_message["MessageId"]]
    assert images_of(index_state(world.opensearch, world.alias)) == {"jar": ["a.png", "c.png"]}

    # The redelivery reads both and writes all three.
    response = world.ingest.handler(sqs_event(world, [b_message]), LambdaContext())
    assert not list(iter_failures(response))
    assert sorted(images_of(index_state(world.opensearch, world.alias))["jar"]) == \
        ["a.png", "b.png", "c.png"]


# --------------------------------------------------------------------------- units


def _sqs(body: str) -> dict:
    return {"messageId": "m-1", "body": body, "attributes": {"ApproximateReceiveCount": "2"}}


def test_event_parsing_handles_every_shape_s3_and_sqs_send():
    s3_event = {"Records": [{"eventSource": "aws:s3",
                             "eventName": "ObjectRemoved:DeleteMarkerCreated",
                             "s3": {"bucket": {"name": "b"},
                                    "object": {"key": "images/red+shoe%2B1.png",
                                               "versionId": "v1", "sequencer": "0A"}}}]}
    message = parse_sqs_record(_sqs(json.dumps(s3_event)))
    (obj,) = message.objects
    assert (obj.key, obj.removed, obj.version_id, message.receive_count) == \
        ("images/red shoe+1.png", True, "v1", 2)
    sns = {"Type": "Notification", "Message": json.dumps(s3_event)}
    assert parse_sqs_record(_sqs(json.dumps(sns))).objects == message.objects
    bridge = {"source": "aws.s3", "detail-type": "Object Created",
              "detail": {"bucket": {"name": "b"}, "object": {"key": "images/a b.png"}}}
    (obj,) = parse_sqs_record(_sqs(json.dumps(bridge))).objects
    assert obj.key == "images/a b.png" and not obj.removed
    assert parse_sqs_record(_sqs(json.dumps({"Event": "s3:TestEvent"}))).test_event
    for body, words in (("", "empty"), ("{", "not JSON"), ("[]", "list"),
                        (json.dumps({"Records": []}), "not an S3 event"),
                        (json.dumps({"Records": [{"eventSource": "aws:sns"}]}), "aws:s3")):
        problem = parse_sqs_record(_sqs(body)).problem
        assert problem is not None and words in problem, (body, problem)
    assert parse_sqs_event({"nope": 1}) == ([], ["the event has no Records list; is this an "
                                                 "SQS event?"])


@pytest.mark.parametrize(("ref", "key"), [
    ("s3://shop/images/a.jpg", "images/a.jpg"),
    ("images/a.jpg", "images/a.jpg"),
    ("a.jpg", "images/a.jpg"),
    ("sub/a.jpg", "images/sub/a.jpg"),
    ("../images/a.jpg", "images/a.jpg"),
    ("/images/a.jpg", "images/a.jpg"),
    ("s3://other/images/a.jpg", None),
    ("https://cdn.example/a.jpg", None),
    ("../models/model.tar.gz", None),
    ("images/../catalog/x.jsonl", None),
    (None, None),
])
def test_catalog_image_references_resolve_to_keys_under_images(ref, key):
    resolved = resolve_image_key(ref, bucket="shop", images_prefix="images/",
                                 catalog_key="catalog/shop.jsonl")
    assert resolved.key == key
    assert (resolved.problem is None) == (key is not None)
