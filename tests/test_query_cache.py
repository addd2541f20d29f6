"""The query-vector cache: LRU bounds, correct keys, hit/miss counts in /health."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from clipsearch.contract import SearchRequest
from clipsearch.encoders.clip import ClipEncoder
from clipsearch.index.local import LocalIndex
from clipsearch.query_cache import ENTRY_OVERHEAD_BYTES, QueryCache, normalize_text
from clipsearch.random_clip import build_random_clip
from clipsearch.server import create_app
from clipsearch.service import SearchService
from tests.conftest import png_bytes


class CountingEncoder:
    """A real ClipEncoder that counts the forward passes it is asked for."""

    def __init__(self, inner: ClipEncoder) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self.images = 0

    model_id = property(lambda self: self.inner.model_id)
    dimension = property(lambda self: self.inner.dimension)
    prompt_template = property(lambda self: self.inner.prompt_template)

    def encode_texts(self, texts):
        self.texts.extend(texts)
        return self.inner.encode_texts(texts)

    def encode_images(self, images):
        self.images += len(images)
        return self.inner.encode_images(images)


def service_for(encoder, tmp_path, cache) -> SearchService:
    return SearchService(encoder, LocalIndex(tmp_path / "index"), query_cache=cache)


def vector(v: float, dim: int = 4) -> np.ndarray:
    return np.full(dim, v, dtype=np.float32)


def test_lru_evicts_the_least_recently_used_entry_beyond_max_entries():
    cache = QueryCache(max_entries=2, max_bytes=1 << 20)
    cache.put(("a",), vector(1))
    cache.put(("b",), vector(2))
    assert cache.get(("a",)) is not None  # a is now the most recent
    cache.put(("c",), vector(3))
    assert cache.get(("b",)) is None
    assert cache.get(("a",))[0] == 1 and cache.get(("c",))[0] == 3
    stats = cache.stats()
    assert (stats.entries, stats.hits, stats.misses) == (2, 3, 1)


def test_byte_bound_counts_vectors_keys_and_overhead():
    one = 512 * 4 + len("k0") + ENTRY_OVERHEAD_BYTES
    cache = QueryCache(max_entries=100, max_bytes=3 * one)
    for i in range(5):
        cache.put((f"k{i}",), vector(i, 512))
    stats = cache.stats()
    assert stats.entries == 3 and stats.bytes == 3 * one <= cache.max_bytes
    assert cache.get(("k1",)) is None and cache.get(("k4",)) is not None
    # An entry larger than the whole budget is answered but never stored.
    QueryCache(max_entries=10, max_bytes=100).put(("big",), vector(1, 512))


def test_cached_vectors_are_read_only_copies():
    cache = QueryCache(max_entries=4, max_bytes=1 << 20)
    original = vector(1)
    stored = cache.put(("a",), original)
    original[0] = 99
    assert cache.get(("a",))[0] == 1
    with pytest.raises(ValueError):
        stored[0] = 5


def test_zero_bounds_mean_no_cache():
    assert QueryCache.from_settings(0, 32) is None
    assert QueryCache.from_settings(100, 0) is None
    assert QueryCache.from_settings(100, 1).max_bytes == 1024 * 1024
    with pytest.raises(ValueError):
        QueryCache(max_entries=0)


def test_repeats_hit_the_cache_and_equal_the_uncached_answer(encoder, tmp_path):
    counting = CountingEncoder(encoder)
    service = service_for(counting, tmp_path, QueryCache(100, 1 << 20))
    first = service.query_vector(SearchRequest(text="red shoe"))
    again = service.query_vector(SearchRequest(text="  red \t shoe "))  # same once normalized
    assert counting.texts == ["red shoe"]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, encoder.encode_texts(["red shoe"])[0])
    # Case is part of the key: the cache must not answer for what a model might read differently.
    service.query_vector(SearchRequest(text="Red shoe"))
    assert counting.texts == ["red shoe", "Red shoe"]

    image = png_bytes((10, 200, 30))
    a = service.query_vector(SearchRequest(image=image))
    b = service.query_vector(SearchRequest(image=bytes(image)))
    assert counting.images == 1
    np.testing.assert_array_equal(a, b)
    service.query_vector(SearchRequest(image=png_bytes((10, 200, 31))))
    assert counting.images == 2
    stats = service.query_cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 4, 4)


def test_never_a_vector_for_another_template_or_model(encoder, tiny_clip_dir, tmp_path):
    """One cache shared by three encoders: each still gets exactly its own vectors."""
    other_model = ClipEncoder(str(build_random_clip(tmp_path / "seed1", seed=1)))
    other_template = ClipEncoder(str(tiny_clip_dir), prompt_template="a product photo of {}")
    shared = QueryCache(100, 1 << 20)
    image = png_bytes((200, 120, 0))
    answers = {}
    for name, enc in (("base", encoder), ("model", other_model), ("template", other_template)):
        service = service_for(enc, tmp_path / name, shared)
        text = service.query_vector(SearchRequest(text="blue boot"))
        img = service.query_vector(SearchRequest(image=image))
        np.testing.assert_allclose(text, enc.encode_texts(["blue boot"])[0], atol=1e-6)
        np.testing.assert_allclose(img, enc.encode_images([image])[0], atol=1e-6)
        answers[name] = (text, img)
    assert not np.allclose(answers["base"][0], answers["model"][0], atol=1e-3)
    assert not np.allclose(answers["base"][0], answers["template"][0], atol=1e-3)
    assert not np.allclose(answers["base"][1], answers["model"][1], atol=1e-3)
    # The template does not touch images: that one is a legitimate hit.
    np.testing.assert_array_equal(answers["base"][1], answers["template"][1])
    assert shared.stats().hits == 1 and shared.stats().entries == 5


def test_ingest_does_not_fill_the_query_cache(encoder, demo_products, tmp_path):
    cache = QueryCache(100, 1 << 20)
    service = service_for(encoder, tmp_path, cache)
    service.ingest(demo_products[:5])
    assert cache.stats().entries == 0


def test_health_reports_hits_and_misses_through_http(encoder, demo_products, tmp_path):
    service = service_for(encoder, tmp_path, QueryCache(100, 1 << 20))
    service.ingest(demo_products[:5])
    with TestClient(create_app(service), base_url="http://127.0.0.1") as client:
        for _ in range(3):
            assert client.get("/search", params={"q": "red circle"}).status_code == 200
        cache = client.get("/health").json()["query_cache"]
    assert cache["hits"] == 2 and cache["misses"] == 1 and cache["entries"] == 1
    assert cache["max_entries"] == 100 and cache["bytes"] > 0


def test_normalize_text_is_nfc_and_single_spaced():
    assert normalize_text(" a\u0301  b\n") == "\u00e1 b"
