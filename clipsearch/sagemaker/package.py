"""Build the SageMaker `model.tar.gz` for the CLIP handler, byte-for-byte reproducibly.

Layout (what the Hugging Face container expects under /opt/ml/model):

    config.json, model.safetensors, preprocessor/tokenizer files   the weights
    clipsearch-model.json       model id, dimension, prompt template
    code/inference.py           the handler (model/code/inference.py)
    code/requirements.txt       what the container lacks (never torch)
    code/clipsearch/...         the clipsearch modules the handler imports

The weights go through `from_pretrained` then `save_pretrained`, so the
artifact holds exactly one safetensors file in the format the container's
transformers loads, whatever the source repository ships (bin, h5, msgpack).
Determinism (sorted entries, fixed mtime/owner/mode, gzip mtime 0) lets a
re-run prove nothing changed by comparing sha256, and lets S3 uploads be
skipped by checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from clipsearch import __version__, config
from clipsearch.errors import ConfigurationError, ValidationError

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # clipsearch/
HANDLER_SOURCE = PACKAGE_DIR.parent / "model" / "code" / "inference.py"
METADATA_FILE = "clipsearch-model.json"
# Exactly the modules `inference.py` imports, directly or through them. The
# subprocess test imports the handler with only these on the path.
VENDORED_MODULES = (
    "__init__.py",
    "config.py",
    "errors.py",
    "images.py",
    "models.py",
    "sagemaker/__init__.py",
    "sagemaker/protocol.py",
    "encoders/__init__.py",
    "encoders/towers.py",
    "encoders/hf.py",
    "encoders/clip.py",
)
# The Hugging Face PyTorch inference DLC ships torch, numpy and Pillow; it
# pip-installs code/requirements.txt at start-up. transformers is pinned to the
# release line that wrote the processor files (5.x moved them into
# processor_config.json) and never below 4.56, the first to take
# `from_pretrained(dtype=...)` as ClipEncoder does (older releases ignore it,
# and fp16 inputs then meet fp32 weights on GPU).
REQUIREMENTS_HEADER = """\
# Installed by the SageMaker Hugging Face container at start-up.
# torch, numpy and Pillow come with the container and are deliberately absent.
"""
# 2020-01-01T00:00:00Z: any fixed instant works; 0 upsets some tar readers.
FIXED_MTIME = 1577836800


@dataclass(frozen=True)
class Artifact:
    """The built tarball and what identifies it."""

    path: Path
    size: int
    sha256: str
    model_id: str
    dimension: int
    s3_uri: str | None = None


def stage_model(model: str | Path, staging: Path, *, model_id: str | None = None,
                prompt_template: str = config.DEFAULT_PROMPT_TEMPLATE) -> dict[str, object]:
    """Write the artifact's files into `staging` (a directory); return the metadata."""
    from clipsearch.encoders.clip import ClipEncoder
    from clipsearch.models import model_availability

    model = str(model)
    problem = model_availability(model)
    if problem:
        raise ConfigurationError(f"cannot load model: {problem}")
    if not HANDLER_SOURCE.is_file():
        raise ConfigurationError(f"handler source {HANDLER_SOURCE} is missing; package from a "
                                 "clipsearch source checkout")
    encoder = ClipEncoder(model, prompt_template=prompt_template, device="cpu",
                          dtype="float32")
    staging.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(staging)
    encoder.processor.save_pretrained(staging)
    marker = Path(model) / "RANDOM_WEIGHTS.txt"
    if marker.is_file():  # keep the warning with the weights it describes
        shutil.copyfile(marker, staging / marker.name)
    metadata: dict[str, object] = {
        "model_id": model_id or model,
        "dimension": encoder.dimension,
        "prompt_template": prompt_template,
        "clipsearch_version": __version__,
    }
    (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")
    code = staging / "code"
    code.mkdir(exist_ok=True)
    shutil.copyfile(HANDLER_SOURCE, code / "inference.py")
    (code / "requirements.txt").write_text(requirements_txt(), encoding="utf-8")
    for relative in VENDORED_MODULES:
        target = code / "clipsearch" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE_DIR / relative, target)
    return metadata


def requirements_txt(transformers_version: str | None = None) -> str:
    """The container's extra packages, transformers bounded to the packaging release line."""
    if transformers_version is None:
        import transformers

        transformers_version = transformers.__version__
    major, minor = (int(part) for part in transformers_version.split(".")[:2])
    lower = max((major, minor), (4, 56))
    return (REQUIREMENTS_HEADER
            + f"transformers>={lower[0]}.{lower[1]},<{major + 1}\n"
            + "pillow>=10\n"
            + "orjson>=3.9\n")


def write_deterministic_tar(source: Path, output: Path) -> tuple[int, str]:
    """tar.gz `source`'s contents with every varying field pinned; return (size, sha256)."""
    entries = sorted(source.rglob("*"), key=lambda p: p.relative_to(source).as_posix())
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    # filename="" and mtime=0 keep the gzip header free of run-specific bytes.
    with open(partial, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in entries:
            info = tarfile.TarInfo(path.relative_to(source).as_posix())
            info.mtime = FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif path.is_file():
                info.size = path.stat().st_size
                info.mode = 0o644
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
    os.replace(partial, output)
    return output.stat().st_size, sha256_file(output)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_artifact(model: str | Path, output: str | Path, *, model_id: str | None = None,
                   prompt_template: str = config.DEFAULT_PROMPT_TEMPLATE) -> Artifact:
    """Stage in a temp dir and tar it to `output`."""
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="clipsearch-package-") as tmp:
        meta = stage_model(model, Path(tmp), model_id=model_id, prompt_template=prompt_template)
        size, digest = write_deterministic_tar(Path(tmp), output)
    return Artifact(output, size, digest, str(meta["model_id"]), int(meta["dimension"]))


def parse_s3_uri(uri: str, default_name: str = "model.tar.gz") -> tuple[str, str]:
    """`s3://bucket/prefix/` -> (bucket, prefix/model.tar.gz); a full key is kept."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValidationError(f"{uri!r} is not an s3://bucket/key URI", field="s3_uri")
    key = parsed.path.lstrip("/")
    if not key or key.endswith("/"):
        key += default_name
    return parsed.netloc, key


def upload_artifact(artifact: Artifact, s3_uri: str, client=None) -> str:
    """Upload with the sha256 as object metadata; return the object's s3:// URI."""
    import boto3

    bucket, key = parse_s3_uri(s3_uri, artifact.path.name)
    client = client or boto3.client("s3")
    client.upload_file(str(artifact.path), bucket, key,
                       ExtraArgs={"Metadata": {"sha256": artifact.sha256},
                                  "ContentType": "application/gzip"})
    return f"s3://{bucket}/{key}"


def describe_artifact(path: str | Path) -> dict[str, object]:
    """Read `clipsearch-model.json` back out of a built tarball."""
    with tarfile.open(path, "r:gz") as tar:
        member = tar.extractfile(METADATA_FILE)
        if member is None:
            raise ConfigurationError(f"{path} has no {METADATA_FILE}")
        return json.load(io.TextIOWrapper(member, encoding="utf-8"))
