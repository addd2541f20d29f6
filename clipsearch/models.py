"""Finding a usable CLIP model, online or off.

Hugging Face's loader retries an unreachable hub for half a minute before it
gives up. The CLI checks the cache and the network first, so an offline user
gets an answer (and, for the demo, a labelled stand-in) in seconds.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse


def is_local_model(model: str) -> bool:
    return Path(model).is_dir()


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

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:
        return False


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
    if Path(model).expanduser().exists():
        return f"{model} exists but is not a directory saved with save_pretrained"
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
