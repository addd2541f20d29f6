"""OpenSearchIndex against a real node: recall, partial failures, retries, reindexing, CLI."""

import json
import uuid

import numpy as np
import pytest

from clipsearch.catalog import Product
from clipsearch.cli import main
from clipsearch.errors import ServiceUnavailableError
from clipsearch.index import IndexRecord
from clipsearch.index.opensearch import OpenSearchIndex, make_client
from tests.fault_proxy import FaultProxy


def unit(rng, n, dim):
    m = rng.standard_normal((n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def records(vectors, prefix="p"):
    return [IndexRecord(Product(f"{prefix}{i}", f"Product {i}"), v) for i, v in enumerate(vectors)]


def new_index(client, **kwargs):
    return OpenSearchIndex(client, alias=f"t-{uuid.uuid4().hex[:8]}", **kwargs)


def test_mapping_names_the_lucene_engine_and_cosine(opensearch_client):
    index = new_index(opensearch_client)
    name = index.ensure(8, model="m")
    mapping = opensearch_client.indices.get_mapping(index=name)[name]["mappings"]
    method = mapping["properties"]["vectors"]["properties"]["vector"]["method"]
    assert method["engine"] == "lucene" and method["space_type"] == "cosinesimil"
    assert method["name"] == "hnsw"
    settings = opensearch_client.indices.get_settings(index=name)[name]["settings"]["index"]
    assert settings["knn"] == "true"
    assert index.model == "m" and index.dimension == 8


def test_recall_at_10_on_10k_random_512d_vectors(opensearch_client):
    """The hardest case for HNSW, with the parameters the index ships with."""
    rng = np.random.default_rng(11)
    vectors = unit(rng, 10_000, 512)
    index = new_index(opensearch_client, chunk_size=1000)
    result = index.upsert(records(vectors))
    assert result.indexed == 10_000 and not result.failures
    index.flush()
    queries = unit(rng, 50, 512)
    found = 0
    for query in queries:
        truth = set(np.argsort(-(vectors @ query))[:10].tolist())
        hits = index.knn(query, 10)
        found += len(truth & {int(h.product.id[1:]) for h in hits})
    recall = found / (10 * len(queries))
    print(f"OpenSearch recall@10 on 10k random 512-d vectors: {recall:.3f}")
    assert recall >= 0.95


def test_partial_bulk_failure_reports_the_bad_document(opensearch_client):
    rng = np.random.default_rng(1)
    index = new_index(opensearch_client, refresh_on_write=True)
    good = records(unit(rng, 5, 16))
    bad = IndexRecord(Product("bad-dim", "Wrong dimension"), unit(rng, 1, 8)[0])
    result = index.upsert([*good[:2], bad, *good[2:]])
    assert result.indexed == 5
    (failure,) = result.failures
    assert failure.id == "bad-dim"
    assert "dimension" in failure.reason.lower()  # OpenSearch's own words
    assert "mapper_parsing_exception" in failure.reason
    assert index.count() == 5


def test_rebuild_swaps_the_alias_atomically(opensearch_client):
    rng = np.random.default_rng(2)
    index = new_index(opensearch_client, refresh_on_write=True)
    index.upsert(records(unit(rng, 10, 16), "old"))
    first = index.current_index()
    new_name = index.create_version(16)
    staging = index.staging(new_name)
    staging.upsert(records(unit(rng, 20, 16), "new"))
    # Until published, readers still see the old version only.
    assert index.count() == 10 and index.get("new0") is None
    assert index.publish(new_name) == first
    assert index.current_index() == new_name and new_name.endswith("-v2")
    assert index.count() == 20 and index.get("old0") is None
    assert not opensearch_client.indices.exists(index=first)


def test_throttled_and_failing_bulks_are_retried(opensearch_url):
    rng = np.random.default_rng(4)
    with FaultProxy(opensearch_url) as proxy:
        index = OpenSearchIndex(make_client(proxy.url), alias=f"t-{uuid.uuid4().hex[:8]}",
                                initial_backoff=0.05, refresh_on_write=True)
        index.ensure(16)
        proxy.faults["_bulk"] = [429, 429, 503]
        result = index.upsert(records(unit(rng, 30, 16)))
        assert result.indexed == 30 and not result.failures
        assert proxy.hits["_bulk"] == 4  # three faults, then success
        assert index.count() == 30


def test_unreachable_node_is_service_unavailable():
    index = OpenSearchIndex(make_client("http://127.0.0.1:9", max_retries=0, timeout=2))
    with pytest.raises(ServiceUnavailableError, match="cannot reach OpenSearch"):
        index.count()


def test_cli_ingest_and_search_against_the_node(opensearch_url, tiny_clip_dir,
                                                demo_catalog_path, demo_products, capsys,
                                                tmp_path):
    alias = f"cli-{uuid.uuid4().hex[:8]}"
    base = ["--opensearch", opensearch_url, "--alias", alias, "--model", str(tiny_clip_dir),
            "--data-dir", str(tmp_path)]
    assert main([*base, "ingest", str(demo_catalog_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"indexed {len(demo_products)}, skipped 0, failed 0" in out
    assert f"alias {alias}" in out
    for product in demo_products[::7]:
        assert main([*base, "search", "--image", product.image, "--json", "--k", "3"]) == 0
        top = json.loads(capsys.readouterr().out)["results"][0]
        assert top["id"] == product.id and top["score"] > 0.99
    assert main([*base, "search", "rug", "--filter", "category=rug", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 8 and {r["attributes"]["category"] for r in results} == {"rug"}
    assert not (tmp_path / "index").exists()  # nothing went to the local index


def test_cli_reports_an_unreachable_node(capsys, tiny_clip_dir, tmp_path):
    code = main(["--opensearch", "http://127.0.0.1:9", "--model", str(tiny_clip_dir),
                 "search", "x"])
    assert code == 2
    assert "cannot reach OpenSearch" in capsys.readouterr().err


