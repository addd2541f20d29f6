"""OpenSearchIndex against a real node: bulk throughput, query latency, recall@10.

Start a node first (its heap is part of the result):
    python scripts/opensearch_node.py start --port 9250 --heap 2g --full-jit
    .venv/bin/python -m benchmarks.opensearch_index --url http://127.0.0.1:9250 \
        --sizes 10000 100000

Vectors are random 512-d unit vectors (the hardest case for HNSW); recall is
measured against an exact numpy ranking of the same vectors.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import uuid

import numpy as np

from clipsearch.catalog import Product
from clipsearch.index import IndexRecord
from clipsearch.index.opensearch import CANDIDATES, HNSW_EF_CONSTRUCTION, HNSW_M, OpenSearchIndex


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    m = rng.standard_normal((n, dim), dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:9250")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=500)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    index0 = OpenSearchIndex.from_url(args.url, timeout=120)
    nodes = index0.client.nodes.stats(metric="jvm")["nodes"]
    heap = next(iter(nodes.values()))["jvm"]["mem"]["heap_max_in_bytes"] / 2**30
    print(f"# OpenSearch at {args.url} (heap {heap:.1f} GiB), {platform.machine()}, "
          f"{os.cpu_count()} cores; HNSW m={HNSW_M} ef_construction={HNSW_EF_CONSTRUCTION} "
          f"(lucene), {CANDIDATES} candidates; {args.dim}-d random unit vectors, k=10")
    print("| N | bulk docs/s | force-merged | query p50 ms | query p99 ms | recall@10 |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        vectors = unit(rng, size, args.dim)
        queries = unit(rng, args.queries, args.dim)
        index = OpenSearchIndex(index0.client, alias=f"bench-{uuid.uuid4().hex[:6]}",
                                chunk_size=args.chunk_size)
        start = time.perf_counter()
        for lo in range(0, size, 5000):
            result = index.upsert([IndexRecord(Product(f"p{i}", f"p{i}"), vectors[i])
                                   for i in range(lo, min(size, lo + 5000))])
            assert not result.failures, result.failures[:3]
        index.flush()
        rate = size / (time.perf_counter() - start)
        for merged in (False, True):
            if merged:  # what a bootstrap does after a bulk load
                index.client.indices.forcemerge(index=index.current_index(),
                                                max_num_segments=1, request_timeout=3600)
            index.knn(queries[0], 10)
            times, found = [], 0
            for q in queries:
                t = time.perf_counter()
                hits = index.knn(q, 10)
                times.append(time.perf_counter() - t)
                truth = set(np.argpartition(-(vectors @ q), 9)[:10].tolist())
                found += len(truth & {int(h.product.id[1:]) for h in hits})
            ms = np.array(times) * 1000
            print(f"| {size:,} | {rate:,.0f} | {'yes' if merged else 'no'} | "
                  f"{np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} | "
                  f"{found / (10 * len(queries)):.3f} |", flush=True)
        index.client.indices.delete(index=index.current_index())


if __name__ == "__main__":
    main()
