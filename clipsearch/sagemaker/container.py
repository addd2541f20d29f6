"""The SageMaker inference container we deploy, and what it ships.

One place for the image tag and the exact versions inside it, because three
things must agree on them: the stack (which image to run), the packager (what
format to write, what not to download at start) and the container-parity
environment (`scripts/parity_env.py`, which rebuilds those versions in a
virtualenv so CI serves the artifact with the container's own software).

Sources (read from github.com/aws/deep-learning-containers, tree
`huggingface/pytorch/inference/`, at commit 38c1245333, 2025-12-15, the last
revision of the transformers-4 CPU image): `buildspec.yml` (tag and
transformers), `docker/2.6/py3/Dockerfile.cpu` (everything else);
`release_images_inference.yml` released it (5cf509763e, 2025-10-15).
docs/sagemaker-model.md explains the choice and lists what the parity
environment cannot reproduce.
"""

from __future__ import annotations

import hashlib

DLC_REPOSITORY = "huggingface-pytorch-inference"
DLC_TAG = "2.6.0-transformers4.51.3-cpu-py312-ubuntu22.04"

# What the image ships (Dockerfile.cpu / buildspec.yml at 38c1245333).
PYTHON_VERSION = "3.12.8"          # ARG PYTHON_VERSION (miniforge)
TORCH_VERSION = "2.6.0"            # ARG TORCH_URL: AWS's torch-2.6.0+cpu wheel
TORCHVISION_VERSION = "0.21.0"     # ARG TORCHVISION_URL
TORCHAUDIO_VERSION = "2.6.0"       # ARG TORCHAUDIO_URL
TRANSFORMERS_VERSION = "4.51.3"    # ARG TRANSFORMERS_VERSION
HUGGINGFACE_HUB_VERSION = "0.30.0"  # ARG HUGGINGFACE_HUB_VERSION
DIFFUSERS_VERSION = "0.33.1"       # ARG DIFFUSERS_VERSION
ACCELERATE_VERSION = "1.6.0"       # ARG ACCELERATE_VERSION
TOOLKIT_VERSION = "2.6.0"          # ARG SAGEMAKER_HF_INFERENCE_VERSION
MMS_VERSION = "1.1.11"             # ARG MMS_VERSION
# `pip install sagemaker-inference` unpinned; 1.10.1 (2023-10) is the newest
# release before and since the image was built.
SAGEMAKER_INFERENCE_VERSION = "1.10.1"
JAVA = "openjdk-17-jdk (Ubuntu 22.04)"

# The model's container environment (the stack adds the region and model name).
MODEL_ENVIRONMENT = {
    "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
    # One worker: serverless memory holds one copy of the model.
    "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
    "MMS_DEFAULT_WORKERS_PER_MODEL": "1",
}

# The transformers model families (config.json `model_type`) this container's
# transformers loads through our handler; OpenCLIP (open_clip_config.json) is
# served too, with open_clip vendored in the artifact. The packager refuses
# anything else. SigLIP's slow SentencePiece tokenizer needs sentencepiece and
# protobuf, which the image has (`transformers[sentencepiece,...]` in
# Dockerfile.cpu); Siglip2Model arrived in transformers 4.49.
SUPPORTED_MODEL_TYPES = ("clip", "siglip", "siglip2")

# The parity virtualenv: the versions above, installed from PyPI. torch,
# torchvision and torchaudio go in without dependencies (see
# scripts/parity_env.py); everything else as pip resolves it, with the
# versions the image leaves unpinned fixed here so the environment is
# reproducible.
TORCH_PINS = (
    f"torch=={TORCH_VERSION}",
    f"torchvision=={TORCHVISION_VERSION}",
    f"torchaudio=={TORCHAUDIO_VERSION}",
)
PARITY_PINS = (
    # torch's own pure-Python dependencies (its CUDA libraries are left out).
    "filelock", "typing-extensions>=4.10", "networkx", "jinja2", "fsspec",
    "sympy==1.13.1",
    # sagemaker-inference imports pkg_resources, which setuptools 81+ no longer has.
    "setuptools==80.9.0",
    # The image has the [audio] extra too; its kenlm only builds from source
    # (cmake, boost) and nothing we serve imports it.
    f"transformers[sentencepiece,vision]=={TRANSFORMERS_VERSION}",
    f"huggingface_hub=={HUGGINGFACE_HUB_VERSION}",
    f"diffusers=={DIFFUSERS_VERSION}",
    f"accelerate=={ACCELERATE_VERSION}",
    "protobuf>=3.19.5,<=3.20.2",
    f"sagemaker-huggingface-inference-toolkit=={TOOLKIT_VERSION}",
    f"sagemaker-inference=={SAGEMAKER_INFERENCE_VERSION}",
    f"multi-model-server=={MMS_VERSION}",
    # Unpinned in the image; fixed here for a reproducible environment. The
    # toolkit's pyctcdecode requires numpy<2, so the image has a 1.x too.
    "numpy==1.26.4",
    "pillow==11.3.0",
    # Unpinned in the image (transformers' [sentencepiece] extra); 0.2.1
    # (2025-08) was the newest release when it was built (0.2.2 is from
    # 2026-07). It matters: 0.2.3's sentencepiece_model_pb2 needs protobuf's
    # runtime_version (5.26+), so under the image's protobuf<=3.20.2 SigLIP's
    # slow tokenizer would fail to load, which 0.2.1's does not.
    "sentencepiece==0.2.1",
)


def parity_key(python_minor: str = PYTHON_VERSION.rsplit(".", 1)[0]) -> str:
    """Hash of everything that determines the parity environment (its cache key)."""
    text = "\n".join((python_minor, *TORCH_PINS, *PARITY_PINS))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
