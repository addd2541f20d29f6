"""Nested knn_vector vs one document per vector: which OpenSearch layout for multi-vector
products (issue #14 asked us to choose by measuring on the real node).

Both layouts hold the same products (n images + 1 title vector each, random
unit vectors, a keyword attribute). For each we measure, on one node in one
run: bulk time, store size per product, k-NN query latency (k=100, the rank
window) with and without a parent-field filter, whether every product comes
back at most once, whether a filtered query still returns k products, and
recall of the product ranking against exact numpy "best vector per product".

    python scripts/opensearch_node.py start --port 9250 --heap 1g
    .venv/bin/python -m benchmarks.opensearch_layouts --url http://127.0.0.1:9250 --products 5000
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from opensearchpy import helpers

from clipsearch.index.opensearch import CANDIDATES, HNSW_EF_CONSTRUCTION, HNSW_M, make_client

COLORS = ("red", "blue", "green", "black", "white")


def unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    m = rng.standard_normal(shape, dtype=np.float32)
    return m / np.linalg.norm(m, axis=-1, keepdims=True)


def knn_field(dim: int) -> dict:
    return {"type": "knn_vector", "dimension": dim,
            "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil",
                       "parameters": {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}}}


def build(client, layout: str, vectors: np.ndarray) -> float:
    n, per, dim = vectors.shape
    props = {"id": {"type": "keyword"}, "color": {"type": "keyword"}}
    if layout == "nested":
        props["vectors"] = {"type": "nested", "properties": {
            "key": {"type": "keyword"}, "vector": knn_field(dim)}}
    else:
        props["vector"] = knn_field(dim)
        props["key"] = {"type": "keyword"}
    client.indices.create(index=layout, body={
        "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {"properties": props}})

    def actions():
        for i in range(n):
            color = COLORS[i % len(COLORS)]
            if layout == "nested":
                yield {"_index": layout, "_id": f"p{i}", "_source": {
                    "id": f"p{i}", "color": color,
                    "vectors": [{"key": f"k{j}", "vector": vectors[i, j].tolist()}
                                for j in range(per)]}}
            else:
                for j in range(per):
                    yield {"_index": layout, "_id": f"p{i}#{j}", "_source": {
                        "id": f"p{i}", "color": color, "key": f"k{j}",
                        "vector": vectors[i, j].tolist()}}

    start = time.perf_counter()
    for ok, item in helpers.streaming_bulk(client, actions(), chunk_size=500):
        assert ok, item
    client.indices.refresh(index=layout)
    client.indices.forcemerge(index=layout, max_num_segments=1)
    return time.perf_counter() - start


def query(client, layout: str, q: np.ndarray, k: int, color: str | None) -> list[str]:
    flt = {"term": {"color": color}} if color else None
    if layout == "nested":
        knn = {"vector": q.tolist(), "k": max(k, CANDIDATES)}
        if flt:
            knn["filter"] = flt
        body = {"size": k, "_source": ["id"], "query": {"nested": {
            "path": "vectors", "score_mode": "max",
            "query": {"knn": {"vectors.vector": knn}}}}}
    else:
        knn = {"vector": q.tolist(), "k": max(k * vectors_per, CANDIDATES)}
        if flt:
            knn["filter"] = flt
        body = {"size": k, "_source": ["id"], "collapse": {"field": "id"},
                "query": {"knn": {"vector": knn}}}
    hits = client.search(index=layout, body=body)["hits"]["hits"]
    return [h["_source"]["id"] for h in hits]


vectors_per = 3


def main() -> None:
    global vectors_per
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:9250")
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    vectors_per = args.images + 1
    rng = np.random.default_rng(0)
    vectors = unit(rng, (args.products, vectors_per, args.dim))
    queries = unit(rng, (args.queries, args.dim))
    client = make_client(args.url, timeout=300)
    client.indices.delete(index="nested,flat", ignore_unavailable=True)
    load = os.getloadavg()[0]
    print(f"# {args.products} products x {vectors_per} vectors ({args.dim}-d random), "
          f"{platform.machine()} {os.cpu_count()} cores, load {load:.1f}, k=100")
    print("| layout | bulk s | store bytes/product | p50 ms | p99 ms | p50 ms filtered "
          "| duplicates | filtered k met | recall@100 |")
    print("|---|---|---|---|---|---|---|---|---|")
    best = (vectors @ queries.T).max(axis=1)  # products x queries
    for layout in ("nested", "flat"):
        seconds = build(client, layout, vectors)
        size = client.indices.stats(index=layout, metric="store")["indices"][layout][
            "primaries"]["store"]["size_in_bytes"]
        for q in queries[:5]:
            query(client, layout, q, 100, None)  # warm-up
        plain, filtered, dupes, short, recall = [], [], 0, 0, []
        for qi, q in enumerate(queries):
            t = time.perf_counter()
            ids = query(client, layout, q, 100, None)
            plain.append((time.perf_counter() - t) * 1000)
            dupes += len(ids) - len(set(ids))
            truth = {f"p{i}" for i in np.argsort(-best[:, qi])[:100]}
            recall.append(len(truth & set(ids)) / 100)
            t = time.perf_counter()
            ids = query(client, layout, q, 100, "red")
            filtered.append((time.perf_counter() - t) * 1000)
            short += len(set(ids)) < 100 or any(int(i[1:]) % len(COLORS) for i in ids)
        print(f"| {layout} | {seconds:.1f} | {size / args.products:,.0f} | "
              f"{np.percentile(plain, 50):.1f} | {np.percentile(plain, 99):.1f} | "
              f"{np.percentile(filtered, 50):.1f} | {dupes} | "
              f"{args.queries - short}/{args.queries} | {np.mean(recall):.3f} |")
    client.indices.delete(index="nested,flat", ignore_unavailable=True)


if __name__ == "__main__":
    main()
