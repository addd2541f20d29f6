"""Finding a usable model, online or off, and telling which family it is.

Hugging Face's loader retries an unreachable hub for half a minute before it
gives up. The CLI checks the cache and the network first, so an offline user
gets an answer (and, for the demo, a labelled stand-in) in seconds.

The family (CLIP, SigLIP, SigLIP 2, OpenCLIP) is read from the model's own
files, never guessed from its name: `open_clip_config.json` means OpenCLIP,
otherwise `config.json`'s `model_type` decides, and a SigLIP whose tokenizer
is Gemma's is SigLIP 2 (Google ships the fixed-resolution SigLIP 2
checkpoints as `model_type` siglip).
"""

from __future__ import annotations

import functools
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from clipsearch.errors import ConfigurationError

OPEN_CLIP_HUB_PREFIX = "hf-hub:"
OPEN_CLIP_LOCAL_PREFIX = "local-dir:"
OPEN_CLIP_CONFIG = "open_clip_config.json"
FAMILIES = ("clip", "siglip", "siglip2", "openclip")
_MODEL_TYPES = {"clip": "clip", "siglip": "siglip", "siglip2": "siglip2"}


def _hub_repo(model: str) -> tuple[str, str]:
    """(repo id, the file that marks it) for a hub model name."""
    if model.startswith(OPEN_CLIP_HUB_PREFIX):
        return model[len(OPEN_CLIP_HUB_PREFIX):], OPEN_CLIP_CONFIG
    return model, "config.json"


def _local_path(model: str) -> Path:
    return Path(model[len(OPEN_CLIP_LOCAL_PREFIX):] if model.startswith(OPEN_CLIP_LOCAL_PREFIX)
                else model)


def is_local_model(model: str) -> bool:
    return _local_path(model).is_dir()


@functools.lru_cache(maxsize=64)
def public_model_name(model: str) -> str:
    """The model as a client may see it: a hub id as it is, a local directory by its name.

    A model loaded from disk is identified by its path, which would publish the
    server's directory layout (home directory, user name) in every answer.
    """
    if model.startswith(("/", ".", "~", "\\")) or Path(model).expanduser().is_dir():
        return Path(model).expanduser().name or "local-model"
    return model


def is_cached(model: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(*_hub_repo(model)), str)
    except Exception:
        return False


def read_model_file(model: str, filename: str) -> dict | None:
    """A JSON file of `model` (a directory or a hub id, cache first); None if it has none."""
    if is_local_model(model):
        path = _local_path(model) / filename
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(_hub_repo(model)[0], filename))
        except Exception:
            return None
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{model}: {filename} is not valid JSON ({exc})") from exc


def detect_family(model: str) -> str:
    """Which of `FAMILIES` `model` belongs to, from its own configuration files."""
    if model.startswith((OPEN_CLIP_HUB_PREFIX, OPEN_CLIP_LOCAL_PREFIX)) \
            or read_model_file(model, OPEN_CLIP_CONFIG) is not None:
        return "openclip"
    config = read_model_file(model, "config.json")
    if config is None:
        raise ConfigurationError(
            f"{model} has neither config.json (transformers) nor {OPEN_CLIP_CONFIG} (OpenCLIP)"
        )
    model_type = str(config.get("model_type", ""))
    family = _MODEL_TYPES.get(model_type)
    if family is None:
        raise ConfigurationError(
            f"{model} is a {model_type or 'untyped'!r} model; clipsearch supports CLIP, SigLIP, "
            "SigLIP 2 (transformers) and OpenCLIP checkpoints"
        )
    if family == "siglip":
        tokenizer = read_model_file(model, "tokenizer_config.json") or {}
        if "gemma" in str(tokenizer.get("tokenizer_class", "")).lower():
            family = "siglip2"
    return family


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def model_availability(model: str) -> str | None:
    """None when `model` can be loaded now; otherwise why not."""
    if is_local_model(model) or is_cached(model):
        return None
    if _local_path(model).expanduser().exists():
        return (f"{model} exists but is not a model directory (save_pretrained or "
                f"OpenCLIP's {OPEN_CLIP_CONFIG} layout)")
    if model.startswith((".", "/", "~")):
        return f"model directory {model} does not exist"
    if not hub_reachable():
        return (f"{model} is not in the local Hugging Face cache and the hub is unreachable "
                "(offline?)")
    return None


def quiet_transformers() -> None:
    """transformers prints progress bars and backend notices on every load."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def dtype_kwargs(dtype: object) -> dict[str, object]:
    """`from_pretrained`'s precision argument under the installed transformers.

    transformers 4.56 renamed `torch_dtype` to `dtype`; older releases (the
    SageMaker container has 4.51) take an unknown `dtype` into the model config,
    whose JSON serialisation then fails ("Object of type dtype is not JSON
    serializable"), so the handler must speak whichever the container has.
    """
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
