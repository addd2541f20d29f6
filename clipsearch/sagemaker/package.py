"""Build the SageMaker `model.tar.gz` for any model family, byte-for-byte reproducibly.

Layout (what the Hugging Face container expects under /opt/ml/model), for
the transformers families (CLIP, SigLIP, SigLIP 2):

    config.json, model.safetensors          the weights
    preprocessor_config.json                the image processor (transformers 4.x layout)
    tokenizer.json and/or spiece.model,     the tokenizer (SigLIP's is SentencePiece only;
      tokenizer_config.json                   the image ships sentencepiece)
    clipsearch-model.json       model id, family, dimension, prompt template
    code/inference.py           the handler (model/code/inference.py)
    code/clipsearch/...         the clipsearch modules the handler imports

and for OpenCLIP, OpenCLIP's own hub layout, which `local-dir:` loads:

    open_clip_config.json, open_clip_model.safetensors
    tokenizer files             when the config names a Hugging Face tokenizer
    code/open_clip, code/ftfy, code/wcwidth (+ code/timm for timm vision towers)
                                the pure-Python packages the image lacks, copied
                                from this environment's installed distributions

The container is `clipsearch.sagemaker.container.DLC_TAG`, with transformers
4.51. The weights go through `from_pretrained` then `save_pretrained`, so the
artifact holds exactly one safetensors file whatever the source repository
ships (bin, h5, msgpack). The processor files are rewritten in the layout 4.x
reads, because transformers 5 (the dev environment) folds the image processor
into `processor_config.json`, which 4.x cannot use.

There is no `code/requirements.txt`: the container would pip-install it at
every start (slow serverless cold starts, production changing without a
deploy, a serverless endpoint without internet access failing, and, with
transformers 5, a toolkit that no longer imports). Everything the handler
imports is in the image or vendored here, OpenCLIP included: `open_clip_torch`
and its small dependencies are pure Python, and their compiled or heavy
dependencies (torch, torchvision, regex, safetensors, huggingface_hub, tqdm,
PyYAML) are in the image.
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

from clipsearch import __version__
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
    "encoders/siglip.py",
    "encoders/openclip.py",
)
# Distributions an OpenCLIP artifact carries in code/ (none is in the image):
# open_clip_torch and what its import needs beyond the image. timm only when
# the config's vision tower is a timm model (SigLIP-architecture checkpoints
# such as Marqo-Ecommerce): it is the largest and the CLIP towers do not use it.
# distribution -> the import packages of it that are copied (open_clip_torch
# also installs open_clip_train, which serving never imports).
OPENCLIP_DISTRIBUTIONS = {"open_clip_torch": "open_clip", "ftfy": "ftfy", "wcwidth": "wcwidth"}
TIMM_DISTRIBUTION = {"timm": "timm"}
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
# Tokenizer files 4.x reads; SigLIP's slow tokenizer has only spiece.model.
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
# transformers 5 writes the processor as one file that the container's 4.x
# cannot use; 4.x reads the image processor from PREPROCESSOR_FILE.
PROCESSOR_FILE = "processor_config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
# Keys transformers 5 adds to tokenizer_config.json that mean nothing to 4.x
# (which would hand them to the tokenizer's constructor).
_TOKENIZER_V5_KEYS = ("backend", "is_local", "local_files_only")
_GEMMA_TOKENIZERS = ("GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer")
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
    family: str = "clip"
    s3_uri: str | None = None


def stage_model(model: str | Path, staging: Path, *, model_id: str | None = None,
                prompt_template: str | None = None) -> dict[str, object]:
    """Write the artifact's files into `staging` (a directory); return the metadata.

    The family comes from the model's own files (`load_encoder`);
    `prompt_template=None` records the family's default ("a photo of {}" for
    CLIP, the bare query for the others).
    """
    from clipsearch.encoders import load_encoder
    from clipsearch.models import model_availability

    model = str(model)
    problem = model_availability(model)
    if problem:
        raise ConfigurationError(f"cannot load model: {problem}")
    if not HANDLER_SOURCE.is_file():
        raise ConfigurationError(f"handler source {HANDLER_SOURCE} is missing; package from a "
                                 "clipsearch source checkout")
    encoder = load_encoder(model, prompt_template=prompt_template, device="cpu",
                           dtype="float32")
    staging.mkdir(parents=True, exist_ok=True)
    code = staging / "code"
    code.mkdir(exist_ok=True)
    vendored: dict[str, str] = {}
    if encoder.family == "openclip":
        vendored = stage_openclip(model, encoder, staging)
    else:
        encoder.model.save_pretrained(staging)
        encoder.processor.save_pretrained(staging)
        write_container_processor_files(staging, encoder)
    marker = Path(model) / RANDOM_MARKER
    if marker.is_file():  # keep the warning with the weights it describes
        shutil.copyfile(marker, staging / marker.name)
    metadata: dict[str, object] = {
        "model_id": model_id or model,
        "family": encoder.family,
        "dimension": encoder.dimension,
        "prompt_template": encoder.prompt_template,
        "clipsearch_version": __version__,
    }
    if vendored:
        metadata["vendored"] = vendored
    _write_json(staging / METADATA_FILE, metadata)
    shutil.copyfile(HANDLER_SOURCE, code / "inference.py")
    for relative in VENDORED_MODULES:
        target = code / "clipsearch" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE_DIR / relative, target)
    check_container_layout(staging)
    return metadata


def write_container_processor_files(staging: Path, encoder: Any) -> None:
    """Rewrite the processor and tokenizer files in the layout the container's 4.x reads.

    transformers 5 still reads this layout, so the emulator and the local
    encoders in the dev environment load the very same artifact.
    """
    (staging / PROCESSOR_FILE).unlink(missing_ok=True)
    image_processor = encoder.processor.image_processor.to_dict()
    image_processor["processor_class"] = type(encoder.processor).__name__
    _write_json(staging / PREPROCESSOR_FILE, image_processor)
    clean_tokenizer_config(staging,
                           int(encoder.model.config.text_config.max_position_embeddings),
                           encoder.processor.tokenizer)


def clean_tokenizer_config(staging: Path, max_positions: int, tokenizer: Any = None) -> None:
    """Make tokenizer_config.json mean to the container's 4.x what it means here.

    - Drop the keys transformers 5 adds (4.x would pass them to the constructor),
      and turn its `extra_special_tokens` list (SigLIP's tokenizer writes one)
      into 4.x's `additional_special_tokens`: 4.51 reads `extra_special_tokens`
      as a mapping and failed on the list in the container.
    - Bound model_max_length: 5.x writes "no limit" (1e30) when the source said
      nothing; the text tower's position embeddings are the real limit.
    - Gemma's tokenizer (SigLIP 2): 5.x names NaFlex checkpoints'
      `Siglip2Tokenizer`, which 4.51 lacks; `GemmaTokenizer` makes 4.x load
      GemmaTokenizerFast from the same tokenizer.json (SigLIP 2's lowercasing
      is the encoder's). And 4.x's GemmaTokenizerFast rebuilds the
      post-processor from add_bos_token/add_eos_token (defaults: BOS yes, EOS
      no), ignoring the one in tokenizer.json, so both flags are written as
      the tokenizer here really behaves; without them the container's text
      vectors differed (the parity test caught it).
    """
    tokenizer_config = staging / "tokenizer_config.json"
    if not tokenizer_config.is_file():
        return
    settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    for key in _TOKENIZER_V5_KEYS:
        settings.pop(key, None)
    if float(settings.get("model_max_length", 0)) > max_positions:
        settings["model_max_length"] = max_positions
    extra = settings.get("extra_special_tokens")
    if isinstance(extra, list):  # 5.x's list; 4.x takes a name -> token mapping here
        del settings["extra_special_tokens"]
        if extra:
            settings["additional_special_tokens"] = [
                *(settings.get("additional_special_tokens") or []), *extra]
    if tokenizer is not None and settings.get("tokenizer_class") in _GEMMA_TOKENIZERS:
        settings["tokenizer_class"] = "GemmaTokenizer"
        ids = list(tokenizer("a")["input_ids"])
        settings["add_bos_token"] = bool(ids) and ids[0] == tokenizer.bos_token_id
        settings["add_eos_token"] = bool(ids) and ids[-1] == tokenizer.eos_token_id
    _write_json(tokenizer_config, settings)


def stage_openclip(model: str, encoder: Any, staging: Path) -> dict[str, str]:
    """OpenCLIP's hub layout plus the packages the image lacks; returns {distribution: version}.

    The weights are re-saved from the loaded model (one safetensors file
    whatever the source ships); a Hugging Face tokenizer the config names is
    saved beside them, because from `local-dir:` OpenCLIP reads it from the
    directory, and the container must not reach the hub.
    """
    from safetensors.torch import save_model

    from clipsearch.models import OPEN_CLIP_CONFIG, read_model_file

    doc = read_model_file(model, OPEN_CLIP_CONFIG) or {"model_cfg": encoder.open_clip_config}
    _write_json(staging / OPEN_CLIP_CONFIG, doc)
    save_model(encoder.model, str(staging / OPEN_CLIP_WEIGHTS))
    hf_tokenizer = getattr(encoder._tokenizer, "tokenizer", None)
    if hf_tokenizer is not None and hasattr(hf_tokenizer, "save_pretrained"):
        hf_tokenizer.save_pretrained(staging)
        clean_tokenizer_config(staging, int(encoder._tokenizer.context_length))
    wanted = dict(OPENCLIP_DISTRIBUTIONS)
    if encoder.open_clip_config.get("vision_cfg", {}).get("timm_model_name"):
        wanted.update(TIMM_DISTRIBUTION)
    return {name: vendor_distribution(name, package, staging / "code")
            for name, package in wanted.items()}


def vendor_distribution(name: str, package: str, code: Path) -> str:
    """Copy import package `package` of installed distribution `name` into `code`; its version.

    Only what the distribution installed for that package is copied, minus
    bytecode, metadata and compiled extensions: the image's Python (3.12) may
    differ from this machine's, and the only one among these distributions,
    wcwidth's optional C accelerator, has a pure-Python fallback. The
    container-parity test imports and runs what is vendored with the image's
    Python.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError as exc:
        raise ConfigurationError(
            f"packaging an OpenCLIP model vendors {name}, which is not installed here: "
            "pip install 'clipsearch[openclip]'") from exc
    copied = 0
    for entry in dist.files or ():
        parts = entry.parts
        if parts[0] != package or "__pycache__" in parts:
            continue
        if entry.suffix in (".so", ".pyd", ".dylib"):
            continue
        source = Path(dist.locate_file(entry))
        target = code / Path(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied += 1
    if not copied:
        raise ConfigurationError(f"{name} {dist.version} installed no {package}/ to vendor")
    return dist.version


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def check_container_layout(staging: Path) -> None:
    """Refuse, saying what to do, an artifact the deployed container cannot load.

    Each check is a failure seen with the real serving stack (see
    docs/sagemaker-model.md): a family the handler does not serve in the
    container's transformers, the transformers-5 processor layout, a missing
    tokenizer, OpenCLIP without its vendored packages, and a
    requirements.txt (a pip install at every cold start, which also replaced
    the container's transformers and broke its toolkit's import).
    """
    from clipsearch.models import OPEN_CLIP_CONFIG

    where = f"container {container.DLC_TAG} (transformers {container.TRANSFORMERS_VERSION})"
    if (staging / OPEN_CLIP_CONFIG).is_file():
        problems = _openclip_problems(staging)
    else:
        problems = _transformers_problems(staging, where)
    problems += [f"{name} is missing" for name in ("code/inference.py", METADATA_FILE)
                 if not (staging / name).is_file()]
    if (staging / "code" / "requirements.txt").exists():
        problems.append("code/requirements.txt is present, which the container pip-installs "
                        "at every start")
    if problems:
        raise ConfigurationError(
            f"the artifact would not load in the {where}: {'; '.join(problems)}. Rebuild it "
            "with this checkout's `scripts/package_model.py`, which writes the container's "
            "layout")


def _transformers_problems(staging: Path, where: str) -> list[str]:
    try:
        model_type = json.loads((staging / "config.json").read_text(encoding="utf-8"))["model_type"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigurationError(
            f"the staged model has no readable config.json model_type ({exc}); package a "
            "directory saved with save_pretrained") from exc
    if model_type not in container.SUPPORTED_MODEL_TYPES:
        raise ConfigurationError(
            f"model type {model_type!r} cannot be served by the {where}: the handler serves "
            f"{', '.join(container.SUPPORTED_MODEL_TYPES)} and OpenCLIP. Package a checkpoint "
            "of a supported family, or add the family to SUPPORTED_MODEL_TYPES in "
            "clipsearch/sagemaker/container.py together with a case in "
            "tests/test_container_parity.py")
    problems = [f"{name} is missing" for name in ("model.safetensors", PREPROCESSOR_FILE)
                if not (staging / name).is_file()]
    if not any((staging / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"the tokenizer ({' or '.join(TOKENIZER_FILES)}) is missing")
    if (staging / PROCESSOR_FILE).exists():
        problems.append(f"{PROCESSOR_FILE} (the transformers-5 layout) is present, which 4.x "
                        "passes to the processor's constructor")
    return problems


def _openclip_problems(staging: Path) -> list[str]:
    from clipsearch.models import OPEN_CLIP_CONFIG

    try:
        model_cfg = json.loads((staging / OPEN_CLIP_CONFIG).read_text(encoding="utf-8"))[
            "model_cfg"]
    except (OSError, ValueError, KeyError) as exc:
        return [f"{OPEN_CLIP_CONFIG} has no readable model_cfg ({exc})"]
    problems = [] if (staging / OPEN_CLIP_WEIGHTS).is_file() else [f"{OPEN_CLIP_WEIGHTS} is "
                                                                   "missing"]
    packages = list(OPENCLIP_DISTRIBUTIONS.values())
    if model_cfg.get("vision_cfg", {}).get("timm_model_name"):
        packages += TIMM_DISTRIBUTION.values()
    problems += [f"code/{package} (vendored; the image has no {package}) is missing"
                 for package in packages if not (staging / "code" / package / "__init__.py")
                 .is_file()]
    if model_cfg.get("text_cfg", {}).get("hf_tokenizer_name") and not (
            staging / "tokenizer_config.json").is_file():
        problems.append("the Hugging Face tokenizer the config names is missing (the "
                        "container cannot download it)")
    return problems


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
                   prompt_template: str | None = None) -> Artifact:
    """Stage in a temp dir and tar it to `output`."""
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="clipsearch-package-") as tmp:
        meta = stage_model(model, Path(tmp), model_id=model_id, prompt_template=prompt_template)
        size, digest = write_deterministic_tar(Path(tmp), output)
    return Artifact(output, size, digest, str(meta["model_id"]), int(meta["dimension"]),
                    str(meta["family"]))


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
