"""The HTTP API contract: request validation and response shapes.

The local server and the query Lambda both call these functions, so the two
runtimes cannot drift apart: the same request gives the same JSON, the same
status and the same error body `{"error", "message", "field"}`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clipsearch import config, strict
from clipsearch.catalog import Product, validate_product_id
from clipsearch.errors import ClipsearchError, PayloadTooLargeError, ValidationError
from clipsearch.filters import Filters, parse_filters
from clipsearch.images import decode_base64_image

# (product, n) -> the URL a browser loads the product's image n from (0: the main one).
ImageUrl = Callable[[Product, int], str | None]

SEARCH_FIELDS = frozenset(
    {"text", "image", "image_s3_key", "product_id", "k", "offset", "min_score", "filters",
     "weights", "mode", "explain", "fusion", "lexical_weight"}
)


@dataclass(frozen=True)
class SearchRequest:
    """A validated search. Exactly one kind of query: product_id, or text and/or image."""

    text: str | None = None
    image: bytes | None = None
    image_s3_key: str | None = None
    product_id: str | None = None
    k: int = 10
    offset: int = 0
    min_score: float | None = None
    filters: Filters = ()
    text_weight: float = 0.5
    image_weight: float = 0.5
    mode: str | None = None
    explain: bool = False
    fusion: str = config.DEFAULT_FUSION
    lexical_weight: float = config.DEFAULT_LEXICAL_WEIGHT

    @property
    def has_image(self) -> bool:
        return self.image is not None or self.image_s3_key is not None

    @property
    def effective_mode(self) -> str:
        """The mode asked for, else `hybrid` when there are words to match, else `vector`."""
        if self.mode is not None:
            return self.mode
        return "hybrid" if self.text is not None else "vector"


def parse_int(value: Any, field: str, low: int, high: int, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValidationError(f"{field} must be an integer", field=field)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValidationError(f"{field} must be an integer, got {value!r}",
                                  field=field) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ValidationError(f"{field} must be an integer", field=field)
    if not low <= value <= high:
        raise ValidationError(f"{field} must be between {low} and {high}, got {value}",
                              field=field)
    return value


def parse_k(value: Any) -> int:
    return parse_int(value, "k", config.K_MIN, config.K_MAX, 10)


def parse_offset(value: Any) -> int:
    return parse_int(value, "offset", 0, config.OFFSET_MAX, 0)


def parse_min_score(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not -1.0 <= number <= 1.0:
        raise ValidationError(f"min_score must be a number between -1 and 1, got {value!r}",
                              field="min_score")
    return number


def parse_text(value: Any, field: str = "text") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string", field=field)
    strict.check_text(value, field, field)
    if not value.strip():
        raise ValidationError(f"{field} is empty", field=field)
    if len(value) > config.MAX_TEXT_CHARS:
        raise ValidationError(
            f"{field} is {len(value)} characters; the limit is {config.MAX_TEXT_CHARS}",
            field=field,
        )
    return value.strip()


def parse_weights(raw: Any) -> tuple[float, float]:
    """`{"text": w, "image": w}`: finite, >= 0, not both zero (the API and the CLI)."""
    if raw is None:
        return 0.5, 0.5
    if not isinstance(raw, Mapping) or set(raw) - {"text", "image"}:
        raise ValidationError('weights must be {"text": number, "image": number}',
                              field="weights")
    weights = []
    for key in ("text", "image"):
        value = raw.get(key, 0.5)
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0
        ):
            raise ValidationError(f"weights.{key} must be a number >= 0", field=f"weights.{key}")
        weights.append(float(value))
    if sum(weights) <= 0:
        raise ValidationError("weights must not both be zero", field="weights")
    return weights[0], weights[1]


def parse_mode(value: Any, *, has_text: bool, is_similar: bool = False) -> str | None:
    """A search mode, checked against what the query can do: words need text."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value not in config.SEARCH_MODES:
        raise ValidationError(f"mode must be one of {', '.join(config.SEARCH_MODES)}, "
                              f"got {value!r}", field="mode")
    if value != "vector" and not has_text:
        what = "more like this" if is_similar else "a query without text"
        raise ValidationError(f"mode {value} matches words, but {what} has none; use "
                              "mode vector", field="mode")
    return value


