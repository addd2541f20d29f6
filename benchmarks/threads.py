"""Threads per forward pass: 1 vs 2, with and without one competing busy process.

Why: `--threads` (CLIPSEARCH_THREADS) defaults to the count that degrades
least on a shared 2-core box. Each runtime (torch, ONNX Runtime) encodes one
query text and one 256 px image at a time, first on the box as it is, then
with one extra process spinning on a core (as another engineer's job or a
noisy neighbour would). ViT-B/32 architecture, random weights.

    .venv/bin/python -m benchmarks.threads --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.query_speed import synthetic_pngs, unique_texts  # noqa: E402


def median_ms(function, inputs) -> float:
    function(inputs[0])  # warm-up
    times = []
    for item in inputs[1:]:
        started = time.perf_counter()
        function(item)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--texts", type=int, default=9)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".clipsearch" / "bench-server")
    args = parser.parse_args()

    import torch

    from clipsearch.encoders.clip import ClipEncoder
    from clipsearch.encoders.onnx import OnnxEncoder
    from clipsearch.random_clip import build_random_clip

    model_dir = args.workdir.resolve() / "models" / "vit-b-32"
    if not (model_dir / "config.json").exists():
        build_random_clip(model_dir, preset="vit-b-32")
    source = ClipEncoder(str(model_dir))
    texts, images = unique_texts(args.texts, seed=7), synthetic_pngs(args.images, seed=7)
    rows = []
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for name, encoder in (("torch", source),
                                      ("onnx", OnnxEncoder(source, threads=threads))):
                    rows.append({
                        "runtime": name, "threads": threads, "competing_process": busy,
                        "text_p50_ms": median_ms(lambda t, e=encoder: e.encode_texts([t]),
                                                 texts),
                        "image_p50_ms": median_ms(lambda i, e=encoder: e.encode_images([i]),
                                                  images),
                        "load_average": round(os.getloadavg()[0], 1)})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| runtime | threads | competing process | text p50 ms | image p50 ms | load |")
        print("|---|---:|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['runtime']} | {r['threads']} | {'yes' if r['competing_process'] else 'no'}"
                  f" | {r['text_p50_ms']} | {r['image_p50_ms']} | {r['load_average']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
