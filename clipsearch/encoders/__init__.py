"""Encoders turn query text and images into unit vectors in one shared space.

Implementations of the `Encoder` protocol: one in-process encoder per model
family (`ClipEncoder`, `SiglipEncoder`, `Siglip2Encoder`, `OpenClipEncoder`,
all `towers.TowerEncoder`s), chosen by `load_encoder` from the model's own
configuration, and `SageMakerEncoder`, which calls the deployed endpoint. The
search service only sees the protocol, so it behaves the same locally and on
AWS, whatever the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

@runtime_checkable
class Encoder(Protocol):
    """Maps texts and images to float32 L2-normalised vectors of `dimension`."""

    @property
    def model_id(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def prompt_template(self) -> str:
        """What text queries are wrapped in; part of the query cache's key."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: Sequence[bytes | Image.Image]) -> np.ndarray: ...


def check_texts(texts: Sequence[str]) -> None:
    """Both encoders reject the same inputs with the same errors, before any work."""
    from clipsearch.errors import ValidationError

    if isinstance(texts, str):
        raise TypeError("encode_texts takes a sequence of strings, not one string")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValidationError("text must be a non-empty string", field=f"texts[{i}]")


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Row-normalise to unit length in float32; zero rows stay zero instead of NaN."""
    import numpy as np

    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


# family -> (module, class); imported lazily so `import clipsearch.encoders`
# never imports torch, transformers, open_clip or boto3.
FAMILY_ENCODERS = {
    "clip": ("clipsearch.encoders.clip", "ClipEncoder"),
    "siglip": ("clipsearch.encoders.siglip", "SiglipEncoder"),
    "siglip2": ("clipsearch.encoders.siglip", "Siglip2Encoder"),
    "openclip": ("clipsearch.encoders.openclip", "OpenClipEncoder"),
}
_LAZY = {cls: module for module, cls in FAMILY_ENCODERS.values()}
_LAZY["SageMakerEncoder"] = "clipsearch.encoders.sagemaker"


def encoder_class(family: str) -> type:
    import importlib

    module, cls = FAMILY_ENCODERS[family]
    return getattr(importlib.import_module(module), cls)


def load_encoder(model: str, *, prompt_template: str | None = None, **options):
    """The in-process encoder for `model`, whichever family its configuration says.

    `prompt_template=None` keeps the family's default; `options` (batch_size,
    device, dtype) go to the encoder unchanged.
    """
    from clipsearch.models import detect_family

    return encoder_class(detect_family(str(model)))(
        model, prompt_template=prompt_template, **options)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