def parse_explain(value: Any) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise ValidationError(f"explain must be true or false, got {value!r}", field="explain")


def parse_fusion(value: Any) -> str:
    if value is None or value == "":
        return config.DEFAULT_FUSION
    if not isinstance(value, str) or value not in config.FUSION_METHODS:
        raise ValidationError(f"fusion must be one of {', '.join(config.FUSION_METHODS)}, "
                              f"got {value!r}", field="fusion")
    return value


def parse_lexical_weight(value: Any) -> float:
    if value is None or value == "":
        return config.DEFAULT_LEXICAL_WEIGHT
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise ValidationError(f"lexical_weight must be a number between 0 and 1, got {value!r}",
                              field="lexical_weight")
    return number


def _hybrid_options(source: Mapping[str, Any], *, has_text: bool,
                    is_similar: bool = False) -> dict[str, Any]:
    """mode, explain, fusion and lexical_weight: the same rules for POST bodies and GET
    parameters."""
    return {
        "mode": parse_mode(source.get("mode"), has_text=has_text, is_similar=is_similar),
        "explain": parse_explain(source.get("explain")),
        "fusion": parse_fusion(source.get("fusion")),
        "lexical_weight": parse_lexical_weight(source.get("lexical_weight")),
    }


def decode_json_body(body: str | bytes | None) -> dict[str, Any]:
    """Parse a request body as a JSON object, with size and syntax errors as 4xx."""
    if body is None or (isinstance(body, str | bytes) and not body.strip()):
        raise ValidationError("request body is empty; send a JSON object", field="body")
    if len(body) > config.MAX_REQUEST_BYTES:
        raise PayloadTooLargeError(
            f"request body is {len(body):,} bytes; the limit is {config.MAX_REQUEST_BYTES:,}",
            field="body",
        )
    try:
        data = strict.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}", field="body") from None
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object", field="body")
    return data


def parse_search_body(data: Mapping[str, Any]) -> SearchRequest:
    """Validate the JSON body of POST /search."""
    unknown = set(data) - SEARCH_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError(
            f"unknown field {name!r}; allowed: {', '.join(sorted(SEARCH_FIELDS))}", field=name
        )
    text = parse_text(data.get("text"))
    image = decode_base64_image(data["image"]) if data.get("image") is not None else None
    s3_key = data.get("image_s3_key")
    if s3_key is not None and (not isinstance(s3_key, str) or not s3_key.strip()
                               or len(s3_key) > 1024):
        raise ValidationError("image_s3_key must be a non-empty string", field="image_s3_key")
    if s3_key is not None:
        strict.check_text(s3_key, "image_s3_key", "image_s3_key")
    if image is not None and s3_key is not None:
        raise ValidationError("send image or image_s3_key, not both", field="image_s3_key")
    product_id = data.get("product_id")
    if product_id is not None:
        product_id = validate_product_id(product_id, "product_id")
        if text is not None or image is not None or s3_key is not None:
            raise ValidationError("product_id cannot be combined with text or image",
                                  field="product_id")
    if text is None and image is None and s3_key is None and product_id is None:
        raise ValidationError("send at least one of text, image, image_s3_key or product_id",
                              field="text")
    text_weight, image_weight = parse_weights(data.get("weights"))
    return SearchRequest(
        text=text,
        image=image,
        image_s3_key=s3_key,
        product_id=product_id,
        k=parse_k(data.get("k")),
        offset=parse_offset(data.get("offset")),
        min_score=parse_min_score(data.get("min_score")),
        filters=parse_filters(data.get("filters")),
        text_weight=text_weight,
        image_weight=image_weight,
        **_hybrid_options(data, has_text=text is not None, is_similar=product_id is not None),
    )


