"""Random-weight models of every supported family, built offline in code.

Generalises `clipsearch.random_clip` (which builds CLIP) to SigLIP, SigLIP 2
and OpenCLIP. Each builder writes exactly the directory the family's real
loader reads: `save_pretrained` output (config, safetensors, tokenizer and
image-processor files) for the transformers families, OpenCLIP's hub layout
(`open_clip_config.json` + `open_clip_model.safetensors`) for OpenCLIP. The
tokenizers are generated here too, small but of the real kinds:

- SigLIP: a SentencePiece unigram model trained on a few sentences;
- SigLIP 2: a Gemma-style byte-fallback BPE (`tokenizer.json`, `GemmaTokenizer`)
  whose merges cover a few words in English, Spanish, German, Japanese and
  Arabic; any other character still tokenizes, through its UTF-8 bytes;
- OpenCLIP: OpenCLIP's bundled CLIP BPE (tiny preset), or the SigLIP
  SentencePiece above as the directory's HF tokenizer (SigLIP-architecture
  presets, like Marqo-Ecommerce's, and its tiny stand-in `tiny-siglip`, whose
  vision tower is timm's).

"tiny" presets are for tests (seconds on CPU); the named presets have the
real architecture of a published checkpoint, for speed benchmarks only.
Rankings from random weights are meaningless; everything else is real.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from clipsearch.random_clip import PRESETS as CLIP_PRESETS
from clipsearch.random_clip import build_random_clip

# Words the synthetic tokenizers learn whole (query words of the tests and the
# demo, in the five languages the multilingual tests use).
WORDS = (
    "a", "photo", "of", "the", "red", "green", "blue", "black", "white", "shoe", "boot",
    "leather", "shirt", "dress", "bag", "chair", "lamp", "circle", "square", "striped",
    "zapato", "rojo", "de", "cuero", "camisa", "schuh", "roter", "leder", "hemd",
    "靴", "赤い", "革", "シャツ", "حذاء", "أحمر", "جلد", "قميص",
)

def _siglip(width: int, mlp: int, layers: int, heads: int, *, vocab: int | None = None,
            image_size: int | None = 64, patch: int = 16, **vision) -> dict:
    """A SigLIP preset: both towers share width/depth, text is 64 tokens long."""
    tower = dict(hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers,
                 num_attention_heads=heads)
    text = dict(tower, max_position_embeddings=64, **({"vocab_size": vocab} if vocab else {}))
    size = {"image_size": image_size} if image_size else {}
    return {"text": text, "vision": dict(tower, patch_size=patch, **size, **vision)}


PRESETS: dict[str, dict[str, dict]] = {
    "clip": {name: {} for name in CLIP_PRESETS},
    "siglip": {
        "tiny": _siglip(32, 64, 2, 2),
        # google/siglip-base-patch16-224 (vocab 32000, 768-d).
        "base-patch16-224": _siglip(768, 3072, 12, 12, vocab=32000, image_size=224),
        # google/siglip-so400m-patch14-384 (1152-d).
        "so400m-patch14-384": _siglip(1152, 4304, 27, 16, vocab=32000, image_size=384,
                                      patch=14),
    },
    "siglip2": {
        # Fixed resolution, `model_type` siglip + Gemma tokenizer, like
        # google/siglip2-base-patch16-224.
        "tiny": _siglip(32, 64, 2, 2),
        # NaFlex (`model_type` siglip2): aspect-preserving patches + mask. 256
        # patches like Google's checkpoints (and Siglip2Processor's default).
        "tiny-naflex": dict(_siglip(32, 64, 2, 2, image_size=None, num_patches=256),
                            naflex=True, max_num_patches=256),
        # google/siglip2-base-patch16-224 (Gemma vocab 256000, 768-d).
        "base-patch16-224": _siglip(768, 3072, 12, 12, vocab=256000, image_size=224),
    },
    "openclip": {
        "tiny": {"model_cfg": {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "patch_size": 16,
                           "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32,
                         "heads": 2, "layers": 2}}},
        # Marqo-Ecommerce's kind of model, tiny: a timm vision tower with MAP
        # pooling (timm's own `test_vit`) and a SigLIP text tower reading the
        # directory's SentencePiece tokenizer, canonicalized as ViT-B-16-SigLIP's.
        "tiny-siglip": {"model_cfg": {
            "embed_dim": 64, "init_logit_bias": -10, "custom_text": True,
            "vision_cfg": {"image_size": 64, "timm_model_name": "test_vit",
                           "timm_model_pretrained": False, "timm_pool": "map",
                           "timm_proj": "none"},
            "text_cfg": {"context_length": 64, "vocab_size": 0,
                         "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                         "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 32,
                         "heads": 2, "layers": 2, "no_causal_mask": True, "proj_bias": True,
                         "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}}},
        # OpenCLIP's ViT-B-16-SigLIP / ViT-L-16-SigLIP-384, the architectures of
        # Marqo/marqo-ecommerce-embeddings-B and -L.
        "marqo-ecommerce-b": {"builtin": "ViT-B-16-SigLIP"},
        "marqo-ecommerce-l": {"builtin": "ViT-L-16-SigLIP-384"},
    },
}


def _corpus() -> list[str]:
    """Deterministic sentences over WORDS for training the SentencePiece model."""
    lines = []
    for i, first in enumerate(WORDS):
        for j in range(4):
            lines.append(" ".join((first, WORDS[(i * 7 + j * 3) % len(WORDS)],
                                   WORDS[(i * 5 + j) % len(WORDS)])))
    return lines


def write_sentencepiece(directory: Path) -> int:
    """Train a tiny SentencePiece (SigLIP's tokenizer kind) into directory/spiece.model."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=buffer, vocab_size=400,
        model_type="unigram", byte_fallback=True, character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, hard_vocab_limit=False,
        minloglevel=2,
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spiece.model").write_bytes(buffer.getvalue())
    return spm.SentencePieceProcessor(model_proto=buffer.getvalue()).get_piece_size()


def _siglip_tokenizer(directory: Path):
    from transformers import SiglipTokenizer

    write_sentencepiece(directory)
    return SiglipTokenizer(str(directory / "spiece.model"), model_max_length=64)


def _gemma_tokenizer(directory: Path):
    """A Gemma-layout tokenizer: specials, 256 byte tokens, then BPE pieces over WORDS."""
    from tokenizers import Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(specials)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    # Gemma adds no prefix space, so a query's first word has no "▁": learn both.
    for symbols in [list(w) for w in WORDS] + [["▁", *w] for w in WORDS]:
        for ch in symbols:
            vocab.setdefault(ch, len(vocab))
        current = symbols[0]
        for nxt in symbols[1:]:
            merged = current + nxt
            if merged not in vocab:
                merges.append((current, nxt))
                vocab[merged] = len(vocab)
            current = merged
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                              byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <eos>", special_tokens=[("<eos>", vocab["<eos>"])])
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    fast = PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"), pad_token="<pad>", eos_token="<eos>",
        bos_token="<bos>", unk_token="<unk>", mask_token="<mask>", model_max_length=64,
        padding_side="right")
    return fast


