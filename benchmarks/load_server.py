"""Load test of `clipsearch serve`: N concurrent clients for T seconds, zero errors required.

What it runs: the real CLI (`clipsearch serve`) in a subprocess on loopback,
over the offline demo catalog indexed with a random-weight CLIP (no model hub
needed). `--preset vit-b-32` has the real ViT-B/32 architecture and so its
real compute cost; `tiny` only measures the HTTP and index overhead.

The clients replay a mix of the API's real request kinds:
text search (GET), image search (POST, base64), text plus image (POST),
more like this (GET) and product lookup (GET). Each client sends its next
request as soon as the previous one is answered (closed loop), so the
numbers are latency under a concurrency of N, and req/s is the throughput
the server sustains at that concurrency.

    .venv/bin/python benchmarks/load_server.py --preset vit-b-32 --clients 20 --duration 30

Exit status 1 when any request failed (a non-200 status or a transport error).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import free_port, percentile  # noqa: E402

TEXTS = ["red circle", "blue striped rug", "yellow square tile", "green dotted cushion",
         "black triangle poster", "orange rug", "purple poster", "pink square",
         "a round red thing", "striped", "dotted cushion in blue", "wooden chair"]
MIX = [("text", 40), ("image", 20), ("text+image", 10), ("similar", 20), ("product", 10)]




def prepare(workdir: Path, preset: str) -> tuple[Path, Path, list[dict]]:
    """Random-weight model, demo catalog and its index; reused when already built."""
    from clipsearch.catalog import read_catalog
    from clipsearch.demo import write_demo_catalog
    from clipsearch.random_clip import build_random_clip

    model_dir = workdir / "models" / preset
    if not (model_dir / "config.json").exists():
        print(f"building random-weight CLIP ({preset}) in {model_dir}", file=sys.stderr)
        build_random_clip(model_dir, preset=preset)
    catalog = write_demo_catalog(workdir / "demo")
    data_dir = workdir / f"data-{preset}"
    if not (data_dir / "index" / "products.sqlite3").exists():
        subprocess.run([sys.executable, "-m", "clipsearch.cli", "--data-dir", str(data_dir),
                        "--model", str(model_dir), "ingest", str(catalog), "--no-progress"],
                       check=True, cwd=ROOT, stdout=sys.stderr)
    products = [p.to_dict() for p in read_catalog(catalog).products]
    return model_dir, data_dir, products


def start_server(model_dir: Path, data_dir: Path, port: int, log_path: Path,
                 cli_args: Sequence[str] = (), serve_args: Sequence[str] = ()
                 ) -> subprocess.Popen:
    """`clipsearch [cli_args] serve [serve_args]`: global options go before `serve`."""
    log = log_path.open("w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "clipsearch.cli", "--data-dir", str(data_dir),
         "--model", str(model_dir), *cli_args, "serve", "--host", "127.0.0.1",
         "--port", str(port), *serve_args],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
    )


def wait_ready(base_url: str, server: subprocess.Popen, log_path: Path,
               timeout: float = 600) -> None:
    """Until /health answers; a server that exits first is reported with its log."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            print(log_path.read_text(), file=sys.stderr)
            raise SystemExit("the server exited before it was ready")
        try:
            if httpx.get(base_url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not become ready in {timeout:.0f} s")
        time.sleep(0.3)


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()




def make_requests(products: list[dict], seed: int):
    """An endless, seeded stream of (kind, method, path, json body) requests."""
    import itertools

    rng = random.Random(seed)
    images = [base64.b64encode(Path(p["image"]).read_bytes()).decode() for p in products]
    kinds = [k for k, weight in MIX for _ in range(weight)]
    for _ in itertools.count():
        kind = rng.choice(kinds)
        product = rng.randrange(len(products))
        if kind == "text":
            yield kind, "GET", "/search", {"q": rng.choice(TEXTS), "k": "10"}, None
        elif kind == "image":
            yield kind, "POST", "/search", None, {"image": images[product], "k": 10}
        elif kind == "text+image":
            yield kind, "POST", "/search", None, {"text": rng.choice(TEXTS),
                                                  "image": images[product], "k": 10}
        elif kind == "similar":
            yield kind, "GET", f"/products/{products[product]['id']}/similar", {"k": "10"}, None
        else:
            yield kind, "GET", f"/products/{products[product]['id']}", None, None


async def run_load(base_url: str, products: list[dict], clients: int, duration: float
                   ) -> tuple[list[tuple[str, float]], list[str], float]:
    import httpx

    latencies: list[tuple[str, float]] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        # Warm-up, not counted: one of each kind, so lazy initialisation is not measured.
        warm = make_requests(products, seed=-1)
        seen: set[str] = set()
        while len(seen) < len(MIX):
            kind, method, path, params, body = next(warm)
            resp = await client.request(method, path, params=params, json=body)
            resp.raise_for_status()
            seen.add(kind)

        started = time.perf_counter()
        deadline = started + duration

        async def worker(index: int) -> None:
            for kind, method, path, params, body in make_requests(products, seed=index):
                if time.perf_counter() >= deadline:
                    return
                t0 = time.perf_counter()
                try:
                    resp = await client.request(method, path, params=params, json=body)
                    if resp.status_code != 200:
                        errors.append(f"{kind}: HTTP {resp.status_code} {resp.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                latencies.append((kind, (time.perf_counter() - t0) * 1000))

        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def report(latencies: list[tuple[str, float]], errors: list[str], elapsed: float,
           args: argparse.Namespace) -> dict:
    rows = {}
    for kind in [k for k, _ in MIX] + ["all"]:
        values = sorted(ms for k, ms in latencies if kind in ("all", k))
        rows[kind] = {"requests": len(values), "p50_ms": round(percentile(values, 50), 1),
                      "p90_ms": round(percentile(values, 90), 1),
                      "p99_ms": round(percentile(values, 99), 1),
                      "max_ms": round(values[-1], 1) if values else None}
    return {
        "server": f"clipsearch {args.cli_args} serve {args.serve_args}".replace("  ", " "),
        "clients": args.clients, "duration_s": round(elapsed, 1), "preset": args.preset,
        "requests": len(latencies), "errors": len(errors),
        "req_per_s": round(len(latencies) / elapsed, 1), "by_kind": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "python": platform.python_version(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "vit-b-32"], default="vit-b-32")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".clipsearch" / "bench-server")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--cli-args", default="", help="options before `serve`, e.g. "
                        "'--runtime torch --threads 1'")
    parser.add_argument("--serve-args", default="", help="options after `serve`, e.g. "
                        "'--no-query-cache --no-micro-batching'")
    args = parser.parse_args()

    # Absolute paths: the index records the model path it was built with.
    model_dir, data_dir, products = prepare(args.workdir.resolve(), args.preset)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = args.workdir.resolve() / "server.log"
    server = start_server(model_dir, data_dir, port, log_path, shlex.split(args.cli_args),
                          shlex.split(args.serve_args))
    try:
        wait_ready(base_url, server, log_path)
        latencies, errors, elapsed = asyncio.run(
            run_load(base_url, products, args.clients, args.duration))
    finally:
        stop_server(server)

    summary = report(latencies, errors, elapsed, args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['requests']} requests in {summary['duration_s']} s from "
              f"{args.clients} clients: {summary['req_per_s']} req/s, "
              f"{summary['errors']} errors ({args.preset} random-weight CLIP, "
              f"{len(products)} products; {summary['machine']})")
        print(f"{'kind':<11} {'requests':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
              f"{'max ms':>8}")
        for kind, row in summary["by_kind"].items():
            print(f"{kind:<11} {row['requests']:>8} {row['p50_ms']:>8} {row['p90_ms']:>8} "
                  f"{row['p99_ms']:>8} {row['max_ms']!s:>8}")
    for line in errors[:20]:
        print("error:", line, file=sys.stderr)
    return 1 if errors or not latencies else 0


if __name__ == "__main__":
    sys.exit(main())