_PAGING_PARAMS = frozenset({"k", "offset", "min_score", "filters", "mode", "explain",
                            "fusion", "lexical_weight"})


def _check_query_params(params: Mapping[str, str | None], allowed: frozenset[str]) -> None:
    """Reject parameters a route does not read, rather than silently ignore them."""
    unknown = set(params) - allowed
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError(f"unknown query parameter {name!r}; allowed: "
                              f"{', '.join(sorted(allowed))}", field=name)


def _query_filters(raw: str | None) -> Filters:
    if not raw:
        return ()
    try:
        return parse_filters(strict.loads(raw))
    except json.JSONDecodeError as exc:
        raise ValidationError(f"filters must be a JSON object: {exc}", field="filters") from None


def parse_search_query(params: Mapping[str, str | None]) -> SearchRequest:
    """Validate GET /search?q=&k=&offset=&min_score=&filters=<json>."""
    _check_query_params(params, _PAGING_PARAMS | {"q"})
    text = parse_text(params.get("q"), field="q")
    if text is None:
        raise ValidationError("query parameter q is required", field="q")
    return SearchRequest(
        text=text,
        k=parse_k(params.get("k")),
        offset=parse_offset(params.get("offset")),
        min_score=parse_min_score(params.get("min_score")),
        filters=_query_filters(params.get("filters")),
        **_hybrid_options(params, has_text=True),
    )


def parse_similar_query(product_id: str, params: Mapping[str, str | None]) -> SearchRequest:
    """GET /products/{id}/similar?k=&offset=&min_score=&filters=: the product is the query,
    so a q here is an error, not something to drop."""
    _check_query_params(params, _PAGING_PARAMS)
    return SearchRequest(
        product_id=validate_product_id(product_id, "id"),
        k=parse_k(params.get("k")),
        offset=parse_offset(params.get("offset")),
        min_score=parse_min_score(params.get("min_score")),
        filters=_query_filters(params.get("filters")),
        **_hybrid_options(params, has_text=False, is_similar=True),
    )


# ----------------------------------------------------------------------------- responses


def product_body(product: Product, image_url: ImageUrl | None = None) -> dict[str, Any]:
    """A product as the API shows it: `image` is the main image, `images` every image
    (main first, positions as `explain`'s image_index counts them)."""
    images = [image_url(product, n) if image_url else ref
              for n, ref in enumerate(product.images)]
    return {
        "id": product.id,
        "title": product.title,
        "image": images[0] if images else None,
        "attributes": dict(product.attributes),
        "images": images,
        "description": product.description,
    }


def search_body(
    results: list[tuple[Product, float]] | list[tuple[Product, float, dict[str, Any] | None]],
    *,
    k: int,
    offset: int,
    took_ms: float,
    model: str,
    image_url: ImageUrl | None = None,
    mode: str = "vector",
) -> dict[str, Any]:
    """The search response. A result may carry a third element, its `explain` object,
    which is added only when the request asked for it."""
    rows = []
    for i, (p, score, *rest) in enumerate(results):
        row = {"rank": offset + i + 1, **_ordered(product_body(p, image_url)),
               "score": round(float(score), 6)}
        if rest and rest[0] is not None:
            row["explain"] = rest[0]
        rows.append(row)
    return {
        "results": rows,
        "k": k,
        "offset": offset,
        "took_ms": round(took_ms, 2),
        "model": model,
        "mode": mode,
    }


def _ordered(body: dict[str, Any]) -> dict[str, Any]:
    """rank, id, title, score, image, attributes, images, description: the documented
    key order."""
    return {"id": body["id"], "title": body["title"], "score": None,
            "image": body["image"], "attributes": body["attributes"],
            "images": body["images"], "description": body["description"]}


def error_body(error: ClipsearchError) -> dict[str, Any]:
    return error.to_body()


def internal_error_body() -> dict[str, Any]:
    """What a bug looks like from outside: no stack trace, no internals."""
    return {"error": "internal_error", "message": "internal server error", "field": None}
