import numpy as np
import pytest

from clipsearch.encoders import Encoder
from clipsearch.encoders.clip import ClipEncoder
from clipsearch.errors import ConfigurationError, InvalidImageError, ValidationError
from tests.conftest import png_bytes


def test_loads_through_from_pretrained_and_meets_the_protocol(encoder, tiny_clip_dir):
    assert isinstance(encoder, Encoder)
    assert encoder.model_id == str(tiny_clip_dir)
    assert encoder.dimension == 32  # the tiny preset's projection_dim


def test_outputs_are_float32_unit_vectors(encoder):
    texts = encoder.encode_texts(["red shoe", "blue boot", "a lamp"])
    images = encoder.encode_images([png_bytes((255, 0, 0)), png_bytes((0, 0, 255))])
    for matrix, rows in ((texts, 3), (images, 2)):
        assert matrix.dtype == np.float32
        assert matrix.shape == (rows, encoder.dimension)
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


def test_prompt_template_is_applied_to_text_queries(encoder):
    templated = encoder.encode_texts(["red shoe"])
    explicit = encoder.encode_texts(["a photo of red shoe"], apply_template=False)
    bare = encoder.encode_texts(["red shoe"], apply_template=False)
    np.testing.assert_allclose(templated, explicit, atol=1e-6)
    assert not np.allclose(templated, bare, atol=1e-3)


def test_batching_does_not_change_results(tiny_clip_dir):
    images = [png_bytes((i * 20, 255 - i * 20, 100)) for i in range(10)]
    one = ClipEncoder(str(tiny_clip_dir), batch_size=1).encode_images(images)
    many = ClipEncoder(str(tiny_clip_dir), batch_size=32).encode_images(images)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_same_image_same_vector_different_images_differ(encoder):
    a1, a2, b = encoder.encode_images([png_bytes((255, 0, 0)), png_bytes((255, 0, 0)),
                                       png_bytes((0, 255, 0))])
    assert float(a1 @ a2) > 0.9999
    assert float(a1 @ b) < 0.99


def test_non_image_bytes_and_empty_text_are_clear_errors(encoder):
    with pytest.raises(InvalidImageError, match="not a readable image"):
        encoder.encode_images([b"definitely not an image"])
    with pytest.raises(ValidationError, match="non-empty"):
        encoder.encode_texts(["  "])


def test_overlong_text_is_truncated_to_the_context_window(encoder):
    vector = encoder.encode_texts(["red " * 500])
    assert vector.shape == (1, encoder.dimension)


def test_missing_model_directory_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="could not load CLIP model"):
        ClipEncoder(str(tmp_path / "missing-model"))
