"""Start-up time and per-request latency of the container's real serving stack.

The artifact (ViT-B/32 architecture, random weights: the real compute cost,
no model hub) is served in the container-parity environment through the
toolkit's entry point and the real multi-model-server, as
tests/test_container_parity.py does (`clipsearch.sagemaker.parity`). For each
torch thread count (OMP_NUM_THREADS, which the worker's torch reads) it
measures:

- time from starting the entry point to the first healthy `/ping`;
- time to the first successful invocation (the worker has loaded the model);
- per-request latency over HTTP for one text (`application/json`) and one
  224 px JPEG (`application/x-image`), best and median of interleaved rounds.

    .venv/bin/python -m benchmarks.sagemaker_parity [--threads 1 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.sagemaker_handler import product_jpeg, timed_round_robin  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)

    from clipsearch.random_clip import build_random_clip
    from clipsearch.sagemaker import container, parity
    from clipsearch.sagemaker.package import build_artifact

    venv = subprocess.run([sys.executable, str(REPO / "scripts" / "parity_env.py")],
                          check=True, capture_output=True, text=True).stdout.strip()
    rng = np.random.default_rng(0)
    text_body = json.dumps({"texts": ["red leather ankle boot"]}).encode()
    jpeg = product_jpeg(rng, 224)
    print(f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; image {container.DLC_TAG}")
    with tempfile.TemporaryDirectory(prefix="clipsearch-parity-bench-") as tmp:
        model_dir = build_random_clip(Path(tmp) / "vit-b-32", preset="vit-b-32")
        artifact = build_artifact(model_dir, Path(tmp) / "model.tar.gz").path
        print("| torch threads | first healthy /ping | first answer (model loaded) "
              "| 1 text, best / median | 1 image, best / median |")
        print("|---|---|---|---|---|")
        for threads in args.threads:
            env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            stack = parity.start(artifact, Path(tmp) / f"serve-{threads}", Path(venv),
                                 environment=env, timeout=600)
            try:
                def text(stack=stack):
                    assert stack.invoke(text_body, "application/json").status == 200

                def image(stack=stack):
                    assert stack.invoke(jpeg, "application/x-image").status == 200

                timings = timed_round_robin({"text": text, "image": image},
                                            repeats=args.repeats, warmup=3, min_time=0)
            finally:
                stack.stop()
            (tb, tm), (ib, im) = timings["text"], timings["image"]
            print(f"| {threads} | {stack.healthy_ping_s:.1f} s | {stack.ready_s:.1f} s "
                  f"| {tb * 1e3:.0f} / {tm * 1e3:.0f} ms | {ib * 1e3:.0f} / {im * 1e3:.0f} ms |",
                  flush=True)
            time.sleep(1)
    print(f"# load at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
