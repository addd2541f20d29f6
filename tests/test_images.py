"""The one image decoder (clipsearch.images): formats, failures, shapes, orientation.

Classes from issue #18: (1) images Pillow opens but cannot decode, (2) extreme
aspect ratios, (13) EXIF orientation. The interface tests (CLI, server,
Lambdas, endpoint handler) reuse tests/hostile.py and assert the same
verdicts end to end.
"""

from __future__ import annotations

import struct

import pytest

from clipsearch.errors import InvalidImageError, PayloadTooLargeError
from clipsearch.images import (
    MAX_ASPECT_RATIO,
    check_image,
    decode_base64_image,
    load_image,
)
from tests import hostile


@pytest.mark.parametrize("name", sorted(hostile.UNDECODABLE))
def test_undecodable_images_are_invalid_image(name):
    with pytest.raises(InvalidImageError) as info:
        load_image(hostile.UNDECODABLE[name](), field="images[3]")
    assert info.value.code == "invalid_image" and info.value.status == 400
    assert info.value.field == "images[3]"
    assert "object at" not in info.value.message  # no object reprs or addresses


@pytest.mark.parametrize("exc", [NotImplementedError("Unimplemented"), RecursionError(),
                                 MemoryError(), struct.error("unpack"), ZeroDivisionError(),
                                 IndexError("x"), KeyError("y"), AssertionError()])
def test_any_decoder_exception_is_invalid_image(monkeypatch, exc):
    """Whatever a decoder raises, it is the image's fault: one class, one verdict."""
    from PIL import ImageFile

    def broken(self, *args, **kwargs):
        raise exc

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken)
    with pytest.raises(InvalidImageError, match="not a readable image"):
        load_image(hostile.png())


def test_only_accepted_formats_are_tried(monkeypatch):
    """EPS is never handed to a plugin (and so never to Ghostscript)."""
    from PIL import EpsImagePlugin

    called = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open",
                        lambda self: called.append(1) or (_ for _ in ()).throw(SyntaxError))
    with pytest.raises(InvalidImageError):
        load_image(hostile.eps())
    assert not called


@pytest.mark.parametrize("size", [(MAX_ASPECT_RATIO * 10 + 1, 10), (10, MAX_ASPECT_RATIO * 10 + 1),
                                  (1_000_000, 1), (2, 4000)])
def test_extreme_aspect_ratios_are_refused_before_decoding(size):
    with pytest.raises(InvalidImageError, match="aspect ratio"):
        load_image(hostile.strip_png(*size))


@pytest.mark.parametrize("size", [(MAX_ASPECT_RATIO * 10, 10), (1, 1), (10, MAX_ASPECT_RATIO * 10)])
def test_aspect_ratios_within_the_limit_decode(size):
    assert load_image(hostile.strip_png(*size)).size == size


def test_pil_images_handed_over_get_the_same_bounds():
    from PIL import Image

    with pytest.raises(InvalidImageError, match="aspect ratio"):
        check_image(Image.new("RGB", (5000, 2)))
    assert check_image(Image.new("RGB", (200, 100))).size == (200, 100)


def test_extreme_strip_does_not_reach_the_encoder(encoder):
    """The PIL path of ClipEncoder refuses a strip before the shortest-edge resize."""
    from PIL import Image

    with pytest.raises(InvalidImageError, match="aspect ratio"):
        encoder.encode_images([Image.new("RGB", (20_000, 1))])
    with pytest.raises(InvalidImageError, match="aspect ratio"):
        encoder.encode_images([hostile.strip_png(20_000, 1)])


def test_pixel_area_limit():
    with pytest.raises(InvalidImageError, match="40,000,000"):
        load_image(hostile.bomb_png(7000))


@pytest.mark.parametrize("orientation,size,top_left,bottom_right", [
    (1, (40, 20), "red", "blue"),
    (3, (40, 20), "blue", "red"),   # rotated 180
    (6, (20, 40), "red", "blue"),   # rotate 90 clockwise to display: left half goes on top
    (8, (20, 40), "blue", "red"),   # rotate 90 counter-clockwise: right half goes on top
    (2, (40, 20), "blue", "red"),   # mirrored
])
def test_exif_orientation_is_applied(orientation, size, top_left, bottom_right):
    image = load_image(hostile.oriented_jpeg(orientation))
    assert image.size == size

    def colour(xy):
        r, _, b = image.getpixel(xy)
        return "red" if r > b else "blue"

    assert colour((1, 1)) == top_left
    assert colour((size[0] - 2, size[1] - 2)) == bottom_right


def test_broken_exif_does_not_fail_the_image():
    """A JPEG whose EXIF block is garbage still decodes (orientation unknown: as stored)."""
    data = hostile.oriented_jpeg(1)
    start = data.index(b"Exif\x00\x00") + 6
    damaged = data[:start] + b"\xff" * 16 + data[start + 16:]
    try:
        image = load_image(damaged)
    except InvalidImageError:
        return  # refusing it is acceptable too; crashing is not
    assert image.size == (40, 20)


def test_draft_decodes_jpeg_at_reduced_scale():
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1600, 1200), (10, 200, 10)).save(buffer, "JPEG")
    full = load_image(buffer.getvalue())
    small = load_image(buffer.getvalue(), draft=224)
    assert full.size == (1600, 1200)
    assert 224 <= min(small.size) < 1200


def test_base64_errors():
    with pytest.raises(PayloadTooLargeError):
        decode_base64_image("A" * (5 * 1024 * 1024))
    for bad in ("not base64!", "\ud800AAA", "é" * 8):
        with pytest.raises(Exception) as info:
            decode_base64_image(bad, field="image")
        assert getattr(info.value, "status", None) == 400
        info.value.to_body()  # serialisable body, whatever the input
