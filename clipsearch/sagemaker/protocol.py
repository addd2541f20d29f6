"""The wire protocol between the SageMaker CLIP handler and its callers.

Three parties speak it: the handler in the model artifact
(`model/code/inference.py`), the local endpoint emulator, and
`SageMakerEncoder`. Keeping content types, limits and the error encoding in one
stdlib-only module means the Lambda bundle (no torch) and the container agree
byte for byte.

How errors travel. The Hugging Face inference toolkit catches *every*
exception raised by `input_fn`/`predict_fn`/`output_fn` and answers
`PredictionException(str(exc), 400)`; the model server (MMS) renders that as
`{"code": 400, "type": "InternalServerException", "message": str(exc)}` and
the SageMaker runtime wraps it in a `ModelError` (HTTP 424) whose
`OriginalStatusCode` is 400 and `OriginalMessage` is that body. The handler
cannot choose the status, so it chooses the *message*: client errors are
raised with `str(exc)` set to a small JSON document tagged with
`ERROR_MARKER`. Callers recognise the tag and rebuild the typed clipsearch
error (validation, invalid image, payload too large). A 400 without the tag
is not the caller's fault but an unexpected failure inside the model code.
"""

from __future__ import annotations

import json
import re
from typing import Any

from clipsearch.errors import (
    ClipsearchError,
    InvalidImageError,
    PayloadTooLargeError,
    ValidationError,
)

JSON = "application/json"
JSONLINES = "application/jsonlines"
# Accepted spellings of JSON Lines; SageMaker's own algorithms use the first.
JSONLINES_TYPES = frozenset({JSONLINES, "application/x-jsonlines", "application/jsonl"})
X_IMAGE = "application/x-image"
IMAGE_TYPES = frozenset({X_IMAGE, "image/x-image", "image/jpeg", "image/png", "image/webp"})
ANY = "*/*"
# The HF toolkit decodes exactly these content types to `str` before input_fn.
UTF8_TYPES = frozenset({JSON, "text/csv"})

# AWS documents "4 MB" for serverless request and response payloads without
# saying MiB; clients pack below the decimal reading so either reading holds.
SERVERLESS_MAX_PAYLOAD = 4_000_000
# Default cap on records per request: keeps the response (about 6 KB of JSON
# per 512-d vector) under the serverless 4 MB response limit with headroom.
DEFAULT_MAX_ITEMS_PER_REQUEST = 256
# Decimal places kept per embedding component when the handler has no orjson
# (which writes float32 exactly): a 5e-8 absolute error, far below float32
# CLIP noise, for responses half the size of full float64 reprs.
EMBEDDING_DECIMALS = 7

ERROR_MARKER = "clipsearch_error"
# The model server escapes HTML-sensitive characters the way Gson does.
_GSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "=": "\\u003d", "'": "\\u0027"}
_WRAPPED_MESSAGE = re.compile(
    r"from (?:primary|model|container \S+) with message \"(?P<body>.*)\"\.\s*See ", re.DOTALL
)
_ERROR_CLASSES: dict[str, type[ClipsearchError]] = {
    "invalid_image": InvalidImageError,
    "payload_too_large": PayloadTooLargeError,
}


def normalize_content_type(value: str | None) -> str | None:
    """`Image/JPEG; charset=x` -> `image/jpeg`; None or blank stays None."""
    if value is None:
        return None
    value = value.split(";", 1)[0].strip().lower()
    return value or None


def encode_client_error(error: ClipsearchError) -> str:
    """The `str()` a handler exception must have for callers to rebuild `error`."""
    return json.dumps(
        {
            ERROR_MARKER: True,
            "status": error.status,
            "error": error.code,
            "message": error.message,
            "field": error.field,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode_client_error(text: str | None) -> ClipsearchError | None:
    """Rebuild the typed error from any layer of wrapping, or None if untagged.

    `text` may be the handler's own message, the model server's JSON body, or
    the runtime's `ModelError` message that quotes that body verbatim.
    """
    for candidate in _unwrap(text or ""):
        try:
            doc = json.loads(candidate)
        except (TypeError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get(ERROR_MARKER) is True:
            code = str(doc.get("error") or "invalid_request")
            message = str(doc.get("message") or "invalid request")
            field = doc.get("field") if isinstance(doc.get("field"), str) else None
            status = doc.get("status")
            cls = _ERROR_CLASSES.get(code)
            if cls is None:
                cls = PayloadTooLargeError if status == 413 else ValidationError
            return cls(message, field=field, code=code)
    return None


def error_from_body(body: dict[str, Any], field: str | None = None) -> ClipsearchError:
    """A JSON Lines record's `{"error", "message", "field"}` back to its typed error."""
    code = str(body.get("error") or "invalid_request")
    cls = _ERROR_CLASSES.get(code, ValidationError)
    return cls(str(body.get("message") or "invalid record"), field=field or body.get("field"),
               code=code)


def _unwrap(text: str) -> list[str]:
    """Candidate JSON documents, outermost first, down to the handler's message."""
    found = [text]
    match = _WRAPPED_MESSAGE.search(text)
    if match:
        found.append(match.group("body"))
    for candidate in list(found):
        try:
            doc = json.loads(candidate)
        except (TypeError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            found.append(doc["message"])
    return found


def model_server_error_body(status: int, message: str) -> bytes:
    """The body MMS (inside the HF container) sends for a handler exception."""
    text = json.dumps(
        {"code": status, "type": "InternalServerException", "message": message}, indent=2
    )
    for char, escaped in _GSON_ESCAPES.items():
        text = text.replace(char, escaped)
    return (text + "\n").encode("utf-8")


def embedding_rows(matrix: Any) -> list[list[float]]:
    """float32 rows to JSON-ready lists rounded to EMBEDDING_DECIMALS places."""
    import numpy as np

    return np.round(np.asarray(matrix, dtype=np.float64), EMBEDDING_DECIMALS).tolist()
