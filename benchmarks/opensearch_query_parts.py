"""What a nested k-NN query's time is made of: the search, `inner_hits`, the `_source` fetch.

Runs against an index left by `benchmarks.hybrid_latency --keep` (products with
a `nested` list of vectors, the `OpenSearchIndex` mapping) and times, per
random query vector, six variants of the product k-NN query, **interleaved**
(the order alternating) so they share the machine's load:

- `inner+src`: with `inner_hits` naming the matched vector (what
  `OpenSearchIndex` sent before it stopped asking for it) and `_source`
  without the vectors (what it sends);
- `src`: the same without `inner_hits` (today's query);
- `ids`: without `_source` either (ids and scores only): the floor a query
  that fetched documents only for the page it shows could reach;

each at `size` 10 (vector mode, k=10) and 100 (hybrid's rank window).

    .venv/bin/python -m benchmarks.opensearch_query_parts --url http://127.0.0.1:9360 \\
        --alias hybench-keep-100000-seed0-d512 --queries 100
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from opensearchpy import OpenSearch

from clipsearch.index.opensearch import OpenSearchIndex


def body(index: OpenSearchIndex, vector: list[float], size: int, inner_hits: bool,
         source: bool) -> dict:
    """The query `OpenSearchIndex.knn` sends, with `inner_hits` added or `_source` off."""
    query = index._knn_body(vector, size, (), ())
    if inner_hits:
        query["query"]["nested"]["inner_hits"] = {"size": 1, "_source": ["vectors.key"]}
    if not source:
        query["_source"] = False
    return query


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--alias", required=True, help="an index left by hybrid_latency --keep")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    client = OpenSearch(args.url, timeout=120)
    index = OpenSearchIndex(client, alias=args.alias)
    variants = {f"{name}@{size}": (size, inner, source) for size in (10, 100)
                for name, inner, source in (("inner+src", True, True), ("src", False, True),
                                            ("ids", False, False))}
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(7)
    for i in range(args.warmup + args.queries):
        vector = rng.standard_normal(args.dim)
        vector = (vector / np.linalg.norm(vector)).astype(np.float32).tolist()
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            client.search(index=args.alias, body=body(index, vector, *variants[name]))
            if i >= args.warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.queries} queries "
          f"on {args.alias}")
    print("| query | size | p50 ms | p99 ms |\n|---|---|---|---|")
    for name in names:
        label, size = name.split("@")
        print(f"| {label} | {size} | {np.percentile(times[name], 50):.2f} | "
              f"{np.percentile(times[name], 99):.2f} |")


if __name__ == "__main__":
    main()
