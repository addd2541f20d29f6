"""`clipsearch eval` throughput (queries/s) on the local index and an OpenSearch node.

The model is the ViT-B/32 CLIP architecture with RANDOM weights (no model hub
here), so the figures are speed only, never quality. The catalog is drawn in
code: N coloured-shape products with a second (close-up) photo each, as the
demo's; the query set mixes title2product (text) and image2product (image)
queries, and runs through the same code as `clipsearch eval`: the runner and
the in-process target over the API router.

Start a node first:
    python scripts/opensearch_node.py start --port 9299 --data /tmp/evalbench
    .venv/bin/python -m benchmarks.eval_throughput --opensearch http://127.0.0.1:9299
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
import uuid
from pathlib import Path

from clipsearch.catalog import Product
from clipsearch.demo import SHAPES, _draw
from clipsearch.encoders.clip import ClipEncoder
from clipsearch.eval.queries import generate
from clipsearch.eval.runner import evaluate
from clipsearch.eval.targets import ServiceTarget
from clipsearch.random_clip import build_random_clip
from clipsearch.service import SearchService


def make_catalog(directory: Path, size: int, seed: int = 0) -> list[Product]:
    rng = random.Random(seed)
    products = []
    for i in range(size):
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        shape = SHAPES[i % len(SHAPES)]
        image = _draw(color, shape)
        main, closeup = directory / f"p{i}.png", directory / f"p{i}-closeup.png"
        image.save(main)
        image.crop((28, 28, 196, 196)).resize(image.size).save(closeup)
        products.append(Product(f"p{i}", f"{shape} number {i} in colour {color}",
                                images=(str(main), str(closeup))))
    return products


def measure(name: str, service: SearchService, queries, k: int) -> tuple[str, float, dict]:
    target = ServiceTarget(service, name)
    evaluate(queries[:5], target, k)  # warm-up: first-call costs are not throughput
    start = time.perf_counter()
    result = evaluate(queries, target, k)
    elapsed = time.perf_counter() - start
    assert not result.failed, result.failed[:3]
    return name, len(queries) / elapsed, result.latency_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--queries", type=int, default=100, help="per task (text, image)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--opensearch", help="URL of a running node (else local only)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="evalbench-"))
    model_dir = build_random_clip(work / "vit-b-32", preset="vit-b-32")
    encoder = ClipEncoder(str(model_dir))
    (work / "images").mkdir()
    products = make_catalog(work / "images", args.products)
    queries = (generate("title2product", products, sample=args.queries, seed=1)
               + generate("image2product", products, sample=args.queries, seed=2))
    load = os.getloadavg()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}; "
          f"ViT-B/32 architecture, RANDOM weights; {len(products)} products, "
          f"{len(queries)} queries (half text, half image), k={args.k}; "
          f"load average {load[0]:.1f} at start")
    from clipsearch.index.local import LocalIndex

    rows = []
    local = SearchService(encoder, LocalIndex(work / "index"))
    start = time.perf_counter()
    report = local.ingest(products)
    assert report.indexed == len(products), report.failed[:3]
    print(f"# local ingest {len(products) / (time.perf_counter() - start):.1f} products/s")
    rows.append(measure("local (LocalIndex, exact)", local, queries, args.k))
    if args.opensearch:
        from clipsearch.index.opensearch import OpenSearchIndex

        index = OpenSearchIndex.from_url(args.opensearch,
                                         alias=f"evalbench-{uuid.uuid4().hex[:6]}")
        remote = SearchService(encoder, index)
        # Same vectors, no re-encoding: copy them from the local index.
        from clipsearch.index import IndexRecord

        records = [IndexRecord(p, local.index.get_vector(p.id)) for p in products]
        result = index.upsert(records)
        assert not result.failures, result.failures[:3]
        index.flush()
        rows.append(measure("OpenSearch node", remote, queries, args.k))
    print("| target | queries/s | p50 ms | p95 ms |")
    print("|---|---|---|---|")
    for name, rate, latency in rows:
        print(f"| {name} | {rate:.1f} | {latency['p50']:.1f} | {latency['p95']:.1f} |")
    print(f"# load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
