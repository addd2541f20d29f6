"""Bootstrap throughput by step, in products per second, on this machine.

What runs is the real pipeline (`clipsearch.bootstrap.pipeline.Bootstrap`):

- upload:    images + catalog to S3 through boto3, with moto standing in for
             S3 (in-process, so this measures the client side: hashing,
             listing, request signing and moto's own overhead, not a network);
- transform: `--local-transform` with the full ViT-B/32 architecture (random
             weights, the real compute cost), packaged by the real packaging
             code: writing the base64 JSON Lines input to S3, loading the
             model, the handler over MultiRecord mini-batches, writing outputs;
- index:     parsing the outputs and bulk-loading 512-d vectors into a real
             OpenSearch 2.19 node (Lucene HNSW), then the alias swap;
- re-run:    the same command again with nothing changed (every step skipped).

    .venv/bin/python -m benchmarks.bootstrap [--products 1000] [--work DIR]

The catalog is synthetic: photo-like 256 px JPEGs (ABO's "small" images are
at most 256 px), one per product.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REGION = "us-east-1"
STACK = "Clipsearch-bench"
BUCKET = "clipsearch-bench-catalog"
MODEL = "clipsearch-bench-model"


def product_jpeg(rng: np.random.Generator, size: int = 256) -> bytes:
    """A product-shot-like JPEG: a light gradient, one coloured shape, a little noise."""
    from PIL import Image, ImageDraw

    y = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    base = np.broadcast_to(235 - 30 * y, (size, size, 3))
    noise = rng.normal(0, 5, (size, size, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    x0, y0 = rng.uniform(0.1, 0.4, 2) * size
    x1, y1 = rng.uniform(0.6, 0.9, 2) * size
    fill = tuple(int(c) for c in rng.integers(20, 230, 3))
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def make_catalog(directory: Path, count: int) -> Path:
    """catalog.jsonl + images/, written once per size and reused."""
    catalog = directory / "catalog.jsonl"
    if catalog.is_file() and sum(1 for _ in catalog.open()) == count:
        return catalog
    rng = np.random.default_rng(7)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    with catalog.open("w") as handle:
        for i in range(count):
            pid = f"B{i:07d}"
            (directory / "images" / f"{pid}.jpg").write_bytes(product_jpeg(rng))
            record = {"id": pid, "title": f"Product {i}", "image": f"images/{pid}.jpg",
                      "attributes": {"brand": f"brand{i % 17}", "price": round(5 + i % 90, 2)}}
            handle.write(json.dumps(record) + "\n")
    return catalog


def vit_b32_artifact(work: Path) -> Path:
    from clipsearch.random_clip import build_random_clip
    from clipsearch.sagemaker.package import build_artifact

    artifact = work / "vit-b-32-model.tar.gz"
    if not artifact.is_file():
        weights = build_random_clip(work / "vit-b-32", preset="vit-b-32")
        build_artifact(weights, artifact, model_id="random/vit-b-32")
    return artifact


def deploy(session: Any, opensearch_url: str, alias: str) -> None:
    """A moto stack with the CDK stack's output names, and the catalog bucket."""
    template = {
        "Resources": {"Bucket": {"Type": "AWS::S3::Bucket",
                                 "Properties": {"BucketName": BUCKET}}},
        "Outputs": {"BucketName": {"Value": {"Ref": "Bucket"}},
                    "OpenSearchUrl": {"Value": opensearch_url},
                    "IndexAlias": {"Value": alias}, "ModelName": {"Value": MODEL}},
    }
    session.client("cloudformation").create_stack(StackName=STACK,
                                                   TemplateBody=json.dumps(template))


def start_node(work: Path) -> tuple[Any, int, str]:
    import importlib.util
    import socket

    spec = importlib.util.spec_from_file_location("opensearch_node",
                                                  REPO / "scripts" / "opensearch_node.py")
    assert spec and spec.loader
    node = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(node)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return node, port, node.start(port, work / "opensearch-data", "1g")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--records-per-file", type=int, default=250)
    parser.add_argument("--work", type=Path, default=REPO / ".clipsearch" / "bench-bootstrap")
    parser.add_argument("--opensearch-url", help="use this node instead of starting one")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import boto3
    from moto import mock_aws

    from clipsearch.bootstrap.options import BootstrapOptions
    from clipsearch.bootstrap.pipeline import Bootstrap

    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_DEFAULT_REGION": REGION}.items():
        os.environ[name] = value
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    catalog = make_catalog(args.work / f"catalog-{args.products}", args.products)
    artifact = vit_b32_artifact(args.work)
    print(f"catalog and artifact ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    node = port = None
    url = args.opensearch_url
    if url is None:
        node, port, url = start_node(args.work)
    alias = f"bench{int(time.time())}"
    results: dict[str, Any] = {}
    try:
        with mock_aws():
            session = boto3.Session(region_name=REGION)
            deploy(session, url, alias)
            options = BootstrapOptions(
                catalog=catalog, stack_name=STACK, region=REGION, local_transform=True,
                model_artifact=artifact, records_per_file=args.records_per_file,
                state_dir=args.work / f"state-{alias}", progress=False)
            started = time.perf_counter()
            report = Bootstrap(options, session=session).run()
            first = time.perf_counter() - started
            started = time.perf_counter()
            rerun = Bootstrap(options, session=session).run()
            second = time.perf_counter() - started
        steps = {name: step.to_dict() for name, step in report.steps.items()}
        results = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "products": args.products, "indexed": report.indexed,
            "failed": len(report.failures),
            "image_bytes": sum(p.stat().st_size for p in (catalog.parent / "images").iterdir()),
            "steps": {n: {"seconds": s["seconds"], "products_per_s": s["products_per_s"]}
                      for n, s in steps.items() if n in ("upload", "transform", "index",
                                                         "publish")},
            "transform_detail": {k: steps["transform"].get(k) for k in
                                 ("model_load_s", "handler_s", "handler_products_per_s")},
            "total_s": round(first, 2),
            "rerun_s": round(second, 2),
            "rerun_steps": {n: s.status for n, s in rerun.steps.items()},
        }
    finally:
        if node is not None:
            node.stop(port)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
