"""One contract, two backends: LocalIndex and OpenSearchIndex behave the same.

Every case runs against the embedded index and a real OpenSearch node with
the k-NN plugin (Lucene engine), started by the session fixture.
"""

import uuid

import numpy as np
import pytest

from clipsearch.catalog import Product
from clipsearch.contract import SearchRequest
from clipsearch.filters import Condition
from clipsearch.index import IndexRecord, VectorIndex
from clipsearch.index.local import LocalIndex
from clipsearch.service import SearchService

DIM = 32


@pytest.fixture(params=["local", "opensearch"])
def index(request, tmp_path):
    if request.param == "local":
        yield LocalIndex(tmp_path)
        return
    from clipsearch.index.opensearch import OpenSearchIndex

    client = request.getfixturevalue("opensearch_client")
    yield OpenSearchIndex(client, alias=f"contract-{uuid.uuid4().hex[:8]}",
                          refresh_on_write=True)


def unit(rng, n):
    m = rng.standard_normal((n, DIM)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


COLORS = ["red", "blue", "green"]


def catalog(vectors):
    return [IndexRecord(Product(f"p{i}", f"Product {i}", f"/img/{i}.png",
                                {"color": COLORS[i % 3], "price": float(i), "sale": i % 2 == 0,
                                 "stock": i}), v)
            for i, v in enumerate(vectors)]


@pytest.fixture
def loaded(index):
    rng = np.random.default_rng(3)
    vectors = unit(rng, 60)
    result = index.upsert(catalog(vectors))
    assert result.indexed == 60 and not result.failures
    return index, vectors, rng


def expected_ids(vectors, query, k, allowed=lambda i: True):
    scores = vectors @ query
    return [f"p{i}" for i in np.argsort(-scores) if allowed(i)][:k], scores


def test_is_a_vector_index(index):
    assert isinstance(index, VectorIndex)


def test_ordering_and_scores_match_exact_cosine(loaded):
    index, vectors, rng = loaded
    for query in unit(rng, 5):
        hits = index.knn(query, 10)
        ids, scores = expected_ids(vectors, query, 10)
        assert [h.product.id for h in hits] == ids
        for hit in hits:
            assert abs(hit.score - scores[int(hit.product.id[1:])]) < 1e-4


def test_k_bounds_results(loaded):
    index, vectors, _ = loaded
    assert len(index.knn(vectors[0], 1)) == 1
    assert len(index.knn(vectors[0], 100)) == 60


def test_get_returns_product_without_vector_and_get_vector_returns_it(loaded):
    index, vectors, _ = loaded
    product = index.get("p4")
    assert product == Product("p4", "Product 4", "/img/4.png",
                              {"color": "blue", "price": 4.0, "sale": True, "stock": 4})
    np.testing.assert_allclose(index.get_vector("p4"), vectors[4], atol=1e-6)
    assert index.get("nope") is None and index.get_vector("nope") is None


def test_idempotent_reupsert_and_replace(loaded):
    index, vectors, _ = loaded
    assert index.upsert(catalog(vectors)[:10]).indexed == 10
    assert index.count() == 60
    replaced = IndexRecord(Product("p1", "Renamed", None, {"color": "red"}), vectors[2])
    index.upsert([replaced])
    assert index.count() == 60
    assert index.get("p1").title == "Renamed"
    assert {h.product.id for h in index.knn(vectors[2], 2)} == {"p1", "p2"}


def test_delete(loaded):
    index, vectors, _ = loaded
    assert index.delete(["p0", "p1", "missing"]) == 2
    assert index.count() == 58
    assert index.get("p0") is None
    assert "p0" not in {h.product.id for h in index.knn(vectors[0], 10)}


def test_fields_have_types(loaded):
    index, _, _ = loaded
    assert dict(index.fields()) == {"color": "keyword", "price": "number", "sale": "boolean",
                                    "stock": "number"}


@pytest.mark.parametrize("conds, allowed", [
    ((Condition("color", values=("red",)),), lambda i: i % 3 == 0),
    ((Condition("color", values=("red", "green")),), lambda i: i % 3 != 1),
    ((Condition("price", gte=10, lt=20),), lambda i: 10 <= i < 20),
    ((Condition("sale", values=(False,)), Condition("price", lte=30)),
     lambda i: i % 2 == 1 and i <= 30),
    ((Condition("stock", values=(7.0,)),), lambda i: i == 7),
])
def test_filters(loaded, conds, allowed):
    index, vectors, rng = loaded
    query = unit(rng, 1)[0]
    hits = index.knn(query, 10, conds)
    ids, _ = expected_ids(vectors, query, 10, allowed)
    assert [h.product.id for h in hits] == ids


def test_exclude_ids(loaded):
    index, vectors, _ = loaded
    hits = index.knn(vectors[5], 5, exclude_ids=["p5"])
    assert "p5" not in [h.product.id for h in hits] and len(hits) == 5


def test_service_offset_min_score_and_more_like_this(loaded, encoder):
    index, vectors, _ = loaded
    # The index holds 32-d vectors like the tiny CLIP, so the real service runs on it.
    service = SearchService(encoder, index)
    full = service.search(SearchRequest(product_id="p9", k=20))["results"]
    assert "p9" not in [r["id"] for r in full]
    ids, _ = expected_ids(vectors, vectors[9], 21)
    assert [r["id"] for r in full] == [i for i in ids if i != "p9"][:20]
    page = service.search(SearchRequest(product_id="p9", k=5, offset=5))["results"]
    assert [r["id"] for r in page] == [r["id"] for r in full[5:10]]
    threshold = full[3]["score"]
    above = service.search(SearchRequest(product_id="p9", k=20, min_score=threshold))
    assert [r["id"] for r in above["results"]] == [r["id"] for r in full[:4]]


def test_empty_index(index):
    assert index.count() == 0
    assert index.knn(np.ones(DIM, dtype=np.float32) / np.sqrt(DIM), 5) == []
    assert index.get("x") is None
    assert index.delete(["x"]) == 0
