"""Encoders turn query text and images into unit vectors in one shared space.

Two implementations share the `Encoder` protocol: `ClipEncoder` runs CLIP in
process, `SageMakerEncoder` calls the deployed endpoint. The search service
only sees the protocol, so it behaves the same locally and on AWS.
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


def __getattr__(name: str):
    # Lazy, so `import clipsearch.encoders` never imports torch or boto3.
    if name == "ClipEncoder":
        from clipsearch.encoders.clip import ClipEncoder

        return ClipEncoder
    if name == "SageMakerEncoder":
        from clipsearch.encoders.sagemaker import SageMakerEncoder

        return SageMakerEncoder
    raise AttributeError(name)
