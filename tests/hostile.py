"""Hostile and broken inputs, built in code, shared by the tests of every interface.

Each generator makes a *class* of bad input with a parameter, so the tests
cover more than the one example an adversarial run found (issue #18): images
Pillow may open but not decode, extreme shapes, formats we never decode,
malformed Unicode, deep JSON, non-finite and huge numbers.
"""

from __future__ import annotations

import io
import struct
import zlib


def png(size=(48, 40), color=(200, 10, 10)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def strip_png(width: int, height: int) -> bytes:
    """A valid greyscale PNG written by hand: a 1,000,000x1 strip is ~1 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def dds(fourcc: bytes = b"ZZZZ") -> bytes:
    """A DDS header with an unknown FourCC: Pillow's DDS plugin raises NotImplementedError."""
    pixel_format = struct.pack("<II4s5I", 32, 0x4, fourcc, 0, 0, 0, 0, 0)
    header = struct.pack("<7I", 124, 0x1007, 16, 16, 0, 0, 0) + b"\x00" * 44 + pixel_format
    header += struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    return b"DDS " + header + b"\x00" * 256


def eps() -> bytes:
    """Encapsulated PostScript: Pillow would hand it to Ghostscript."""
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n"
            b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n")


def svg() -> bytes:
    return (b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16">'
            b"<script>alert(1)</script></svg>")


def tiff() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, "TIFF")
    return buffer.getvalue()


def truncated_png() -> bytes:
    data = png((64, 64))
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 3]


def bomb_png(side: int = 10_000) -> bytes:
    """A small PNG whose header declares side x side pixels."""
    return strip_png(side, side)[:200]  # the header is enough to be refused


def oriented_jpeg(orientation: int, size=(40, 20)) -> bytes:
    """Left half red, right half blue, stored sideways with an EXIF Orientation tag."""
    from PIL import Image

    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


# Images every runtime must refuse with invalid_image (or 413), never 500.
UNDECODABLE = {
    "dds-unimplemented": dds,
    "eps": eps,
    "svg": svg,
    "tiff": tiff,
    "truncated-png": truncated_png,
    "truncated-jpeg": truncated_jpeg,
    "strip-20000x1": lambda: strip_png(20_000, 1),
    "strip-1x5000": lambda: strip_png(1, 5_000),
    "bomb-header": bomb_png,
    "text": lambda: b"definitely not an image",
}

# Strings that are not well-formed Unicode once decoded (lone surrogates).
LONE_SURROGATES = ["\ud800", "abc\udfffdef", "\udc80\udc81", "shoe \ud83d"]
JSON_LONE_SURROGATES = ['"\\ud800"', '"x\\udfff"', '"\\ud83d only half"']


def deep_json(depth: int = 100_000, opener: str = "[") -> str:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return '{"a":' * depth + "1" + closer * depth
    return opener * depth + closer * depth


# Numbers json.loads accepts that we must not.
BAD_NUMBERS = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1" * 400,
               str(2**53), str(-(2**63))]
