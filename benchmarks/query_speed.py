"""Query speed on a CPU: today's torch path against the fast path, in one run.

What it measures, on the ViT-B/32 architecture with random weights (the real
compute cost; rankings are meaningless, which this benchmark does not need):

1. Quality of the fast runtimes against fp32 torch, in process: the cosine
   between torch's vector and ONNX fp32's / ONNX int8's for every query text
   and catalog image (min and mean), and the recall@10 of each variant's
   ranking of the catalog against torch's, for text queries.
2. Latency through `clipsearch serve`, one client, every query new (so no
   cache hit): the torch path of today (`--runtime torch --threads 1`, no
   cache, no micro-batching) and the defaults (ONNX Runtime with one
   non-spinning thread per core, query cache, micro-batching), started one
   after the other in the same run.
3. A repeated text query on the fast server (a cache hit), through HTTP.
4. The defaults with `--quantize int8` (stderr details only).

    .venv/bin/python -m benchmarks.query_speed --json

prints exactly {"torch_text_p50_ms", "fast_text_p50_ms", "torch_image_p50_ms",
"fast_image_p50_ms", "cached_text_p50_ms", "cosine_min_fp32",
"cosine_min_int8"}; the full tables go to stderr.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_server import prepare, start_server, stop_server, wait_ready  # noqa: E402
from benchmarks.loadgen import free_port, percentile  # noqa: E402

WORDS = ["red", "blue", "green", "black", "white", "leather", "cotton", "wooden", "metal",
         "striped", "dotted", "round", "square", "shoe", "boot", "shirt", "dress", "bag",
         "chair", "lamp", "table", "mug", "sofa", "watch", "hat", "jacket"]
TORCH_TODAY = (["--runtime", "torch", "--threads", "1"],
               ["--no-query-cache", "--no-micro-batching"])
FAST = ([], [])  # the defaults: ONNX Runtime, threads auto, query cache, micro-batching
INT8 = (["--quantize", "int8"], [])  # the defaults with int8 towers


def unique_texts(count: int, seed: int = 0) -> list[str]:
    """Distinct product-like queries of 2-4 words."""
    import random

    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < count:
        seen.add(" ".join(rng.sample(WORDS, rng.randint(2, 4))))
    return sorted(seen)


def synthetic_pngs(count: int, size: int = 256, seed: int = 0) -> list[bytes]:
    """Distinct 256 px photos-to-be: smooth colour fields with noise, PNG-encoded."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    images = []
    for _ in range(count):
        a, b, c = rng.uniform(0, 255, 3), rng.uniform(-255, 255, 3), rng.uniform(-255, 255, 3)
        pixels = (a + np.multiply.outer(ramp, b)[:, None, :] + np.multiply.outer(ramp, c)
                  [None, :, :] + rng.normal(0, 12, (size, size, 3)))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def quality(model_dir: Path, catalog_images: list[bytes], texts: list[str]) -> dict:
    """Cosine to fp32 torch (min, mean) and recall@10 against torch's ranking, per variant."""
    import numpy as np

    from clipsearch.encoders.clip import ClipEncoder
    from clipsearch.encoders.onnx import OnnxEncoder
    from clipsearch.encoders.threads import apply_torch_threads

    apply_torch_threads(1)
    torch_encoder = ClipEncoder(str(model_dir), batch_size=8)
    variants = {"torch": torch_encoder,
                "onnx_fp32": OnnxEncoder(torch_encoder),
                "onnx_int8": OnnxEncoder(torch_encoder, quantize="int8", verify_int8=False)}
    vectors = {name: (enc.encode_texts(texts), enc.encode_images(catalog_images))
               for name, enc in variants.items()}
    ref_texts, ref_images = vectors["torch"]
    reference = np.argsort(-(ref_texts @ ref_images.T), axis=1)[:, :10]
    rows = {}
    for name in ("onnx_fp32", "onnx_int8"):
        texts_v, images_v = vectors[name]
        cosines = np.concatenate([np.sum(texts_v * ref_texts, axis=1),
                                  np.sum(images_v * ref_images, axis=1)])
        ranking = np.argsort(-(texts_v @ images_v.T), axis=1)[:, :10]
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ranking, reference,
                                                                      strict=True)])
        rows[name] = {"cosine_min": float(cosines.min()), "cosine_mean": float(cosines.mean()),
                      "recall_at_10": float(recall), "vectors": len(cosines)}
    return rows


