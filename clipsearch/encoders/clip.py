"""OpenAI-style CLIP (`CLIPModel`) in process, on Hugging Face transformers."""

from __future__ import annotations

from collections.abc import Sequence

from clipsearch import config
from clipsearch.encoders.hf import TransformersEncoder
from clipsearch.encoders.towers import Tensors


class ClipEncoder(TransformersEncoder):
    """CLIP: text padded to the longest item (its causal mask ignores the padding).

    CLIP was trained on alt-text captions, so queries get "a photo of {}" by
    default (see `config.DEFAULT_PROMPT_TEMPLATE`).
    """

    family = "clip"
    label = "CLIP"
    model_types = ("clip",)
    default_prompt_template = config.DEFAULT_PROMPT_TEMPLATE

    def _config_dimension(self) -> int:
        return int(self.model.config.projection_dim)

    def tokenize(self, texts: Sequence[str]) -> Tensors:
        return dict(self.processor.tokenizer(
            list(texts), return_tensors="pt", padding=True, truncation=True,
            max_length=self._max_tokens,
        ))
