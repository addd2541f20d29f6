"""In-process CLIP on Hugging Face transformers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from clipsearch import config
from clipsearch.encoders import check_texts, l2_normalize
from clipsearch.errors import ConfigurationError
from clipsearch.images import check_image, load_image
from clipsearch.models import quiet_transformers

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


def _features(output) -> torch.Tensor:  # noqa: F821 - torch imported lazily
    """transformers 4.x returns a tensor, 5.x a model output with pooler_output."""
    return output if hasattr(output, "shape") else output.pooler_output


class ClipEncoder:
    """CLIP text and image towers, batched, without gradients.

    `model` is a Hugging Face id or a local directory saved with
    `save_pretrained`; both go through `from_pretrained`. `device="auto"`
    picks CUDA when present, and uses fp16 there because CLIP's towers are
    numerically fine at half precision and twice as fast.
    """

    def __init__(
        self,
        model: str | Path = config.DEFAULT_MODEL,
        *,
        prompt_template: str = config.DEFAULT_PROMPT_TEMPLATE,
        batch_size: int = 32,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor

        if "{}" not in prompt_template:
            raise ConfigurationError(
                f"prompt template {prompt_template!r} must contain '{{}}' for the query"
            )
        quiet_transformers()
        self._model_id = str(model)
        self.prompt_template = prompt_template
        self.batch_size = max(1, int(batch_size))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype == "auto":
            dtype = "float16" if self.device.type == "cuda" else "float32"
        self.dtype = getattr(torch, dtype)
        try:
            self.model = CLIPModel.from_pretrained(self._model_id, dtype=self.dtype)
            self.processor = CLIPProcessor.from_pretrained(self._model_id)
        except OSError as exc:
            raise ConfigurationError(
                f"could not load CLIP model {self._model_id!r}: {exc}".splitlines()[0]
            ) from exc
        self.model.to(self.device).eval()
        self._dimension = int(self.model.config.projection_dim)
        self._max_tokens = int(self.model.config.text_config.max_position_embeddings)
        # torch modules are not re-entrant under concurrent forward passes on
        # all backends; one forward at a time keeps threaded servers safe.
        self._lock = threading.Lock()

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
            batch = prompts[start : start + self.batch_size]
            inputs = self.processor(
                text=batch, return_tensors="pt", padding=True, truncation=True,
                max_length=self._max_tokens,
            ).to(self.device)
            with self._lock, torch.inference_mode():
                feats = _features(self.model.get_text_features(**inputs))
            chunks.append(feats.float().cpu().numpy())
        if not chunks:
            return np.zeros((0, self._dimension), dtype=np.float32)
        return l2_normalize(np.concatenate(chunks))

    def preprocess_images(self, images: Sequence[bytes | Image.Image]):
        """Decode and resize on the caller's thread; returns the pixel tensor.

        PIL images a caller decoded itself get the same pixel bounds as bytes,
        since the resize below is where an extreme aspect ratio costs memory.
        """
        pil = [load_image(bytes(img), field=f"images[{i}]")
               if isinstance(img, bytes | bytearray)
               else check_image(img, field=f"images[{i}]") for i, img in enumerate(images)]
        return self.processor(images=pil, return_tensors="pt")["pixel_values"]

    def encode_pixels(self, pixel_values) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            feats = _features(
                self.model.get_image_features(
                    pixel_values=pixel_values.to(self.device, dtype=self.dtype)
                )
            )
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
