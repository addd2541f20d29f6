"""Image decoding with errors a user can act on: the one decoder every runtime uses.

Every runtime receives images as untrusted bytes (uploads, base64 in JSON,
S3 objects, catalog files). Decoding them in one place means one set of
limits and one set of messages: "not an image" is a 400, never a PIL
traceback. Why each rule:

- Only the raster formats in `ACCEPTED_FORMATS` are tried. Pillow otherwise
  probes ~40 formats, some with little-used decoders that fail in ways no one
  catches (a crafted DDS raises NotImplementedError) and one (EPS) that hands
  the bytes to Ghostscript.
- Any exception the decoder raises, whatever its class, is the image's fault
  and becomes `InvalidImageError` (`invalid_image`). A decoder bug must fail
  one image, never a request, a batch or an ingest.
- Pixels are bounded before decoding (`MAX_PIXELS`, from the header) and the
  aspect ratio is bounded too (`MAX_ASPECT_RATIO`): CLIP resizes the
  *shortest* edge to ~224 px, so a 20000x1 strip would become 4.5 million x
  224 pixels after resizing although its area passes any limit. Bounding the
  ratio bounds the post-resize size: at most 224 x 224*MAX_ASPECT_RATIO.
- EXIF orientation is applied, so a phone photo is embedded upright, as
  every image viewer shows it.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from typing import TYPE_CHECKING

from clipsearch import config
from clipsearch.errors import InvalidImageError, PayloadTooLargeError, ValidationError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# Decompression bombs: a 3 MB PNG can expand to gigabytes of pixels.
MAX_PIXELS = 40_000_000
# Longest edge / shortest edge. Panoramas reach ~10:1; 20:1 keeps the resized
# image at most 224 x 4480 (3 MB of RGB) for CLIP's 224-px shortest edge.
MAX_ASPECT_RATIO = 20
# Pillow format names, and only these plugins are ever asked to open bytes.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
ACCEPTED_LABEL = "JPEG, PNG, WebP, GIF or BMP"


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
        # Non-ASCII characters (a lone surrogate included) raise ValueError here.
        reason = str(exc) if isinstance(exc, binascii.Error) else "it holds non-ASCII characters"
        raise ValidationError(f"image is not valid base64: {reason}", field=field) from None
    if not raw:
        raise ValidationError("image is empty", field=field)
    return raw


def check_dimensions(width: int, height: int, field: str = "image") -> None:
    """The pixel bounds every image obeys, decoded here or handed over as a PIL image."""
    if width < 1 or height < 1:
        raise InvalidImageError(f"image is {width}x{height} pixels; it has no pixels",
                                field=field)
    if width * height > MAX_PIXELS:
        raise InvalidImageError(
            f"image is {width}x{height} pixels; the limit is {MAX_PIXELS:,}", field=field
        )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise InvalidImageError(
            f"image is {width}x{height} pixels, an aspect ratio of {ratio:.0f}:1; "
            f"the limit is {MAX_ASPECT_RATIO}:1", field=field
        )


def check_image(image: Image.Image, field: str = "image") -> Image.Image:
    """Apply the same bounds to a PIL image a caller decoded itself."""
    check_dimensions(*image.size, field=field)
    return image


def load_image(data: bytes, field: str = "image", *, draft: int | None = None) -> Image.Image:
    """Decode bytes into an upright RGB PIL image or raise InvalidImageError.

    `draft` (pixels) lets libjpeg decode a JPEG at a reduced scale no smaller
    than draft x draft: faster, slightly different pixels, so callers opt in.
    """
    from PIL import Image, ImageOps

    if not data:
        raise InvalidImageError("image is empty", field=field)
    if len(data) > config.MAX_IMAGE_BYTES:
        raise PayloadTooLargeError(
            f"image is larger than {config.MAX_IMAGE_BYTES // (1024 * 1024)} MiB", field=field
        )
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as img:
            check_dimensions(*img.size, field=field)
            if draft and img.format == "JPEG":
                img.draft("RGB", (draft, draft))
            img.load()
            upright = ImageOps.exif_transpose(img) or img
            rgb = upright.convert("RGB")
        check_dimensions(*rgb.size, field=field)
        return rgb
    except InvalidImageError:
        raise
    except Image.UnidentifiedImageError:
        # PIL's own message quotes the BytesIO repr (a memory address): useless to a
        # client, and it would make identical requests answer differently.
        raise InvalidImageError(
            f"bytes are not a readable image; send {ACCEPTED_LABEL}", field=field
        ) from None
    except Image.DecompressionBombError:
        raise InvalidImageError(
            f"image is too large to decode; the limit is {MAX_PIXELS:,} pixels", field=field
        ) from None
    except Exception as exc:  # every decoder failure is the image's fault
        # Truncated data, corrupt chunks, a decoder's NotImplementedError or
        # MemoryError: the file is not an image we can use. The class goes to
        # the log (it may reveal a decoder bug); the client gets the verdict.
        log.info("image decoding failed: %s: %s", type(exc).__name__, exc)
        raise InvalidImageError(
            f"bytes are not a readable image (corrupt or truncated); send {ACCEPTED_LABEL}",
            field=field,
        ) from None
