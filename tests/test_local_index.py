"""LocalIndex behaviour in exact and HNSW modes, persistence and concurrency."""

import itertools
import threading

import numpy as np
import pytest

from clipsearch.catalog import Product
from clipsearch.filters import Condition
from clipsearch.index import IndexRecord, VectorIndex
from clipsearch.index.local import LocalIndex

DIM = 64


def unit(rng, n, dim=DIM):
    m = rng.standard_normal((n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def records(vectors, attrs=None):
    return [
        IndexRecord(Product(f"p{i}", f"product {i}", f"/img/{i}.png",
                            attrs(i) if attrs else {}), v)
        for i, v in enumerate(vectors)
    ]


def brute_force(vectors, query, k, allowed=None):
    scores = vectors @ query
    order = [i for i in np.argsort(-scores, kind="stable") if allowed is None or allowed(i)]
    return [f"p{i}" for i in order[:k]], scores


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_protocol(tmp_path):
    assert isinstance(LocalIndex(tmp_path), VectorIndex)


def test_exact_mode_matches_numpy_brute_force(tmp_path, rng):
    vectors = unit(rng, 500)
    index = LocalIndex(tmp_path, ann_threshold=10_000)
    assert index.upsert(records(vectors)).indexed == 500
    assert index.mode == "exact"
    for query in unit(rng, 20):
        hits = index.knn(query, 25)
        expected, scores = brute_force(vectors, query, 25)
        assert [h.product.id for h in hits] == expected
        np.testing.assert_allclose([h.score for h in hits],
                                   [scores[int(i[1:])] for i in expected], atol=1e-5)


def test_ann_mode_recall_and_exact_scores(tmp_path, rng):
    vectors = unit(rng, 3000)
    index = LocalIndex(tmp_path, ann_threshold=1000)
    index.upsert(records(vectors))
    index.flush()
    assert index.mode == "ann"
    assert index.describe()["hnsw_nodes"] == 3000
    found = total = 0
    for query in unit(rng, 30):
        hits = index.knn(query, 10)
        expected, scores = brute_force(vectors, query, 10)
        found += len({h.product.id for h in hits} & set(expected))
        total += 10
        for h in hits:  # HNSW stores full vectors, so scores are exact cosines
            assert abs(h.score - scores[int(h.product.id[1:])]) < 1e-5
    assert found / total >= 0.95


@pytest.mark.parametrize("threshold", [10_000, 100], ids=["exact", "ann"])
def test_filters_return_k_when_k_match(tmp_path, rng, threshold):
    vectors = unit(rng, 2000)
    colors = ["red", "blue", "green", "black"]
    index = LocalIndex(tmp_path, ann_threshold=threshold)
    index.upsert(records(vectors, lambda i: {"color": colors[i % 4], "price": float(i),
                                             "sale": i % 2 == 0, "rare": "yes" if i % 397 == 0
                                             else "no"}))
    index.flush()
    query = unit(rng, 1)[0]
    # Broad filter (half the catalog): goes through the HNSW selector in ANN mode.
    hits = index.knn(query, 50, (Condition("sale", values=(True,)),))
    assert len(hits) == 50
    assert all(h.product.attributes["sale"] is True for h in hits)
    # Selective filter: only 6 products match, all 6 come back, best first.
    hits = index.knn(query, 10, (Condition("rare", values=("yes",)),))
    expected, _ = brute_force(vectors, query, 10, allowed=lambda i: i % 397 == 0)
    assert [h.product.id for h in hits] == expected and len(hits) == 6
    # Term + range together, exact ranking within the matches.
    conds = (Condition("color", values=("red", "blue")), Condition("price", gte=100, lt=400))
    hits = index.knn(query, 20, conds)
    expected, _ = brute_force(vectors, query, 20,
                              allowed=lambda i: i % 4 in (0, 1) and 100 <= i < 400)
    assert [h.product.id for h in hits] == expected


def test_upsert_is_idempotent_and_replaces(tmp_path, rng):
    vectors = unit(rng, 10)
    index = LocalIndex(tmp_path)
    index.upsert(records(vectors))
    index.upsert(records(vectors))
    assert index.count() == 10
    new = IndexRecord(Product("p3", "renamed", None, {"color": "red"}), vectors[5])
    index.upsert([new])
    assert index.count() == 10
    assert index.get("p3").title == "renamed"
    np.testing.assert_allclose(index.get_vector("p3"), vectors[5], atol=1e-6)
    hits = index.knn(vectors[5], 2)
    assert {h.product.id for h in hits} == {"p3", "p5"}


def test_delete_and_unknown_ids(tmp_path, rng):
    vectors = unit(rng, 10)
    index = LocalIndex(tmp_path)
    index.upsert(records(vectors))
    assert index.delete(["p1", "p2", "nope"]) == 2
    assert index.count() == 8
    assert index.get("p1") is None and index.get_vector("p1") is None
    assert "p1" not in {h.product.id for h in index.knn(vectors[1], 10)}


def test_bad_records_fail_alone(tmp_path, rng):
    index = LocalIndex(tmp_path)
    index.upsert(records(unit(rng, 3), lambda i: {"price": 1.0}))
    bad = [
        IndexRecord(Product("wrongdim", "t"), unit(rng, 1, dim=8)[0]),
        IndexRecord(Product("nan", "t"), np.full(DIM, np.nan, dtype=np.float32)),
        IndexRecord(Product("zero", "t"), np.zeros(DIM, dtype=np.float32)),
        IndexRecord(Product("typeclash", "t", None, {"price": "cheap"}), unit(rng, 1)[0]),
        IndexRecord(Product("fine", "t"), unit(rng, 1)[0]),
    ]
    result = index.upsert(bad)
    assert result.indexed == 1
    reasons = {f.id: f.reason for f in result.failures}
    assert set(reasons) == {"wrongdim", "nan", "zero", "typeclash"}
    assert "dimension 8" in reasons["wrongdim"]
    assert "number" in reasons["typeclash"]


@pytest.mark.parametrize("threshold", [10_000, 100], ids=["exact", "ann"])
def test_survives_restart(tmp_path, rng, threshold):
    vectors = unit(rng, 600)
    index = LocalIndex(tmp_path, ann_threshold=threshold)
    index.upsert(records(vectors, lambda i: {"n": i}))
    index.delete(["p0"])
    index.flush()
    query = unit(rng, 1)[0]
    before = [(h.product.id, h.score) for h in index.knn(query, 10)]
    index.close()
    reopened = LocalIndex(tmp_path, ann_threshold=threshold)
    assert reopened.count() == 599
    assert reopened.fields() == {"n": "number"}
    if threshold == 100:  # the saved graph is reused, not rebuilt
        assert reopened._ann is not None
    assert [(h.product.id, h.score) for h in reopened.knn(query, 10)] == before


def test_graph_keeps_working_after_updates_and_compaction(tmp_path, rng):
    vectors = unit(rng, 400)
    index = LocalIndex(tmp_path, ann_threshold=100)
    index.upsert(records(vectors))
    index.flush()
    index.delete([f"p{i}" for i in range(200)])  # half become tombstones
    assert index.describe()["tombstones"] == 200
    query = vectors[300]
    assert index.knn(query, 1)[0].product.id == "p300"
    index.flush()  # compaction rebuilds the graph over live rows only
    assert index.describe()["tombstones"] == 0
    assert index.describe()["hnsw_nodes"] == 200
    hits = index.knn(query, 10)
    assert hits[0].product.id == "p300"
    assert all(int(h.product.id[1:]) >= 200 for h in hits)


def test_concurrent_readers_with_a_writer(tmp_path, rng):
    vectors = unit(rng, 1500)
    index = LocalIndex(tmp_path, ann_threshold=500)
    index.upsert(records(vectors[:1000]))
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader(seed):
        local = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                q = unit(local, 1)[0]
                hits = index.knn(q, 10)
                assert len(hits) == 10
                assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for start in range(1000, 1500, 50):
        batch = records(vectors)[start : start + 50]
        index.upsert(batch)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert index.count() == 1500
    assert index.knn(vectors[1499], 1)[0].product.id == "p1499"


def test_a_second_instance_sees_committed_writes(tmp_path, rng):
    vectors = unit(rng, 20)
    writer = LocalIndex(tmp_path)
    reader = LocalIndex(tmp_path)
    assert reader.knn(vectors[0], 1) == []
    writer.upsert(records(vectors))
    assert reader.knn(vectors[7], 1)[0].product.id == "p7"
    writer.delete(["p7"])
    assert reader.knn(vectors[7], 1)[0].product.id != "p7"
