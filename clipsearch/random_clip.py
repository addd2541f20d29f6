"""Build CLIP checkpoints with random weights, entirely offline.

There is no model hub on CI (and often none on an air-gapped laptop), yet the
real loading path (`from_pretrained` on a directory with config, weights,
tokenizer and image-processor files) must be exercised. This module writes
exactly such a directory: the real transformers classes with random weights
and a small byte-level BPE vocabulary generated in code.

Random weights give meaningless *semantic* rankings, but every other property
holds: identical inputs give identical unit vectors, shapes and dtypes are
real, and the ViT-B/32 preset has the real compute cost for benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

# Words the synthetic BPE learns whole, so demo and test queries tokenize into
# a few tokens each. Anything else still tokenizes, byte by byte.
_WORDS = (
    "a", "photo", "of", "the", "red", "green", "blue", "yellow", "black", "white", "orange",
    "purple", "pink", "gray", "brown", "shoe", "boot", "ankle", "leather", "sneaker", "shirt",
    "dress", "bag", "chair", "lamp", "table", "mug", "sofa", "watch", "hat", "jacket",
    "cotton", "wooden", "metal", "round", "square", "circle", "triangle", "striped", "dotted",
)

PRESETS = {
    # Minutes-fast on CPU; used by the test suite.
    "tiny": {
        "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=77),
        "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, image_size=64, patch_size=16),
        "projection_dim": 32,
        "image_size": 64,
    },
    # The real openai/clip-vit-base-patch32 architecture (speed benchmarks only).
    "vit-b-32": {
        "text": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77),
        "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=12, image_size=224, patch_size=32),
        "projection_dim": 512,
        "image_size": 224,
    },
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte-to-printable-character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def _write_tokenizer_files(directory: Path) -> int:
    """Write vocab.json and merges.txt in CLIP's format; return the vocab size."""
    base = list(_bytes_to_unicode().values())
    vocab = base + [ch + "</w>" for ch in base]
    merges: list[tuple[str, str]] = []
    known = set(vocab)
    for word in _WORDS:
        symbols = [*word[:-1], word[-1] + "</w>"]
        current = symbols[0]
        for nxt in symbols[1:]:
            pair = (current, nxt)
            current = current + nxt
            if current not in known:
                merges.append(pair)
                vocab.append(current)
                known.add(current)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(
        json.dumps({token: i for i, token in enumerate(vocab)}), encoding="utf-8"
    )
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8"
    )
    return len(vocab)


def build_random_clip(directory: Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Save a random-weight CLIP (model + tokenizer + image processor) to `directory`."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    from clipsearch.models import quiet_transformers

    quiet_transformers()
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = _write_tokenizer_files(directory)
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    size = spec["image_size"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)

    text = dict(spec["text"], vocab_size=vocab_size,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    clip_config = CLIPConfig(
        text_config=text, vision_config=spec["vision"], projection_dim=spec["projection_dim"]
    )
    torch.manual_seed(seed)
    model = CLIPModel(clip_config).eval()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    (directory / "RANDOM_WEIGHTS.txt").write_text(
        f"Random-weight CLIP, preset {preset!r}, seed {seed}. Rankings are not meaningful.\n",
        encoding="utf-8",
    )
    return directory
