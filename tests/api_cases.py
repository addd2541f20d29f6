"""API requests shared by every runtime's contract tests, with the answer each must get.

The local server tests replay these through HTTP and through `api.handle`
directly; the query Lambda tests replay the same list as API Gateway events
against the same demo data. Identical JSON across the runtimes is checked on
exactly these requests, so a request added here is checked everywhere.

Each case: (name, method, path, query, body bytes or None, expected status,
expected error code or None).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, NamedTuple

from clipsearch import config


class Case(NamedTuple):
    name: str
    method: str
    path: str
    query: dict[str, str]
    body: bytes | None
    status: int
    error: str | None


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


def demo_image_b64(demo_products) -> str:
    """A catalog image as base64: searching with it must find that product first."""
    return base64.b64encode(Path(demo_products[7].image).read_bytes()).decode()


def cases(demo_products) -> list[Case]:
    """The requests; they need the demo catalog (ids, an image) to be meaningful."""
    pid = demo_products[3].id
    image = demo_image_b64(demo_products)
    not_image = base64.b64encode(b"this is plain text, not a picture").decode()
    huge = b'{"text": "' + b"a" * config.MAX_REQUEST_BYTES + b'"}'
    return [
        # --- successes
        Case("text POST", "POST", "/search", {}, _json({"text": "red circle", "k": 5}), 200,
             None),
        Case("text GET", "GET", "/search", {"q": "red circle", "k": "5"}, None, 200, None),
        Case("image", "POST", "/search", {}, _json({"image": image, "k": 3}), 200, None),
        Case("text plus image", "POST", "/search", {},
             _json({"text": "striped", "image": image, "k": 4,
                    "weights": {"text": 0.3, "image": 0.7}}), 200, None),
        Case("product id", "POST", "/search", {}, _json({"product_id": pid, "k": 4}), 200, None),
        Case("filters and paging", "POST", "/search", {},
             _json({"text": "poster", "k": 3, "offset": 2,
                    "filters": {"color": ["red", "blue"], "price": {"gte": 10}}}), 200, None),
        Case("GET filters", "GET", "/search",
             {"q": "rug", "filters": json.dumps({"category": "rug"}), "min_score": "-1"},
             None, 200, None),
        Case("product", "GET", f"/products/{pid}", {}, None, 200, None),
        Case("similar", "GET", f"/products/{pid}/similar", {"k": "5"}, None, 200, None),
        Case("facets", "GET", "/facets", {}, None, 200, None),
        Case("health", "GET", "/health", {}, None, 200, None),
        # --- errors
        Case("malformed JSON", "POST", "/search", {}, b'{"text": "red"', 400, "invalid_request"),
        Case("empty body", "POST", "/search", {}, b"", 400, "invalid_request"),
        Case("JSON not an object", "POST", "/search", {}, b"[1, 2]", 400, "invalid_request"),
        Case("non-image bytes", "POST", "/search", {}, _json({"image": not_image}), 400,
             "invalid_image"),
        Case("bad base64", "POST", "/search", {}, _json({"image": "%%%not-base64"}), 400,
             "invalid_request"),
        Case("huge payload", "POST", "/search", {}, huge, 413, "payload_too_large"),
        Case("empty text", "POST", "/search", {}, _json({"text": "   "}), 400,
             "invalid_request"),
        Case("overlong text", "POST", "/search", {},
             _json({"text": "a" * (config.MAX_TEXT_CHARS + 1)}), 400, "invalid_request"),
        Case("k=0", "POST", "/search", {}, _json({"text": "red", "k": 0}), 400,
             "invalid_request"),
        Case("k=1000", "GET", "/search", {"q": "red", "k": "1000"}, None, 400,
             "invalid_request"),
        Case("unknown filter field", "POST", "/search", {},
             _json({"text": "red", "filters": {"colour": "red"}}), 400, "unknown_filter_field"),
        Case("bad filters", "GET", "/search", {"q": "red", "filters": "{not json"}, None, 400,
             "invalid_request"),
        Case("unknown product", "GET", "/products/no-such-product", {}, None, 404, "not_found"),
        Case("unknown product similar", "GET", "/products/no-such-product/similar", {}, None,
             404, "not_found"),
        Case("wrong method", "DELETE", "/search", {}, None, 405, "method_not_allowed"),
        Case("unknown route", "GET", "/nope", {}, None, 404, "not_found"),
    ]


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A response body without the fields that differ run to run (took_ms, cache counters)."""
    return {k: v for k, v in body.items() if k not in ("took_ms", "query_cache")}
