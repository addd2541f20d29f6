"""Load test of the query Lambda through the local stack: N concurrent clients for T seconds.

The local stack is the one the Lambda tests use (tests/lambda_support.py):
S3 and SQS are moto in this process; the SageMaker endpoint is the emulator
(`clipsearch model serve`) in its own process, serving a packaged
random-weight CLIP (`--preset tiny` or `vit-b-32`, which has the real
ViT-B/32 compute cost); OpenSearch is a real node started for the run
(scripts/opensearch_node.py). The demo catalog is loaded through the ingest
Lambda from S3 events first.

Each client is its own "container": a fresh import of lambda/query/handler.py,
with its own clients and service, called in a closed loop from its own thread
(the next request as soon as the previous answer is back). The mix covers the
API: text search (GET and POST), image search (base64 and image_s3_key), text
plus image, more like this and product lookup. Latency is measured around the
handler call, so it is what the Lambda adds to API Gateway's own overhead.

    .venv/bin/python benchmarks/load_lambda.py --clients 20 --duration 30

Exit status 1 when any request did not answer 200.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import free_port, percentile  # noqa: E402

TEXTS = ["red circle", "blue striped rug", "yellow square tile", "green dotted cushion",
         "black triangle poster", "orange rug", "purple poster", "pink square"]
MIX = [("text GET", 25), ("text POST", 15), ("image", 15), ("image_s3_key", 10),
       ("text+image", 10), ("similar", 15), ("product", 10)]






class Endpoint:
    """The emulator in a subprocess: a separate machine on AWS, so not sharing our GIL."""

    def __init__(self, artifact: Path, name: str = "clipsearch-bench") -> None:
        self.endpoint_name = name
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "clipsearch.cli", "model", "serve", str(artifact),
             "--port", str(port), "--endpoint-name", name],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "listening on" in line:
                break
        else:
            raise SystemExit("the endpoint emulator exited before it was ready")
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def requests_for(products: list[Any], seed: int):
    from tests.lambda_support import api_event

    rng = random.Random(seed)
    images = [base64.b64encode(Path(p.image).read_bytes()).decode() for p in products]
    kinds = [k for k, weight in MIX for _ in range(weight)]
    while True:
        kind = rng.choice(kinds)
        i = rng.randrange(len(products))
        product = products[i]
        if kind == "text GET":
            event = api_event("GET", "/search", {"q": rng.choice(TEXTS), "k": "10"})
        elif kind == "text POST":
            event = api_event("POST", "/search", body=json.dumps(
                {"text": rng.choice(TEXTS), "k": 10, "filters": {"category": "poster"}}))
        elif kind == "image":
            event = api_event("POST", "/search", body=json.dumps({"image": images[i], "k": 10}))
        elif kind == "image_s3_key":
            event = api_event("POST", "/search", body=json.dumps(
                {"image_s3_key": f"images/{Path(product.image).name}", "k": 10}))
        elif kind == "text+image":
            event = api_event("POST", "/search", body=json.dumps(
                {"text": rng.choice(TEXTS), "image": images[i], "k": 10}))
        elif kind == "similar":
            event = api_event("GET", f"/products/{product.id}/similar", {"k": "10"})
        else:
            event = api_event("GET", f"/products/{product.id}")
        yield kind, event


def run(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    from moto import mock_aws

    from clipsearch.catalog import read_catalog
    from clipsearch.demo import write_demo_catalog
    from clipsearch.random_clip import build_random_clip
    from clipsearch.sagemaker.package import build_artifact

    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():
        os.environ[key] = value
    logging.disable(logging.WARNING)  # per-request logs would measure stdout, not the Lambda
    work = Path(args.workdir).resolve()
    model_dir = work / "models" / args.preset
    if not (model_dir / "config.json").exists():
        build_random_clip(model_dir, preset=args.preset)
    artifact = work / f"model-{args.preset}.tar.gz"
    if not artifact.exists():
        build_artifact(model_dir, artifact)
    products = read_catalog(write_demo_catalog(work / "demo")).products

    sys.path.insert(0, str(ROOT / "scripts"))
    import opensearch_node

    os_port = free_port()
    opensearch_url = opensearch_node.start(os_port, Path(tempfile.mkdtemp(prefix="os-")), "1g")
    endpoint = Endpoint(artifact)
    try:
        with mock_aws():
            from clipsearch.encoders.sagemaker import SageMakerEncoder
            from tests.lambda_support import (
                LambdaContext,
                ingest_demo,
                load_handler,
                make_world,
            )

            model_id = SageMakerEncoder(endpoint.endpoint_name, endpoint_url=endpoint.url,
                                        region_name="us-east-1").model_id
            world = make_world(opensearch_url, endpoint, model_id,
                               extra_env={"POWERTOOLS_LOG_LEVEL": "ERROR"})
            os.environ.update(world.env)
            reports = ingest_demo(world, load_handler("ingest"), products)
            assert all(not r.failed for r in reports), "the demo catalog did not ingest"

            containers = [load_handler("query") for _ in range(args.clients)]
            sink_out = open(os.devnull, "w")  # noqa: SIM115  (closed below)
            saved_out, sys.stdout = sys.stdout, sink_out
            # Warm-up (cold starts are not what this measures): one of each kind each.
            for number, container in enumerate(containers):
                seen: set[str] = set()
                for kind, event in requests_for(products, seed=-1 - number):
                    if kind in seen:
                        continue
                    answer = container.handler(event, LambdaContext("bench"))
                    assert answer["statusCode"] == 200, answer["body"][:300]
                    seen.add(kind)
                    if len(seen) == len(MIX):
                        break
            sys.stdout = saved_out
            sink_out.close()

            latencies: list[tuple[str, float]] = []
            errors: list[str] = []
            lock = threading.Lock()
            started = time.perf_counter()
            deadline = started + args.duration

            def client(number: int) -> None:
                container = containers[number]
                for kind, event in requests_for(products, seed=number):
                    if time.perf_counter() >= deadline:
                        return
                    t0 = time.perf_counter()
                    try:
                        answer = container.handler(event, LambdaContext("bench"))
                        status = answer["statusCode"]
                        problem = None if status == 200 else f"{kind}: {status} " \
                            f"{answer['body'][:200]}"
                    except Exception as exc:  # counted, never hidden
                        problem = f"{kind}: {type(exc).__name__}: {exc}"
                    elapsed = (time.perf_counter() - t0) * 1000
                    with lock:
                        latencies.append((kind, elapsed))
                        if problem:
                            errors.append(problem)

            threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
            # The handlers print their metrics (EMF) to stdout, as on Lambda; keep the
            # cost, drop the text. Powertools keeps metric state per process, so the 20
            # in-process "containers" would interleave their flushes anyway.
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            elapsed = time.perf_counter() - started
    finally:
        endpoint.stop()
        opensearch_node.stop(os_port)

    rows = {}
    for kind in [k for k, _ in MIX] + ["all"]:
        values = sorted(ms for k, ms in latencies if kind in ("all", k))
        rows[kind] = {"requests": len(values), "p50_ms": round(percentile(values, 50), 1),
                      "p99_ms": round(percentile(values, 99), 1),
                      "max_ms": round(values[-1], 1) if values else None}
    return {"clients": args.clients, "duration_s": round(elapsed, 1), "preset": args.preset,
            "requests": len(latencies), "errors": len(errors), "first_errors": errors[:5],
            "req_per_s": round(len(latencies) / elapsed, 1), "by_kind": rows,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "vit-b-32"], default="tiny")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".clipsearch" / "bench-lambda")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    summary = run(args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['clients']} clients, {summary['duration_s']} s, preset "
              f"{summary['preset']}: {summary['requests']} requests, {summary['errors']} errors, "
              f"{summary['req_per_s']} req/s ({summary['machine']})")
        for kind, row in summary["by_kind"].items():
            print(f"  {kind:<13} n={row['requests']:<6} p50 {row['p50_ms']:>8} ms   "
                  f"p99 {row['p99_ms']:>8} ms   max {row['max_ms']} ms")
        for error in summary["first_errors"]:
            print(f"  error: {error}")
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
