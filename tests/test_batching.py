"""Micro-batching: concurrent encodes share forward passes and answer as one-by-one would."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from clipsearch.encoders import Encoder
from clipsearch.encoders.batching import MicroBatchingEncoder
from clipsearch.errors import InvalidImageError, ValidationError
from clipsearch.index.local import LocalIndex
from clipsearch.server import create_app
from clipsearch.service import SearchService
from tests.conftest import png_bytes

# Batched and single forward passes differ only in float rounding (BLAS picks
# other kernels for other shapes): unit vectors agree to 1e-5 per component.
TOLERANCE = 1e-5
TEXTS = ["red shoe", "blue leather boot", "a lamp", "green striped shirt", "mug",
         "black metal watch", "wooden chair", "pink dotted dress"]


def concurrently(function, inputs):
    """Call `function` on every input from its own thread, all released at once."""
    barrier = threading.Barrier(len(inputs))

    def call(item):
        barrier.wait()
        try:
            return function(item)
        except Exception as exc:  # returned, so one failure does not hide the others
            return exc

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(call, inputs))


def test_meets_the_protocol(encoder):
    batching = MicroBatchingEncoder(encoder)
    assert isinstance(batching, Encoder)
    assert (batching.model_id, batching.dimension, batching.prompt_template) == \
        (encoder.model_id, encoder.dimension, encoder.prompt_template)


def test_concurrent_texts_share_passes_and_equal_one_by_one(encoder):
    batching = MicroBatchingEncoder(encoder, max_batch=16, max_wait_ms=300)
    answers = concurrently(lambda t: batching.encode_texts([t])[0], TEXTS)
    alone = np.stack([encoder.encode_texts([t])[0] for t in TEXTS])
    np.testing.assert_allclose(np.stack(answers), alone, atol=TOLERANCE)
    assert batching.texts.items == len(TEXTS)
    assert batching.texts.passes < len(TEXTS)  # grouped, not one pass each


def test_a_lone_request_does_not_wait_for_company(encoder):
    """The wait is for requests already on their way; a quiet server adds no latency."""
    batching = MicroBatchingEncoder(encoder, max_wait_ms=5000)
    batching.encode_texts(["warm up"])
    started = time.perf_counter()
    batching.encode_texts(["red shoe"])
    batching.encode_images([png_bytes((10, 20, 30))])
    assert time.perf_counter() - started < 2.5  # two 5 s waits would be 10 s
    assert batching.texts.passes == 2 and batching.images.passes == 1


def test_a_request_on_its_way_is_waited_for(encoder):
    """A caller still decoding its image joins the pass that a queued request starts."""
    batching = MicroBatchingEncoder(encoder, max_wait_ms=3000)
    decoding = threading.Event()
    inner_preprocess = encoder.preprocess_images

    def slow_preprocess(images):
        decoding.set()
        time.sleep(0.5)  # the first caller is still decoding when the second is queued
        return inner_preprocess(images)

    with ThreadPoolExecutor(2) as pool, pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoder, "preprocess_images", slow_preprocess)
        slow = pool.submit(batching.encode_images, [png_bytes((200, 10, 10))])
        decoding.wait(5)
        patch.setattr(encoder, "preprocess_images", inner_preprocess)
        fast = pool.submit(batching.encode_images, [png_bytes((10, 200, 10))])
        fast.result(30), slow.result(30)
    assert batching.images.passes == 1 and batching.images.items == 2


def test_batches_never_exceed_max_batch(encoder):
    batching = MicroBatchingEncoder(encoder, max_batch=3, max_wait_ms=300)
    concurrently(lambda t: batching.encode_texts([t]), TEXTS)
    assert batching.texts.passes >= len(TEXTS) / 3


def test_images_are_batched_and_a_bad_one_fails_alone(encoder):
    batching = MicroBatchingEncoder(encoder, max_batch=16, max_wait_ms=300)
    images = [png_bytes((i * 30, 200 - i * 20, 50)) for i in range(6)] + [b"not an image"]
    answers = concurrently(lambda img: batching.encode_images([img])[0], images)
    assert isinstance(answers[-1], InvalidImageError)
    alone = encoder.encode_images(images[:-1])
    np.testing.assert_allclose(np.stack(answers[:-1]), alone, atol=TOLERANCE)
    assert batching.images.items == 6 and batching.images.passes < 6


def test_bad_text_fails_alone_and_a_model_failure_reaches_every_waiter(encoder):
    batching = MicroBatchingEncoder(encoder, max_wait_ms=300)
    with pytest.raises(ValidationError):
        batching.encode_texts(["  "])

    class Broken:
        model_id, dimension, prompt_template = "broken", 4, "{}"

        def encode_texts(self, texts, *, apply_template=True):
            raise RuntimeError("forward pass failed")

        encode_pixels = encode_texts

    broken = MicroBatchingEncoder(Broken(), max_wait_ms=300)  # type: ignore[arg-type]
    answers = concurrently(lambda t: broken.encode_texts([t]), TEXTS[:4])
    assert all(isinstance(a, RuntimeError) for a in answers)
    # The worker survives a failed pass.
    assert broken.texts.passes == 0
    with pytest.raises(RuntimeError):
        broken.encode_texts(["again"])


def test_server_answers_concurrent_searches_like_one_by_one(encoder, demo_products, tmp_path):
    index = LocalIndex(tmp_path / "index")
    SearchService(encoder, index).ingest(demo_products[:8])
    plain = SearchService(encoder, index)
    batching = MicroBatchingEncoder(encoder, max_wait_ms=100)
    queries = [{"q": t, "k": "5"} for t in TEXTS]
    with TestClient(create_app(SearchService(batching, index), encode_threads=16),
                    base_url="http://127.0.0.1") as client:
        bodies = concurrently(lambda q: client.get("/search", params=q).json(), queries)
        image = client.post("/search", json={"image": base64.b64encode(png_bytes()).decode(),
                                              "k": 5}).json()
    with TestClient(create_app(plain), base_url="http://127.0.0.1") as client:
        expected = [client.get("/search", params=q).json() for q in queries]
    for got, want in zip(bodies, expected, strict=True):
        assert [r["id"] for r in got["results"]] == [r["id"] for r in want["results"]]
        np.testing.assert_allclose([r["score"] for r in got["results"]],
                                   [r["score"] for r in want["results"]], atol=1e-5)
    assert batching.texts.passes < len(TEXTS) and len(image["results"]) == 5
