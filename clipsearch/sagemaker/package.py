"""Build the SageMaker `model.tar.gz` for the CLIP handler, byte-for-byte reproducibly.

Layout (what the Hugging Face container expects under /opt/ml/model):

    config.json, model.safetensors          the weights
    preprocessor_config.json                the image processor (transformers 4.x layout)
    tokenizer.json, tokenizer_config.json   the tokenizer
    clipsearch-model.json       model id, dimension, prompt template
    code/inference.py           the handler (model/code/inference.py)
    code/clipsearch/...         the clipsearch modules the handler imports

The container is `clipsearch.sagemaker.container.DLC_TAG`, with transformers
4.51. The weights go through `from_pretrained` then `save_pretrained`, so the
artifact holds exactly one safetensors file whatever the source repository
ships (bin, h5, msgpack). The processor files are rewritten in the layout 4.x
reads, because transformers 5 (the dev environment) folds the image processor
into `processor_config.json`, which 4.x cannot use.

There is no `code/requirements.txt`: the container would pip-install it at
every start (slow serverless cold starts, production changing without a
deploy, and, with transformers 5, a toolkit that no longer imports).
Everything the handler imports is in the image or vendored here.
`check_container_layout` refuses an artifact the container cannot load;
tests/test_container_parity.py proves the layout by serving it with the
container's own software.

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
from typing import Any
from urllib.parse import urlparse

from clipsearch import __version__, config
from clipsearch.errors import ConfigurationError, ValidationError
from clipsearch.sagemaker import container

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # clipsearch/
HANDLER_SOURCE = PACKAGE_DIR.parent / "model" / "code" / "inference.py"
METADATA_FILE = "clipsearch-model.json"
# Written by `clipsearch model random` beside random weights, and kept in the
# artifact, so synth can refuse to deploy them as if they were a real model.
RANDOM_MARKER = "RANDOM_WEIGHTS.txt"
# Exactly the modules `inference.py` imports, directly or through them. The
# subprocess test imports the handler with only these on the path.
VENDORED_MODULES = (
    "__init__.py",
    "config.py",
    "errors.py",
    "images.py",
    "models.py",
    "strict.py",
    "sagemaker/__init__.py",
    "sagemaker/protocol.py",
    "encoders/__init__.py",
    "encoders/towers.py",
    "encoders/hf.py",
    "encoders/clip.py",
)
# transformers 5 writes the processor as one file that the container's 4.x
# cannot use; 4.x reads the image processor from PREPROCESSOR_FILE.
PROCESSOR_FILE = "processor_config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
# Keys transformers 5 adds to tokenizer_config.json that mean nothing to 4.x
# (which would hand them to the tokenizer's constructor).
_TOKENIZER_V5_KEYS = ("backend", "is_local", "local_files_only")
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
    write_container_processor_files(staging, encoder)
    marker = Path(model) / RANDOM_MARKER
    if marker.is_file():  # keep the warning with the weights it describes
        shutil.copyfile(marker, staging / marker.name)
    metadata: dict[str, object] = {
        "model_id": model_id or model,
        "dimension": encoder.dimension,
        "prompt_template": prompt_template,
        "clipsearch_version": __version__,
    }
    _write_json(staging / METADATA_FILE, metadata)
    code = staging / "code"
    code.mkdir(exist_ok=True)
    shutil.copyfile(HANDLER_SOURCE, code / "inference.py")
    for relative in VENDORED_MODULES:
        target = code / "clipsearch" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE_DIR / relative, target)
    check_container_layout(staging)
    return metadata


def write_container_processor_files(staging: Path, encoder: Any) -> None:
    """Rewrite the processor and tokenizer files in the layout the container's 4.x reads.

    transformers 5 still reads this layout, so the emulator and `ClipEncoder`
    in the dev environment load the very same artifact.
    """
    (staging / PROCESSOR_FILE).unlink(missing_ok=True)
    image_processor = encoder.processor.image_processor.to_dict()
    image_processor["processor_class"] = type(encoder.processor).__name__
    _write_json(staging / PREPROCESSOR_FILE, image_processor)
    tokenizer_config = staging / "tokenizer_config.json"
    if tokenizer_config.is_file():
        settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
        for key in _TOKENIZER_V5_KEYS:
            settings.pop(key, None)
        # 5.x writes "no limit" (1e30) when the source said nothing; the text
        # tower's position embeddings are the real limit.
        max_positions = int(encoder.model.config.text_config.max_position_embeddings)
        if float(settings.get("model_max_length", 0)) > max_positions:
            settings["model_max_length"] = max_positions
        _write_json(tokenizer_config, settings)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def check_container_layout(staging: Path) -> None:
    """Refuse, saying what to do, an artifact the deployed container cannot load.

    Each check is a failure seen with the real serving stack (see
    docs/sagemaker-model.md): a family the handler does not serve in the
    container's transformers, the transformers-5 processor layout, and a
    requirements.txt (a pip install at every cold start, which also replaced
    the container's transformers and broke its toolkit's import).
    """
    where = f"container {container.DLC_TAG} (transformers {container.TRANSFORMERS_VERSION})"
    try:
        model_type = json.loads((staging / "config.json").read_text(encoding="utf-8"))["model_type"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigurationError(
            f"the staged model has no readable config.json model_type ({exc}); package a "
            "directory saved with save_pretrained") from exc
    if model_type not in container.SUPPORTED_MODEL_TYPES:
        raise ConfigurationError(
            f"model type {model_type!r} cannot be served by the {where}: the handler serves "
            f"{', '.join(container.SUPPORTED_MODEL_TYPES)}. Package a checkpoint of a supported "
            "family, or add the family to SUPPORTED_MODEL_TYPES in "
            "clipsearch/sagemaker/container.py together with a case in "
            "tests/test_container_parity.py")
    problems = [f"{name} is missing" for name in
                ("model.safetensors", PREPROCESSOR_FILE, "tokenizer.json", "code/inference.py",
                 METADATA_FILE) if not (staging / name).is_file()]
    if (staging / PROCESSOR_FILE).exists():
        problems.append(f"{PROCESSOR_FILE} (the transformers-5 layout) is present, which 4.x "
                        "passes to the processor's constructor")
    if (staging / "code" / "requirements.txt").exists():
        problems.append("code/requirements.txt is present, which the container pip-installs "
                        "at every start")
    if problems:
        raise ConfigurationError(
            f"the artifact would not load in the {where}: {'; '.join(problems)}. Rebuild it "
            "with this checkout's `scripts/package_model.py`, which writes the container's "
            "layout")


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