def _save_gemma_tokenizer_config(directory: Path) -> None:
    """Name the class the way Google's SigLIP 2 checkpoints do, so both transformers 4
    (GemmaTokenizerFast) and 5 (GemmaTokenizer) load it from tokenizer.json."""
    path = directory / "tokenizer_config.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["tokenizer_class"] = "GemmaTokenizer"
    doc.pop("processor_class", None)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")


def _mark(directory: Path, family: str, preset: str, seed: int) -> None:
    (directory / "RANDOM_WEIGHTS.txt").write_text(
        f"Random-weight {family}, preset {preset!r}, seed {seed}. Rankings are not "
        "meaningful.\n", encoding="utf-8")


def build_random_siglip(directory: Path, preset: str = "tiny", seed: int = 0,
                        *, family: str = "siglip") -> Path:
    """SigLIP (SentencePiece) or SigLIP 2 (Gemma tokenizer; NaFlex presets too)."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    from clipsearch.models import quiet_transformers

    quiet_transformers()
    spec = _preset(family, preset)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = (_gemma_tokenizer(directory) if family == "siglip2"
                 else _siglip_tokenizer(directory))
    text = dict({"vocab_size": len(tokenizer)}, **spec["text"])
    text.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    if spec.get("naflex"):
        from transformers import (
            Siglip2Config,
            Siglip2ImageProcessor,
            Siglip2Model,
            Siglip2Processor,
        )

        model = Siglip2Model(Siglip2Config(text_config=text, vision_config=spec["vision"]))
        image_processor = Siglip2ImageProcessor(
            patch_size=spec["vision"]["patch_size"], max_num_patches=spec["max_num_patches"])
        processor = Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)
    else:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=spec["vision"]))
        size = spec["vision"]["image_size"]
        image_processor = SiglipImageProcessor(size={"height": size, "width": size})
        processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    if family == "siglip2":
        _save_gemma_tokenizer_config(directory)
    _mark(directory, family, preset, seed)
    return directory


def build_random_openclip(directory: Path, preset: str = "tiny", seed: int = 0) -> Path:
    """OpenCLIP's hub layout: open_clip_config.json + open_clip_model.safetensors."""
    import open_clip
    import torch
    from safetensors.torch import save_model

    spec = _preset("openclip", preset)
    directory.mkdir(parents=True, exist_ok=True)
    if "builtin" in spec:
        model_cfg = open_clip.get_model_config(spec["builtin"])
    else:
        model_cfg = json.loads(json.dumps(spec["model_cfg"]))
    if model_cfg["text_cfg"].get("hf_tokenizer_name"):
        # The config names a hub tokenizer; from a local directory OpenCLIP
        # loads it from the directory instead, so write one there.
        tokenizer = _siglip_tokenizer(directory)
        tokenizer.save_pretrained(directory)
        if not model_cfg["text_cfg"].get("vocab_size"):  # tiny: the tokenizer's own size
            model_cfg["text_cfg"]["vocab_size"] = len(tokenizer)
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)  # "no weights found": that is the point here
    try:
        model = open_clip.create_model(
            "local-dir:" + str(_write_open_clip_config(directory, model_cfg)),
            load_weights=False)
    finally:
        logging.disable(logging.NOTSET)
    save_model(model.eval(), str(directory / "open_clip_model.safetensors"))
    _mark(directory, "openclip", preset, seed)
    return directory


def _write_open_clip_config(directory: Path, model_cfg: dict) -> Path:
    doc = {"model_cfg": model_cfg,
           "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                              "interpolation": "bicubic", "resize_mode": "squash"}
           if model_cfg.get("custom_text") else {}}
    (directory / "open_clip_config.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return directory


def _preset(family: str, preset: str) -> dict:
    if family not in PRESETS:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(PRESETS)}")
    if preset not in PRESETS[family]:
        raise ValueError(f"unknown {family} preset {preset!r}; choose from "
                         f"{', '.join(PRESETS[family])}")
    return PRESETS[family][preset]


def build_random_model(directory: Path, family: str = "clip", preset: str = "tiny",
                       seed: int = 0) -> Path:
    """Write a random-weight model of `family` in its real on-disk layout."""
    _preset(family, preset)
    directory = Path(directory)
    if family == "clip":
        return build_random_clip(directory, preset=preset, seed=seed)
    if family == "openclip":
        return build_random_openclip(directory, preset=preset, seed=seed)
    return build_random_siglip(directory, preset=preset, seed=seed, family=family)
