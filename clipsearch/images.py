"""Image decoding with errors a user can act on.

Every runtime receives images as untrusted bytes (uploads, base64 in JSON,
S3 objects). Decoding them in one place means one set of limits and one set
of messages: "not an image" is a 400, never a PIL traceback.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from clipsearch import config
from clipsearch.errors import InvalidImageError, PayloadTooLargeError, ValidationError

if TYPE_CHECKING:
    from PIL import Image

# Decompression bombs: a 3 MB PNG can expand to gigabytes of pixels.
MAX_PIXELS = 40_000_000


def decode_base64_image(data: str, field: str = "image") -> bytes:
    """Strict base64 (optionally a data: URL) to bytes, with the size cap applied."""
    if not isinstance(data, str) or not data:
        raise ValidationError("image must be a non-empty base64 string", field=field)
    if data.startswith("data:"):
        _, _, data = data.partition(",")
    # 4 base64 chars carry 3 bytes; reject before decoding a huge string.
    if len(data) * 3 // 4 > config.MAX_IMAGE_BYTES:
        raise PayloadTooLargeError(
            f"image is larger than {config.MAX_IMAGE_BYTES // (1024 * 1024)} MiB", field=field
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"image is not valid base64: {exc}", field=field) from None
    if not raw:
        raise ValidationError("image is empty", field=field)
    return raw


def load_image(data: bytes, field: str = "image") -> Image.Image:
    """Decode bytes into an RGB PIL image or raise InvalidImageError."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidImageError("image is empty", field=field)
    if len(data) > config.MAX_IMAGE_BYTES:
        raise PayloadTooLargeError(
            f"image is larger than {config.MAX_IMAGE_BYTES // (1024 * 1024)} MiB", field=field
        )
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise InvalidImageError(
                    f"image is {width}x{height} pixels; the limit is {MAX_PIXELS:,}", field=field
                )
            img.load()
            return img.convert("RGB")
    except UnidentifiedImageError:
        # PIL's own message quotes the BytesIO repr (a memory address): useless to a
        # client, and it would make identical requests answer differently.
        raise InvalidImageError(
            "bytes are not a readable image (JPEG, PNG, WebP, GIF, BMP...)", field=field
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(
            f"bytes are not a readable image (JPEG, PNG, WebP, GIF, BMP...): {exc}", field=field
        ) from None
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"image is too large to decode: {exc}", field=field) from None
