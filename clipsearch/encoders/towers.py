"""The in-process encoder every model family shares: two towers, batched, no gradients.

A family (CLIP, SigLIP, SigLIP 2, OpenCLIP) only says how to load its model,
tokenize text and preprocess images as it was trained, and how to run each
tower on tensors. Batching, templates, devices, locking and normalisation
live here once. The tower methods take and return plain tensors
(`tokenize` -> `text_tower`, `preprocess_images` -> `image_tower`) so that
other runtimes (an ONNX export, the SageMaker handler's own preprocessing)
can wrap any family the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from clipsearch.encoders import check_texts, l2_normalize
from clipsearch.errors import ConfigurationError
from clipsearch.images import check_image, load_image

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

Tensors = dict[str, "torch.Tensor"]


def check_prompt_template(template: str) -> str:
    if not isinstance(template, str) or "{}" not in template:
        raise ConfigurationError(
            f"prompt template {template!r} must contain '{{}}' for the query"
        )
    return template


class TowerEncoder:
    """Base of the in-process encoders; subclasses fill in the five family hooks.

    `device="auto"` picks CUDA when present, and uses fp16 there because these
    towers are numerically fine at half precision and twice as fast.
    `prompt_template=None` takes the family's own default (see each family),
    so a multilingual model never gets an English template forced on it.
    """

    family: ClassVar[str] = ""
    label: ClassVar[str] = ""  # the family's name as people write it, for messages
    default_prompt_template: ClassVar[str] = "{}"

    def __init__(
        self,
        model: str | Path,
        *,
        prompt_template: str | None = None,
        batch_size: int = 32,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        import torch

        self.prompt_template = check_prompt_template(
            self.default_prompt_template if prompt_template is None else prompt_template
        )
        self._model_id = str(model)
        self.batch_size = max(1, int(batch_size))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype == "auto":
            dtype = "float16" if self.device.type == "cuda" else "float32"
        self.dtype = getattr(torch, dtype)
        self._dimension = self._load(self._model_id)
        self.model.to(self.device).eval()
        # torch modules are not re-entrant under concurrent forward passes on
        # all backends; one forward at a time keeps threaded servers safe.
        self._lock = threading.Lock()

    # ------------------------------------------------------------ family hooks

    model: Any

    def _load(self, model_id: str) -> int:
        """Load weights and preprocessing into `self.model` (+ helpers); return the dimension."""
        raise NotImplementedError

    def tokenize(self, texts: Sequence[str]) -> Tensors:
        """Token tensors (CPU) exactly as the family was trained to read text."""
        raise NotImplementedError

    def text_tower(self, tokens: Tensors) -> torch.Tensor:
        """Unnormalised text embeddings for tokens already on `self.device`."""
        raise NotImplementedError

    def preprocess_pil(self, images: Sequence[Image.Image]) -> Tensors:
        """Pixel tensors (CPU) as the family was trained to see images."""
        raise NotImplementedError

    def image_tower(self, pixels: Tensors) -> torch.Tensor:
        """Unnormalised image embeddings for pixel tensors already on `self.device`."""
        raise NotImplementedError

    # ------------------------------------------------------------ the protocol

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        return self._dimension

    def format_query(self, text: str) -> str:
        return self.prompt_template.format(text.strip())

    def encode_texts(self, texts: Sequence[str], *, apply_template: bool = True) -> np.ndarray:
        import numpy as np
        import torch

        check_texts(texts)
        prompts = [self.format_query(t) if apply_template else t for t in texts]
        chunks = []
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.tokenize(prompts[start : start + self.batch_size])
            with self._lock, torch.inference_mode():
                feats = self.text_tower(self.to_device(tokens))
            chunks.append(feats.float().cpu().numpy())
        if not chunks:
            return np.zeros((0, self._dimension), dtype=np.float32)
        return l2_normalize(np.concatenate(chunks))

    def preprocess_images(self, images: Sequence[bytes | Image.Image]) -> Tensors:
        """Decode and preprocess on the caller's thread; returns the pixel tensors.

        PIL images a caller decoded itself get the same pixel bounds as bytes,
        since the resize is where an extreme aspect ratio costs memory.
        """
        pil = [load_image(bytes(img), field=f"images[{i}]")
               if isinstance(img, bytes | bytearray)
               else check_image(img, field=f"images[{i}]") for i, img in enumerate(images)]
        return self.preprocess_pil(pil)

    def encode_pixels(self, pixels: Tensors | torch.Tensor) -> np.ndarray:
        """Embed preprocessed images; a bare tensor is taken as `pixel_values`."""
        import torch

        if not isinstance(pixels, Mapping):
            pixels = {"pixel_values": pixels}
        with self._lock, torch.inference_mode():
            feats = self.image_tower(self.to_device(pixels))
        return l2_normalize(feats.float().cpu().numpy())

    def encode_images(self, images: Sequence[bytes | Image.Image]) -> np.ndarray:
        import numpy as np

        chunks = [
            self.encode_pixels(self.preprocess_images(images[start : start + self.batch_size]))
            for start in range(0, len(images), self.batch_size)
        ]
        if not chunks:
            return np.zeros((0, self._dimension), dtype=np.float32)
        return np.concatenate(chunks)

    def to_device(self, tensors: Mapping[str, torch.Tensor]) -> Tensors:
        """Move to the model's device; floating tensors (pixels) take the model's dtype."""
        return {
            name: t.to(self.device, dtype=self.dtype) if t.is_floating_point()
            else t.to(self.device)
            for name, t in tensors.items()
        }
