"""ONNX Runtime towers: same vectors as torch, cached export keyed by the model's files, int8."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from clipsearch.encoders import Encoder
from clipsearch.encoders.batching import MicroBatchingEncoder
from clipsearch.encoders.clip import ClipEncoder
from clipsearch.encoders.onnx import (
    OnnxEncoder,
    export_dir,
    export_key,
    onnx_available,
    with_runtime,
)
from clipsearch.encoders.threads import resolve_threads
from clipsearch.errors import ConfigurationError, InvalidImageError
from tests.conftest import png_bytes
from tests.test_batching import TEXTS, concurrently

# fp32 ONNX Runtime and eager torch run the same graph with other kernels:
# unit vectors agree to 1e-5 per component (measured ~2e-7 on the tiny and
# ViT-B/32 models).
TOLERANCE = 1e-5
IMAGES = [png_bytes((i * 35, 220 - i * 30, 60 + i * 20), (64 + 16 * i, 48)) for i in range(6)]


@pytest.fixture(scope="module")
def onnx_encoder(encoder):
    return OnnxEncoder(encoder)


def test_installed_and_the_default_runtime(encoder, onnx_encoder):
    assert onnx_available()  # the `onnx` extra is part of every setup profile
    assert isinstance(with_runtime(encoder), OnnxEncoder)
    assert with_runtime(encoder, "torch") is encoder
    assert isinstance(onnx_encoder, Encoder)
    assert (onnx_encoder.model_id, onnx_encoder.dimension, onnx_encoder.prompt_template) == \
        (encoder.model_id, encoder.dimension, encoder.prompt_template)


def test_vectors_equal_torch_within_tolerance(encoder, onnx_encoder):
    # Different lengths in one batch: padding and the attention mask must match too.
    texts = ["red shoe", "a long description of a blue leather boot with laces", *TEXTS]
    np.testing.assert_allclose(onnx_encoder.encode_texts(texts), encoder.encode_texts(texts),
                               atol=TOLERANCE)
    np.testing.assert_allclose(onnx_encoder.encode_images(IMAGES), encoder.encode_images(IMAGES),
                               atol=TOLERANCE)
    raw = onnx_encoder.encode_texts(["red shoe"], apply_template=False)
    np.testing.assert_allclose(raw, encoder.encode_texts(["red shoe"], apply_template=False),
                               atol=TOLERANCE)


def test_same_errors_as_torch(onnx_encoder):
    with pytest.raises(InvalidImageError):
        onnx_encoder.encode_images([b"not an image"])
    with pytest.raises(ConfigurationError):
        with_runtime(onnx_encoder.source, "torch", quantize="int8")
    with pytest.raises(ConfigurationError, match="runtime must be one of"):
        with_runtime(onnx_encoder.source, "tensorrt")
    assert onnx_encoder.encode_texts([]).shape == (0, onnx_encoder.dimension)


def test_one_thread_per_core_by_default_and_no_spinning(onnx_encoder, encoder, monkeypatch):
    """ONNX Runtime's non-spinning workers take every core; torch keeps one (threads.py)."""
    cores = os.cpu_count() or 1
    options = onnx_encoder.text_session.get_session_options()
    assert options.intra_op_num_threads == cores
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert OnnxEncoder(encoder, threads=1).threads == 1
    assert OnnxEncoder(encoder, threads="3").threads == 3
    assert resolve_threads("auto", "torch") == 1 and resolve_threads(0, "torch") == cores
    for bad in ("many", -1):
        with pytest.raises(ConfigurationError, match="threads must be"):
            resolve_threads(bad, "onnx")


def test_export_is_cached_beside_the_model_and_keyed_by_its_files(encoder, onnx_encoder,
                                                                  tiny_clip_dir, monkeypatch):
    directory = onnx_encoder.directory
    assert directory.parent == tiny_clip_dir / ".clipsearch-onnx"
    assert (directory / "text.onnx").is_file() and (directory / "image.onnx").is_file()

    def no_export(*args):
        raise AssertionError("exported again although the model did not change")

    monkeypatch.setattr("clipsearch.encoders.onnx._export", no_export)
    assert OnnxEncoder(encoder).directory == directory  # loaded, not re-exported

    key = export_key(str(tiny_clip_dir), "ClipEncoder")
    config_file = tiny_clip_dir / "config.json"
    stat = config_file.stat()
    try:
        os.utime(config_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert export_key(str(tiny_clip_dir), "ClipEncoder") != key
        assert export_dir(str(tiny_clip_dir), "ClipEncoder") != directory
    finally:
        os.utime(config_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert export_key(str(tiny_clip_dir), "ClipEncoder") == key
    assert export_key(str(tiny_clip_dir), "OtherFamily") != key


def test_a_model_that_changed_is_exported_anew(tmp_path):
    from clipsearch.random_clip import build_random_clip

    first = OnnxEncoder(ClipEncoder(str(build_random_clip(tmp_path / "m", seed=3))))
    before = first.encode_texts(["red shoe"])
    build_random_clip(tmp_path / "m", seed=4)  # same path, new weights
    source = ClipEncoder(str(tmp_path / "m"))
    second = OnnxEncoder(source)
    assert second.directory != first.directory
    assert not first.directory.exists()  # the stale export's hundreds of MB are freed
    assert [d.name for d in second.directory.parent.iterdir()] == [second.directory.name]
    np.testing.assert_allclose(second.encode_texts(["red shoe"]),
                               source.encode_texts(["red shoe"]), atol=TOLERANCE)
    assert not np.allclose(second.encode_texts(["red shoe"]), before, atol=1e-3)


def test_int8_stays_close_to_fp32_and_is_refused_where_it_does_not(encoder, onnx_encoder,
                                                                   monkeypatch):
    int8 = OnnxEncoder(encoder, quantize="int8")
    record = json.loads((int8.directory / "int8-check.json").read_text())
    assert record["min_cosine"] >= 0.99
    cosines = np.sum(int8.encode_texts(TEXTS) * onnx_encoder.encode_texts(TEXTS), axis=1)
    assert cosines.min() >= 0.99
    assert not np.array_equal(int8.encode_texts(TEXTS), onnx_encoder.encode_texts(TEXTS))
    monkeypatch.setattr("clipsearch.encoders.onnx.INT8_MIN_COSINE", 1.01)
    with pytest.raises(ConfigurationError, match="int8 quantization changes"):
        OnnxEncoder(encoder, quantize="int8")
    with pytest.raises(ConfigurationError, match="quantize must be one of"):
        OnnxEncoder(encoder, quantize="int4")


def test_micro_batching_over_onnx_equals_one_by_one(onnx_encoder):
    batching = MicroBatchingEncoder(onnx_encoder, max_wait_ms=300)
    texts = concurrently(lambda t: batching.encode_texts([t])[0], TEXTS)
    np.testing.assert_allclose(np.stack(texts), onnx_encoder.encode_texts(TEXTS), atol=TOLERANCE)
    images = concurrently(lambda img: batching.encode_images([img])[0], IMAGES)
    np.testing.assert_allclose(np.stack(images), onnx_encoder.encode_images(IMAGES),
                               atol=TOLERANCE)
    assert batching.texts.passes < len(TEXTS) and batching.images.passes < len(IMAGES)
