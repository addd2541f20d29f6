"""Shared fixtures: a tiny random-weight CLIP saved to disk and the demo catalog.

The CLIP fixture goes through the real `from_pretrained` path on a directory
written by `save_pretrained`, exactly as a downloaded model would.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from clipsearch.catalog import read_catalog
from clipsearch.demo import write_demo_catalog
from clipsearch.random_clip import build_random_clip


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return build_random_clip(tmp_path_factory.mktemp("tiny-clip"), preset="tiny")


@pytest.fixture(scope="session")
def encoder(tiny_clip_dir):
    from clipsearch.encoders.clip import ClipEncoder

    return ClipEncoder(str(tiny_clip_dir), batch_size=8)


@pytest.fixture(scope="session")
def demo_catalog_path(tmp_path_factory) -> Path:
    return write_demo_catalog(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def demo_products(demo_catalog_path):
    result = read_catalog(demo_catalog_path)
    assert not result.errors
    return result.products


def png_bytes(color=(200, 10, 10), size=(48, 40)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()
