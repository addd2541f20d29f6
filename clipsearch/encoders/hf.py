"""What the Hugging Face transformers families (CLIP, SigLIP, SigLIP 2) share.

`AutoModel`/`AutoProcessor` load any of them from a hub id or a directory
saved with `save_pretrained`; each family subclass says which `model_type`s it
accepts and how its text is tokenized as trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from clipsearch.encoders.towers import Tensors, TowerEncoder
from clipsearch.errors import ConfigurationError
from clipsearch.models import dtype_kwargs, quiet_transformers

if TYPE_CHECKING:
    import torch
    from PIL import Image


def pil_backend() -> dict[str, str]:
    """`from_pretrained` options that select the PIL image processors.

    transformers 5 preprocesses with torchvision whenever it is installed
    (OpenCLIP brings it), which shifts pixels by ~1e-3 from the PIL path that
    transformers 4 (the SageMaker container), the checkpoints' published
    processors and the handler's split preprocessing all use. Pinning PIL keeps
    the local index, the endpoint and the batch transform on the same vectors.
    """
    import transformers

    return {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {}


def features(output) -> torch.Tensor:
    """transformers 4.x returns a tensor, 5.x a model output with pooler_output."""
    return output if hasattr(output, "shape") else output.pooler_output


class TransformersEncoder(TowerEncoder):
    """A two-tower transformers model with `get_text_features`/`get_image_features`."""

    model_types: ClassVar[tuple[str, ...]] = ()

    def _load(self, model_id: str) -> int:
        from transformers import AutoModel, AutoProcessor

        quiet_transformers()
        try:
            self.model = AutoModel.from_pretrained(model_id, **dtype_kwargs(self.dtype))
            self.processor = AutoProcessor.from_pretrained(model_id, **pil_backend())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"could not load {self.label} model {model_id!r}: {exc}".splitlines()[0]
            ) from exc
        model_type = self.model.config.model_type
        if model_type not in self.model_types:
            raise ConfigurationError(
                f"{model_id!r} is a {model_type!r} model, not {self.label} "
                f"({', '.join(self.model_types)}); use clipsearch.encoders.load_encoder"
            )
        self._max_tokens = int(self.model.config.text_config.max_position_embeddings)
        return self._config_dimension()

    def _config_dimension(self) -> int:
        raise NotImplementedError

    def text_tower(self, tokens: Tensors) -> torch.Tensor:
        return features(self.model.get_text_features(**tokens))

    def preprocess_pil(self, images: Sequence[Image.Image]) -> Tensors:
        return dict(self.processor.image_processor(images=list(images), return_tensors="pt"))

    def image_tower(self, pixels: Tensors) -> torch.Tensor:
        return features(self.model.get_image_features(**pixels))
