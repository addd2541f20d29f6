#!/usr/bin/env python3
"""Build (once) the container-parity virtualenv and print its path.

The SageMaker container's software (torch, transformers, the Hugging Face
inference toolkit, sagemaker-inference, multi-model-server; exact versions in
`clipsearch/sagemaker/container.py`) is installed from PyPI into a venv on a
Python of the image's minor version (3.12). The venv lives in
`~/.cache/clipsearch/parity-<hash of the pins>`, so a pin change builds a
new one and an unchanged pin list reuses the cache. `scripts/setup.sh` calls
this; the container-parity tests use the printed path.

torch: PyPI's Linux wheel is the CUDA build and depends on ~3 GB of NVIDIA
libraries. Installed with `--no-deps` (and its pure-Python dependencies
listed explicitly) it imports and runs on CPU without them; the image has
AWS's CPU build of the same release. That difference, and the others, are
listed in docs/sagemaker-model.md.

    python scripts/parity_env.py            # build if needed; print the venv path
    python scripts/parity_env.py --check    # exit 1 unless it is built
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipsearch.sagemaker import container

CACHE_ROOT = Path(os.environ.get("CLIPSEARCH_CACHE", Path.home() / ".cache" / "clipsearch"))
DONE_MARKER = ".parity-complete"
# Proves the environment is usable: torch computes on CPU, the toolkit's
# handler service and the model server's worker import, transformers is the pin.
SMOKE = f"""
import torch, transformers, mms.model_service_worker
import sagemaker_huggingface_inference_toolkit.handler_service, sagemaker_inference.model_server
assert transformers.__version__ == {container.TRANSFORMERS_VERSION!r}, transformers.__version__
assert torch.__version__.split('+')[0] == {container.TORCH_VERSION!r}, torch.__version__
assert float(torch.ones(2, 2).sum()) == 4.0
"""


def parity_dir() -> Path:
    return CACHE_ROOT / f"parity-{container.parity_key()}"


def find_python() -> str:
    """A CPython of the image's minor version: $CLIPSEARCH_PARITY_PYTHON, pyenv, or PATH."""
    minor = container.PYTHON_VERSION.rsplit(".", 1)[0]
    explicit = os.environ.get("CLIPSEARCH_PARITY_PYTHON")
    if explicit:
        return explicit
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    found = sorted(glob.glob(f"{pyenv_root}/versions/{minor}.*/bin/python{minor}"))
    if found:
        return found[-1]
    on_path = shutil.which(f"python{minor}")
    if on_path:
        return on_path
    raise SystemExit(f"no Python {minor} found (the container runs {container.PYTHON_VERSION}): "
                     f"install it (e.g. `pyenv install {minor}`) or set "
                     "CLIPSEARCH_PARITY_PYTHON to its interpreter")


def build(target: Path) -> None:
    """Install into `target`; the marker written last says the build completed."""
    python = find_python()
    shutil.rmtree(target, ignore_errors=True)  # a half-built one from an interrupted run
    print(f"==> building the container-parity venv in {target} with {python} "
          "(first run only: a few minutes)", file=sys.stderr, flush=True)
    subprocess.run([python, "-m", "venv", str(target)], check=True)
    pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet",
           "--progress-bar", "off", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", *container.TORCH_PINS], check=True)
    subprocess.run([*pip, *container.PARITY_PINS], check=True)
    subprocess.run([str(target / "bin" / "python"), "-c", SMOKE], check=True)
    (target / DONE_MARKER).write_text("\n".join((*container.TORCH_PINS,
                                                 *container.PARITY_PINS)) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only report whether the environment is built")
    args = parser.parse_args(argv)
    target = parity_dir()
    if args.check:
        built = (target / DONE_MARKER).is_file()
        print(target if built else f"not built: {target}")
        return 0 if built else 1
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two setups at once build it once
        if not (target / DONE_MARKER).is_file():
            build(target)
    print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
