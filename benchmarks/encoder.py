"""ClipEncoder throughput on this machine's CPU.

Uses the full openai/clip-vit-base-patch32 *architecture* with random weights
(no model hub here); speed does not depend on weight values, so the figures
hold for the real checkpoint. Images are 640x480 JPEGs, decoded and
preprocessed inside the timed loop, as in real ingest.

Run: .venv/bin/python -m benchmarks.encoder --batch-sizes 1 32
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipsearch.encoders.clip import ClipEncoder
from clipsearch.random_clip import build_random_clip


def jpeg(rng: np.random.Generator) -> bytes:
    from PIL import Image

    pixels = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def throughput(fn, items: list, batch: int, min_seconds: float) -> float:
    fn(items[:batch])  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn(items[:batch])
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--model-dir", type=Path, help="reuse a saved model directory")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or build_random_clip(Path(tmp) / "vit-b-32", "vit-b-32")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
              "ViT-B/32 architecture, random weights")
        print("| batch | texts/s | images/s |")
        print("|---|---|---|")
        for batch in args.batch_sizes:
            encoder = ClipEncoder(str(model_dir), batch_size=batch, device="cpu")
            texts = [f"black leather ankle boots size {i}" for i in range(batch)]
            images = [jpeg(rng) for _ in range(batch)]
            t = throughput(encoder.encode_texts, texts, batch, args.seconds)
            i = throughput(encoder.encode_images, images, batch, args.seconds)
            print(f"| {batch} | {t:.1f} | {i:.1f} |", flush=True)


if __name__ == "__main__":
    main()
