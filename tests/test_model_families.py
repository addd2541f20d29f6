"""Every model family behind the one Encoder protocol, on tiny random models.

Each model is written by `clipsearch.random_models` in its family's real
on-disk layout and loaded through `load_encoder`, which reads the family from
the model's own config. Embeddings are compared with each family's reference
pipeline written out here independently (transformers' processor + model,
or OpenCLIP's own transforms, tokenizer and `encode_*`), and an image
self-query must rank its product first on both index backends.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from clipsearch.catalog import Product
from clipsearch.contract import SearchRequest
from clipsearch.encoders import Encoder, load_encoder
from clipsearch.errors import ConfigurationError
from clipsearch.models import detect_family
from clipsearch.random_models import build_random_model
from clipsearch.service import SearchService
from tests.conftest import png_bytes

ATOL = 1e-5
# (family, preset, encoder class)
MODELS = [
    ("clip", "tiny", "ClipEncoder"),
    ("siglip", "tiny", "SiglipEncoder"),
    ("siglip2", "tiny", "Siglip2Encoder"),
    ("siglip2", "tiny-naflex", "Siglip2Encoder"),
    ("openclip", "tiny", "OpenClipEncoder"),
    ("openclip", "tiny-siglip", "OpenClipEncoder"),
]
TEXTS = ["red leather shoe", "Blue Striped Shirt", "a chair"]
MULTILINGUAL = ["Zapato rojo de cuero", "Roter Lederschuh", "赤い革の靴", "حذاء جلد أحمر"]


_BUILT: dict[tuple[str, str], tuple[Path, object]] = {}


def _built(tmp_path_factory, family: str, preset: str):
    """Each tiny model is built and loaded once per test session."""
    if (family, preset) not in _BUILT:
        directory = build_random_model(tmp_path_factory.mktemp(f"{family}-{preset}"),
                                       family=family, preset=preset)
        _BUILT[family, preset] = directory, load_encoder(str(directory), batch_size=4)
    return _BUILT[family, preset]


@pytest.fixture(scope="session", params=MODELS, ids=[f"{f}-{p}" for f, p, _ in MODELS])
def family_model(request, tmp_path_factory):
    family, preset, cls = request.param
    directory, encoder = _built(tmp_path_factory, family, preset)
    return family, directory, cls, encoder


def _images() -> list[bytes]:
    colours = [(220, 20, 20), (20, 200, 40), (30, 30, 230), (240, 240, 30), (10, 10, 10),
               (250, 250, 250)]
    sizes = [(48, 40), (64, 64), (80, 50), (40, 72), (64, 48), (56, 56)]
    return [png_bytes(c, s) for c, s in zip(colours, sizes, strict=True)]


# ------------------------------------------------------------------ references


def _reference_texts(family: str, directory: Path, texts: list[str]) -> np.ndarray:
    import torch

    if family == "openclip":
        import open_clip

        name = f"local-dir:{directory}"
        model, _, _ = open_clip.create_model_and_transforms(name)
        tokens = open_clip.get_tokenizer(name)(texts)
        with torch.no_grad():
            return model.eval().encode_text(tokens, normalize=True).numpy()
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(directory).eval()
    processor = AutoProcessor.from_pretrained(directory)
    with torch.no_grad():
        if family == "clip":
            inputs = processor(text=texts, return_tensors="pt", padding=True)
            out = model.get_text_features(**inputs)
        else:
            # As trained (big_vision): fixed 64-token padding, no attention
            # mask; SigLIP 2 on lowercased text.
            if family == "siglip2":
                texts = [t.lower() for t in texts]
            inputs = processor(text=texts, return_tensors="pt", padding="max_length",
                               max_length=64)
            assert inputs["input_ids"].shape[1] == 64
            out = model.get_text_features(input_ids=inputs["input_ids"])
    out = out if hasattr(out, "shape") else out.pooler_output
    return torch.nn.functional.normalize(out, dim=-1).numpy()


def _reference_images(family: str, directory: Path, images: list[bytes]) -> np.ndarray:
    import io

    import torch
    from PIL import Image

    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    if family == "openclip":
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{directory}")
        with torch.no_grad():
            return model.eval().encode_image(torch.stack([preprocess(p) for p in pil]),
                                             normalize=True).numpy()
    from transformers import AutoModel, AutoProcessor

    from clipsearch.encoders.hf import pil_backend

    # The PIL image processors: what the checkpoints were published with and
    # transformers 4 uses (5 would pick torchvision, which OpenCLIP installs).
    model = AutoModel.from_pretrained(directory).eval()
    processor = AutoProcessor.from_pretrained(directory, **pil_backend())
    inputs = processor(images=pil, return_tensors="pt")
    with torch.no_grad():
        out = model.get_image_features(**inputs)
    out = out if hasattr(out, "shape") else out.pooler_output
    return torch.nn.functional.normalize(out, dim=-1).numpy()


# ------------------------------------------------------------------ contract


def test_family_is_read_from_the_models_own_config(family_model):
    family, directory, cls, encoder = family_model
    assert detect_family(str(directory)) == family
    assert type(encoder).__name__ == cls and encoder.family == family
    assert isinstance(encoder, Encoder)
    family_preset = next(key for key, (_, built) in _BUILT.items() if built is encoder)
    # Every tiny preset's embedding width; timm's test_vit is 64 wide.
    assert encoder.dimension == (64 if family_preset == ("openclip", "tiny-siglip") else 32)


def test_text_embeddings_equal_the_family_reference_pipeline(family_model):
    family, directory, _, encoder = family_model
    ours = encoder.encode_texts(TEXTS)
    reference = _reference_texts(family, directory, [encoder.format_query(t) for t in TEXTS])
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), encoder.dimension)
    np.testing.assert_allclose(ours, reference, atol=ATOL)


def test_image_embeddings_equal_the_family_reference_pipeline(family_model):
    family, directory, _, encoder = family_model
    images = _images()
    ours = encoder.encode_images(images)  # batch_size 4: two batches
    np.testing.assert_allclose(ours, _reference_images(family, directory, images), atol=ATOL)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_default_prompt_template_is_the_familys(family_model):
    family, _, _, encoder = family_model
    if family == "clip":
        assert encoder.format_query("red shoe") == "a photo of red shoe"
    else:  # multilingual or product-title models: the query goes through as typed
        for query in MULTILINGUAL:
            assert encoder.format_query(query) == query
        np.testing.assert_array_equal(encoder.encode_texts(MULTILINGUAL),
                                      encoder.encode_texts(MULTILINGUAL, apply_template=False))


@pytest.fixture(params=["local", "opensearch"])
def empty_index(request, tmp_path):
    if request.param == "local":
        from clipsearch.index.local import LocalIndex

        yield LocalIndex(tmp_path / "index")
        return
    from clipsearch.index.opensearch import OpenSearchIndex

    client = request.getfixturevalue("opensearch_client")
    yield OpenSearchIndex(client, alias=f"families-{uuid.uuid4().hex[:8]}",
                          refresh_on_write=True)


def test_image_self_query_ranks_the_product_first(family_model, empty_index, tmp_path):
    _, _, _, encoder = family_model
    products = []
    for i, data in enumerate(_images()):
        path = tmp_path / f"p{i}.png"
        path.write_bytes(data)
        products.append(Product(f"p{i}", f"product {i}", str(path), {}))
    service = SearchService(encoder, empty_index)
    report = service.ingest(products, batch_size=4)
    assert report.indexed == len(products) and not report.failed
    assert empty_index.dimension == encoder.dimension
    for product in products:
        image = Path(product.image).read_bytes()
        top = service.search(SearchRequest(image=image, k=3))["results"][0]
        assert top["id"] == product.id
        assert top["score"] == pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------ multilingual


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_non_latin_text_tokenizes_losslessly_at_the_trained_length(family, tmp_path_factory):
    _, encoder = _built(tmp_path_factory, family, "tiny")
    tokens = encoder.tokenize(MULTILINGUAL)["input_ids"]
    assert tuple(tokens.shape) == (len(MULTILINGUAL), 64)  # fixed, not longest
    tokenizer = encoder.processor.tokenizer
    for query, ids in zip(MULTILINGUAL, tokens.tolist(), strict=True):
        assert tokenizer.unk_token_id not in ids
        expected = query.lower() if family == "siglip2" else query
        decoded = tokenizer.decode(ids, skip_special_tokens=True).strip()
        assert decoded.lower() == expected.lower()
        assert ids[-1] == tokenizer.pad_token_id  # padded at the end, as trained
    vectors = encoder.encode_texts(MULTILINGUAL)
    assert np.isfinite(vectors).all()
    assert len({v.tobytes() for v in vectors}) == len(MULTILINGUAL)


def test_unknown_model_type_is_refused_with_the_supported_families(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"'bert' model.*CLIP, SigLIP, SigLIP 2"):
        load_encoder(str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"neither config\.json"):
        detect_family(str(tmp_path / "missing"))


# ------------------------------------------------------------------ CLI


def test_cli_builds_ingests_and_searches_with_any_family(tmp_path, capsys, demo_catalog_path):
    """`model random --family`, then ingest and a Japanese query through `--model DIR`."""
    import json

    from clipsearch.cli import main

    model = tmp_path / "siglip2"
    assert main(["model", "random", str(model), "--family", "siglip2"]) == 0
    assert "wrote random-weight siglip2 (tiny)" in capsys.readouterr().out
    base = ["--data-dir", str(tmp_path / "data"), "--model", str(model)]
    assert main([*base, "ingest", str(demo_catalog_path), "--no-progress"]) == 0
    capsys.readouterr()
    assert main([*base, "search", "赤い靴", "--k", "3", "--json"]) == 0
    response = json.loads(capsys.readouterr().out)
    assert response["model"] == model.name and len(response["results"]) == 3
    assert main(["model", "random", str(tmp_path / "x"), "--family", "siglip",
                 "--preset", "vit-b-32"]) == 2
    assert "unknown siglip preset 'vit-b-32'" in capsys.readouterr().err


# ------------------------------------------------------------------ SageMaker


def test_packaged_handler_serves_the_family_as_the_local_encoder(family_model, tmp_path):
    """The real packager and handler (in the emulator) give the local encoder's vectors,
    and the artifact records the family, dimension and the family's own template."""
    import base64
    import json

    from clipsearch.sagemaker.emulator import ModelHandler
    from clipsearch.sagemaker.package import build_artifact, describe_artifact

    family, directory, _, encoder = family_model
    artifact = build_artifact(directory, tmp_path / "model.tar.gz")
    meta = describe_artifact(artifact.path)
    assert (artifact.family, artifact.dimension) == (family, encoder.dimension)
    assert (meta["family"], meta["dimension"]) == (family, encoder.dimension)
    assert meta["prompt_template"] == encoder.prompt_template
    handler = ModelHandler.from_artifact(artifact.path)
    try:
        images = _images()
        body = json.dumps({"texts": TEXTS + MULTILINGUAL,
                           "images": [base64.b64encode(i).decode() for i in images]})
        result = handler.invoke(body.encode(), "application/json", None)
        assert result.ok, result.body[:300]
        answer = json.loads(result.body)
        assert answer["dimension"] == encoder.dimension
        np.testing.assert_allclose(answer["text_embeddings"],
                                   encoder.encode_texts(TEXTS + MULTILINGUAL), atol=ATOL)
        np.testing.assert_allclose(answer["image_embeddings"], encoder.encode_images(images),
                                   atol=ATOL)
    finally:
        handler.close()
