"""LocalIndex latency and recall against the numpy brute-force floor.

For each size N it loads N random 512-d unit vectors (the hardest case for
HNSW: no cluster structure to exploit) into a LocalIndex, then measures
- exact mode: LocalIndex latency, and plain numpy `matrix @ q` + argpartition
  (the floor) on the same queries; their ratio is LocalIndex's overhead;
- ANN mode: HNSW build time, latency and recall@10 against brute force.

Run: .venv/bin/python -m benchmarks.local_index --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from clipsearch import config
from clipsearch.catalog import Product
from clipsearch.index import IndexRecord
from clipsearch.index.local import LocalIndex


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # chunked to bound peak memory at 1M
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.array(samples) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def timed_queries(fn, queries) -> list[float]:
    fn(queries[0])  # warm-up
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - start)
    return times


def brute_force_top(matrix: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = matrix @ q
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def run(size: int, dim: int, n_queries: int, ef_search: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    vectors = unit_vectors(rng, size, dim)
    queries = unit_vectors(rng, n_queries, dim)
    with tempfile.TemporaryDirectory() as tmp:
        index = LocalIndex(Path(tmp), ann_threshold=size + 1, ef_search=ef_search)
        start = time.perf_counter()
        for lo in range(0, size, 10_000):
            index.upsert([IndexRecord(Product(f"p{i}", f"p{i}"), vectors[i])
                          for i in range(lo, min(size, lo + 10_000))])
        load_s = time.perf_counter() - start

        floor = timed_queries(lambda q: brute_force_top(vectors, q, 10), queries)
        exact = timed_queries(lambda q: index.knn(q, 10), queries)
        truth = [set(brute_force_top(vectors, q, 10).tolist()) for q in queries]

        index.ann_threshold = size
        start = time.perf_counter()
        index.flush()  # builds and saves the HNSW graph
        build_s = time.perf_counter() - start
        results: list[list[int]] = []

        def ann_query(q):
            results.append([int(h.product.id[1:]) for h in index.knn(q, 10)])

        ann = timed_queries(ann_query, queries)
        results = results[1:]  # drop the warm-up
        recall = float(np.mean([len(set(r) & t) / 10 for r, t in zip(results, truth,
                                                                       strict=True)]))
    floor_p = percentiles(floor)
    exact_p = percentiles(exact)
    ann_p = percentiles(ann)
    return {
        "n": size, "dim": dim, "queries": n_queries, "ef_search": ef_search,
        "hnsw_m": config.HNSW_M, "ef_construction": config.HNSW_EF_CONSTRUCTION,
        "load_s": round(load_s, 1), "hnsw_build_s": round(build_s, 1),
        "floor_p50_ms": floor_p[0], "floor_p99_ms": floor_p[1],
        "exact_p50_ms": exact_p[0], "exact_p99_ms": exact_p[1],
        "exact_over_floor": exact_p[0] / floor_p[0],
        "ann_p50_ms": ann_p[0], "ann_p99_ms": ann_p[1],
        "ann_recall_at_10": recall,
        "floor_over_ann": floor_p[0] / ann_p[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=config.HNSW_EF_SEARCH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {args.dim}-d, "
          f"{args.queries} queries, k=10")
    print("| N | load s | HNSW build s | numpy floor p50/p99 ms | exact p50/p99 ms | "
          "exact/floor | HNSW p50/p99 ms | recall@10 | floor/HNSW |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for size in args.sizes:
        r = run(size, args.dim, args.queries, args.ef_search, args.seed)
        rows.append(r)
        print(f"| {r['n']:,} | {r['load_s']} | {r['hnsw_build_s']} | "
              f"{r['floor_p50_ms']:.2f} / {r['floor_p99_ms']:.2f} | "
              f"{r['exact_p50_ms']:.2f} / {r['exact_p99_ms']:.2f} | "
              f"{r['exact_over_floor']:.2f}x | {r['ann_p50_ms']:.2f} / {r['ann_p99_ms']:.2f} | "
              f"{r['ann_recall_at_10']:.3f} | {r['floor_over_ann']:.1f}x |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
