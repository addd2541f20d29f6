"""OpenCLIP checkpoints in process, through `open_clip_torch`.

Accepts `hf-hub:org/repo` (e.g. `hf-hub:Marqo/marqo-ecommerce-embeddings-B`)
and a local directory in OpenCLIP's hub layout (`open_clip_config.json` plus
`open_clip_model.safetensors` or `open_clip_pytorch_model.bin`), with or
without OpenCLIP's `local-dir:` prefix. Preprocessing is OpenCLIP's own for that
config: its tokenizer (CLIP BPE, or the HF tokenizer the config names, padded
to the configured context length) and its validation image transform.

The default prompt template is the bare query: OpenCLIP checkpoints range
from LAION alt-text models to product-title models (Marqo-Ecommerce), and a
fixed English prefix suits neither in general. Pass `--prompt-template` for a
model whose card asks for one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from clipsearch.encoders.towers import Tensors, TowerEncoder
from clipsearch.errors import ConfigurationError
from clipsearch.models import OPEN_CLIP_CONFIG as CONFIG_FILE
from clipsearch.models import OPEN_CLIP_HUB_PREFIX as HUB_PREFIX
from clipsearch.models import OPEN_CLIP_LOCAL_PREFIX as LOCAL_PREFIX

if TYPE_CHECKING:
    import torch
    from PIL import Image



def open_clip_name(model: str) -> str:
    """OpenCLIP's own spelling of `model`: a directory becomes `local-dir:PATH`."""
    if model.startswith((HUB_PREFIX, LOCAL_PREFIX)):
        return model
    if (Path(model) / CONFIG_FILE).is_file():
        return LOCAL_PREFIX + str(Path(model).resolve())
    raise ConfigurationError(
        f"{model!r} is neither an hf-hub:ORG/REPO id nor a directory with {CONFIG_FILE}"
    )


class OpenClipEncoder(TowerEncoder):
    """Any OpenCLIP `CLIP`/`CustomTextCLIP` model."""

    family = "openclip"
    label = "OpenCLIP"

    def _load(self, model_id: str) -> int:
        try:
            import open_clip
        except ImportError as exc:
            raise ConfigurationError(
                "OpenCLIP models need open_clip_torch: pip install 'clipsearch[openclip]'"
            ) from exc
        name = open_clip_name(model_id)
        try:
            self.model, _, self._transform = open_clip.create_model_and_transforms(
                name, device="cpu")
            self._tokenizer = open_clip.get_tokenizer(name)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigurationError(
                f"could not load OpenCLIP model {model_id!r}: {exc}".splitlines()[0]
            ) from exc
        self.model.to(dtype=self.dtype)
        self.open_clip_config = _model_config(name)
        return int(self.open_clip_config["embed_dim"])

    def tokenize(self, texts: Sequence[str]) -> Tensors:
        return {"input_ids": self._tokenizer(list(texts))}

    def text_tower(self, tokens: Tensors) -> torch.Tensor:
        return self.model.encode_text(tokens["input_ids"])

    def preprocess_pil(self, images: Sequence[Image.Image]) -> Tensors:
        import torch

        return {"pixel_values": torch.stack([self._transform(img) for img in images])}

    def image_tower(self, pixels: Tensors) -> torch.Tensor:
        return self.model.encode_image(pixels["pixel_values"])


def _model_config(name: str) -> dict:
    import open_clip

    if name.startswith(LOCAL_PREFIX):
        doc = json.loads((Path(name[len(LOCAL_PREFIX):]) / CONFIG_FILE).read_text("utf-8"))
        return doc["model_cfg"]
    return open_clip.get_model_config(name)
