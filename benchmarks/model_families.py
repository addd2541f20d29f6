"""CPU latency per text and per image for each model family (random weights, real architectures).

Builds each preset with `clipsearch.random_models` (same architecture as the
named checkpoint, random weights: speed is real, rankings are not), loads it
through `load_encoder` like any model, and times one query at a time
(batch 1, the search path): median and p90 over --repeats after a warm-up.

    PYTHONPATH=. .venv/bin/python benchmarks/model_families.py --repeats 10
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

PRESETS = [
    ("clip", "vit-b-32", "openai/clip-vit-base-patch32"),
    ("siglip", "base-patch16-224", "google/siglip-base-patch16-224"),
    ("siglip2", "base-patch16-224", "google/siglip2-base-patch16-224"),
    ("openclip", "marqo-ecommerce-b", "Marqo/marqo-ecommerce-embeddings-B"),
    ("openclip", "marqo-ecommerce-l", "Marqo/marqo-ecommerce-embeddings-L"),
    ("siglip", "so400m-patch14-384", "google/siglip-so400m-patch14-384"),
]


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (180, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def _times(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.9 * len(samples)))]


def main() -> None:
    import torch

    from clipsearch.encoders import load_encoder
    from clipsearch.random_models import build_random_model

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", nargs="*", help="preset names to run")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("CLIPSEARCH_THREADS", "1")))
    image = _png()
    for family, preset, checkpoint in PRESETS:
        if args.only and preset not in args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            directory = build_random_model(Path(tmp) / preset, family=family, preset=preset)
            encoder = load_encoder(str(directory), device="cpu")
            params = sum(p.numel() for p in encoder.model.parameters())
            text = _times(lambda e=encoder: e.encode_texts(["red leather ankle boot"]),
                          args.repeats)
            img = _times(lambda e=encoder: e.encode_images([image]), args.repeats)
        print(json.dumps({
            "family": family, "preset": preset, "architecture_of": checkpoint,
            "dimension": encoder.dimension, "parameters_m": round(params / 1e6, 1),
            "fp32_weights_gb": round(params * 4 / 1e9, 2),
            "text_ms_p50": round(text[0], 1), "text_ms_p90": round(text[1], 1),
            "image_ms_p50": round(img[0], 1), "image_ms_p90": round(img[1], 1),
            "threads": torch.get_num_threads(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "load_avg": os.getloadavg()[0],
        }), flush=True)


if __name__ == "__main__":
    main()
