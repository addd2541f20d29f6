"""SigLIP and SigLIP 2 in process, on Hugging Face transformers.

Preprocessing as trained (big_vision):
- text is padded to the fixed length the model was trained at (64 tokens),
  never to the longest item, and the text tower gets `input_ids` only, no
  attention mask: it pools the *last* position, which was always a pad token
  seen with full attention during training;
- SigLIP's tokenizer is a SentencePiece model (English, or mC4 for the i18n
  checkpoints); SigLIP 2's is Gemma's multilingual one. Both come from the
  checkpoint's own tokenizer files, so queries in any language go through
  unchanged.
- the image processor resizes to a square without cropping and normalises to
  [-1, 1]; SigLIP 2 "NaFlex" checkpoints (`model_type` siglip2) keep the
  aspect ratio and add a patch mask and spatial shapes, which are passed on.

The default prompt template is the bare query ("{}"): SigLIP was trained on
WebLI alt-text in many languages, and an English prefix would be wrong for a
Spanish or Japanese query. SigLIP's scores are sigmoid-trained; clipsearch
ranks by cosine of the normalised embeddings, which orders results exactly as
the sigmoid of the scaled logit does (it is monotonic in the cosine), but
cosine values run lower than CLIP's, so tune `min_score` per model.
"""

from __future__ import annotations

from collections.abc import Sequence

from clipsearch.encoders.hf import TransformersEncoder
from clipsearch.encoders.towers import Tensors


class SiglipEncoder(TransformersEncoder):
    """SigLIP and the fixed-resolution SigLIP 2 checkpoints (`model_type` siglip)."""

    family = "siglip"
    label = "SigLIP"
    model_types = ("siglip", "siglip2")

    def _config_dimension(self) -> int:
        text = self.model.config.text_config
        return int(getattr(text, "projection_size", None) or text.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> Tensors:
        tokens = self.processor.tokenizer(
            list(texts), return_tensors="pt", padding="max_length", truncation=True,
            max_length=self._max_tokens,
        )
        return {"input_ids": tokens["input_ids"]}


class Siglip2Encoder(SiglipEncoder):
    """SigLIP 2: Gemma tokenizer on lowercased text; NaFlex checkpoints also take patch masks.

    SigLIP 2 was trained on lowercased text. transformers' own `Siglip2Tokenizer`
    lowercases, but the fixed-resolution checkpoints name plain `GemmaTokenizer`,
    which does not; lowercasing here gives every SigLIP 2 checkpoint, under any
    transformers release, the text it was trained on.
    """

    family = "siglip2"
    label = "SigLIP 2"

    def tokenize(self, texts: Sequence[str]) -> Tensors:
        return super().tokenize([text.lower() for text in texts])