def http_latencies(base_url: str, texts: list[str], images: list[bytes],
                   repeat_text: str | None = None, repeats: int = 0) -> dict[str, list[float]]:
    """One client, sequential: each text as GET /search, each image as POST /search."""
    import base64

    import httpx

    timings: dict[str, list[float]] = {"text": [], "image": [], "cached_text": []}
    with httpx.Client(base_url=base_url, timeout=120) as client:
        def timed(kind: str, method: str, **kwargs) -> None:
            started = time.perf_counter()
            response = client.request(method, "/search", **kwargs)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise SystemExit(f"{kind}: HTTP {response.status_code} {response.text[:200]}")
            timings[kind].append(elapsed)

        # Warm-up (not counted): first requests pay lazy initialisation.
        client.get("/search", params={"q": "warm up", "k": 10}).raise_for_status()
        client.post("/search", json={"image": base64.b64encode(images[0]).decode(),
                                     "k": 10}).raise_for_status()
        for text in texts:
            timed("text", "GET", params={"q": text, "k": 10})
        for image in images[1:]:
            timed("image", "POST", json={"image": base64.b64encode(image).decode(), "k": 10})
        if repeat_text:
            client.get("/search", params={"q": repeat_text, "k": 10}).raise_for_status()
            for _ in range(repeats):
                timed("cached_text", "GET", params={"q": repeat_text, "k": 10})
    return timings


def serve_and_measure(model_dir: Path, data_dir: Path, workdir: Path, flags, texts, images,
                      repeat_text=None, repeats=0) -> dict[str, list[float]]:
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    server = start_server(model_dir, data_dir, port, log_path, *flags)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server, log_path)
        return http_latencies(f"http://127.0.0.1:{port}", texts, images, repeat_text, repeats)
    finally:
        stop_server(server)


def p50(values: list[float]) -> float:
    return round(percentile(sorted(values), 50), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the summary keys as JSON")
    parser.add_argument("--requests", type=int, default=20,
                        help="new text and image queries per server (default 20)")
    parser.add_argument("--catalog", type=int, default=64,
                        help="catalog images for the quality table: the 40 demo images, then "
                        "synthetic ones (default 64)")
    parser.add_argument("--queries", type=int, default=32,
                        help="text queries for the quality table (default 32)")
    parser.add_argument("--workdir", type=Path,
                        default=ROOT / ".clipsearch" / "bench-server")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    started = time.perf_counter()
    load_before = os.getloadavg()
    model_dir, data_dir, products = prepare(workdir, "vit-b-32")

    texts = unique_texts(args.requests)
    images = synthetic_pngs(args.requests + 1, seed=1)
    catalog = [Path(p["image"]).read_bytes() for p in products]
    catalog = (catalog + synthetic_pngs(max(0, args.catalog - len(catalog)), seed=2))
    table = quality(model_dir, catalog[: args.catalog], unique_texts(args.queries, seed=3))

    torch_times = serve_and_measure(model_dir, data_dir, workdir, TORCH_TODAY, texts, images)
    fast_times = serve_and_measure(model_dir, data_dir, workdir, FAST, texts, images,
                                   repeat_text="red leather boot", repeats=args.requests)
    int8_times = serve_and_measure(model_dir, data_dir, workdir, INT8, texts, images)
    summary = {
        "torch_text_p50_ms": p50(torch_times["text"]),
        "fast_text_p50_ms": p50(fast_times["text"]),
        "torch_image_p50_ms": p50(torch_times["image"]),
        "fast_image_p50_ms": p50(fast_times["image"]),
        "cached_text_p50_ms": p50(fast_times["cached_text"]),
        "cosine_min_fp32": round(table["onnx_fp32"]["cosine_min"], 6),
        "cosine_min_int8": round(table["onnx_int8"]["cosine_min"], 6),
    }
    details = {
        "quality": table,
        "text_speedup": round(summary["torch_text_p50_ms"] / summary["fast_text_p50_ms"], 2),
        "image_speedup": round(summary["torch_image_p50_ms"] / summary["fast_image_p50_ms"], 2),
        "int8_text_p50_ms": p50(int8_times["text"]),
        "int8_image_p50_ms": p50(int8_times["image"]),
        "int8_text_speedup": round(summary["torch_text_p50_ms"] / p50(int8_times["text"]), 2),
        "int8_image_speedup": round(summary["torch_image_p50_ms"] / p50(int8_times["image"]), 2),
        "requests_per_kind": args.requests,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_before_after": [round(load_before[0], 1),
                                      round(os.getloadavg()[0], 1)],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "model": "ViT-B/32 architecture, random weights (clipsearch model random --preset "
                 "vit-b-32)",
    }
    print(json.dumps(details, indent=2), file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:<20} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
