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
import os
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


def make_data(kind: str, rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """'random': i.i.d. unit vectors (no structure: the worst case for any ANN index).
    'structured': a synthetic stand-in for embeddings, unit vectors near a
    48-d subspace plus noise. It is NOT real CLIP data; it only shows how HNSW
    behaves when the data has low intrinsic dimension, as embeddings do."""
    if kind == "random":
        return unit_vectors(rng, n, dim)
    basis = rng.standard_normal((48, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = rng.standard_normal((m, 48), dtype=np.float32) @ basis
        block += 0.3 * rng.standard_normal((m, dim), dtype=np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def run(size: int, dim: int, n_queries: int, ef_values: list[int], seed: int,
        kind: str) -> list[dict]:
    rng = np.random.default_rng(seed)
    data = make_data(kind, rng, size + n_queries, dim)
    vectors, queries = data[:size], data[size:]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        index = LocalIndex(Path(tmp), ann_threshold=size + 1)
        start = time.perf_counter()
        for lo in range(0, size, 10_000):
            index.upsert([IndexRecord(Product(f"p{i}", f"p{i}"), vectors[i])
                          for i in range(lo, min(size, lo + 10_000))])
        load_s = time.perf_counter() - start

        floor = percentiles(timed_queries(lambda q: brute_force_top(vectors, q, 10), queries))
        exact = percentiles(timed_queries(lambda q: index.knn(q, 10), queries))
        truth = [set(brute_force_top(vectors, q, 10).tolist()) for q in queries]
        rows.append({"n": size, "data": kind, "mode": "numpy floor", "p50_ms": floor[0],
                     "p99_ms": floor[1], "recall_at_10": 1.0, "load_s": round(load_s, 1)})
        rows.append({"n": size, "data": kind, "mode": "LocalIndex exact", "p50_ms": exact[0],
                     "p99_ms": exact[1], "recall_at_10": 1.0})

        if not ef_values:  # exact-only run (e.g. to time 1M without a long graph build)
            index.close()
            for row in rows:
                row["vs_floor_p50"] = row["p50_ms"] / floor[0]
            return rows
        index.ann_threshold = size
        start = time.perf_counter()
        index.flush()  # builds and saves the HNSW graph
        build_s = time.perf_counter() - start
        for ef in ef_values:
            index.ef_search = ef
            results: list[list[int]] = []

            def ann_query(q, results=results):
                results.append([int(h.product.id[1:]) for h in index.knn(q, 10)])

            ann = percentiles(timed_queries(ann_query, queries))
            recall = float(np.mean([len(set(r) & t) / 10
                                    for r, t in zip(results[1:], truth, strict=True)]))
            rows.append({"n": size, "data": kind, "mode": f"LocalIndex HNSW ef={ef}",
                         "p50_ms": ann[0], "p99_ms": ann[1], "recall_at_10": recall,
                         "build_s": round(build_s, 1)})
    for row in rows:
        row["vs_floor_p50"] = row["p50_ms"] / floor[0]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--data", choices=["random", "structured"], default="random")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef", type=int, nargs="*", default=[config.HNSW_EF_SEARCH],
                        help="HNSW ef_search values to sweep; none = exact only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {args.dim}-d {args.data} unit "
          f"vectors, {args.queries} queries, k=10, HNSW M={config.HNSW_M} "
          f"efConstruction={config.HNSW_EF_CONSTRUCTION}")
    print("| N | mode | p50 ms | p99 ms | p50 / numpy floor | recall@10 | load / build s |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for size in args.sizes:
        for r in run(size, args.dim, args.queries, args.ef, args.seed, args.data):
            rows.append(r)
            secs = r.get("load_s", r.get("build_s", ""))
            print(f"| {r['n']:,} | {r['mode']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                  f"{r['vs_floor_p50']:.2f}x | {r['recall_at_10']:.3f} | {secs} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
