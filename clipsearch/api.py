"""The HTTP API as one framework-neutral function: `handle(...) -> ApiResponse`.

Why a router of our own instead of FastAPI routes: the same API runs behind
two very different front doors, the local server (ASGI) and the query Lambda
(API Gateway proxy events). Both adapt their request to `handle()` and write
out the `ApiResponse` it returns, so routing, validation, status codes, error
bodies and the JSON bytes themselves are decided here once. Parity between
the runtimes is then a property of the code, not of two test suites.

Nothing in this module may import an HTTP framework.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clipsearch import config
from clipsearch.catalog import validate_product_id
from clipsearch.contract import (
    ImageUrl,
    decode_json_body,
    internal_error_body,
    parse_search_body,
    parse_search_query,
    parse_similar_query,
)
from clipsearch.errors import (
    ClipsearchError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    ValidationError,
)
from clipsearch.strict import scrub

if TYPE_CHECKING:
    from clipsearch.service import SearchService

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"

# How many products /facets looks at when the index cannot aggregate by
# itself, and how many values it lists per keyword field. Enough for any
# catalog a filter list can usefully show; bounded so the call stays cheap.
FACET_SAMPLE = 5000
FACET_MAX_VALUES = 50

@dataclass(frozen=True)
class ApiResponse:
    """What every runtime writes back: a status, headers and a JSON object."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def json_bytes(self) -> bytes:
        """The one serialisation both runtimes use, so the bytes match too.

        `handle` calls it inside its error handling, so a body that cannot be
        serialised becomes a 500 there; the bytes are kept for the runtime.
        """
        cached = self.__dict__.get("_bytes")
        if cached is None:
            cached = _dumps(self.body)
            object.__setattr__(self, "_bytes", cached)
        return cached


def _dumps(body: dict[str, Any]) -> bytes:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate quoted from the request
        return json.dumps(scrub(body), ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8")


class MethodNotAllowedError(ClipsearchError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class RouteNotFoundError(ClipsearchError):
    status = 404
    code = "not_found"


def handle(
    service: SearchService,
    method: str,
    path: str,
    query: Mapping[str, str] | None = None,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    image_url: ImageUrl | None = None,
) -> ApiResponse:
    """Answer one API request; never raises.

    `path` is the decoded URL path without the query string, `query` the
    decoded query parameters (last value wins for repeats, as API Gateway's
    `queryStringParameters` does), `body` the raw request body, which a
    runtime may cut off after `config.MAX_REQUEST_BYTES + 1` bytes (it is then
    answered with 413). `image_url` turns a product into the URL a browser can
    load: each runtime links images its own way.
    """
    try:
        route, params = _match(method.upper(), path)
        body_dict = route(service, params, query or {}, body, _lower_keys(headers), image_url)
        response = ApiResponse(200, body_dict, {"Content-Type": JSON_CONTENT_TYPE})
        response.json_bytes()  # serialised here, where a failure is still a clean 500
        return response
    except MethodNotAllowedError as exc:
        return _error(exc, {"Allow": ", ".join(exc.allowed)})
    except ServiceUnavailableError as exc:
        log.warning("%s %s: %s", method, scrub(path[:200]), scrub(exc.message))
        return _error(exc, {"Retry-After": str(max(1, int(exc.retry_after)))})
    except ClipsearchError as exc:
        if exc.status >= 500:
            # The details stay here: the client gets the class's public text.
            log.error("%s %s failed: %s: %s", method, scrub(path[:200]),
                      type(exc).__name__, scrub(exc.message))
        return _error(exc)
    except Exception:
        # A bug. The log gets the traceback; the client gets nothing it could use.
        log.exception("unhandled error in %s %s", method, scrub(path[:200]))
        return internal_error_response()


def internal_error_response() -> ApiResponse:
    """The opaque 500, for bugs and for anything that cannot be serialised."""
    return ApiResponse(500, internal_error_body(), {"Content-Type": JSON_CONTENT_TYPE})


def _error(exc: ClipsearchError, extra: Mapping[str, str] | None = None) -> ApiResponse:
    headers = {"Content-Type": JSON_CONTENT_TYPE, **(extra or {})}
    response = ApiResponse(exc.status, exc.to_body(), headers)
    try:
        response.json_bytes()
    except Exception:
        log.exception("error body for %s cannot be serialised", type(exc).__name__)
        return internal_error_response()
    return response


def _lower_keys(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers or {}).items()}


# ----------------------------------------------------------------------------- routing

Handler = Callable[..., dict[str, Any]]


def _match(method: str, path: str) -> tuple[Handler, dict[str, str]]:
    """Find the handler for a path; 404 for unknown paths, 405 for wrong methods."""
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    parts = path.split("/")[1:] if path.startswith("/") else None
    template: str | None = None
    params: dict[str, str] = {}
    if parts == ["search"]:
        template = "/search"
    elif parts == ["facets"]:
        template = "/facets"
    elif parts == ["health"]:
        template = "/health"
    elif parts and parts[0] == "products" and len(parts) in (2, 3) and parts[1]:
        if len(parts) == 2:
            template = "/products/{id}"
        elif parts[2] == "similar":
            template = "/products/{id}/similar"
        params["id"] = parts[1]
    if template is None:
        raise RouteNotFoundError(
            f"no route for {path[:200]!r}; see /openapi.json for the API"
        )
    handlers = _HANDLERS[template]
    handler = handlers.get(method)
    if handler is None:
        allowed = tuple(sorted(handlers))
        raise MethodNotAllowedError(
            f"{method} is not allowed on {template}; use {' or '.join(allowed)}",
            allowed=allowed,
        )
    return handler, params


def _no_params(query: Mapping[str, str]) -> None:
    if query:
        name = sorted(query)[0]
        raise ValidationError(f"unknown query parameter {name!r}; this route takes none",
                              field=name)


def _post_search(service, params, query, body, headers, image_url) -> dict[str, Any]:
    _no_params(query)
    length = headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > config.MAX_REQUEST_BYTES:
        # Refuse on the declared size, before reading or parsing anything.
        raise PayloadTooLargeError(
            f"request body is {int(length):,} bytes; the limit is "
            f"{config.MAX_REQUEST_BYTES:,}",
            field="body",
        )
    request = parse_search_body(decode_json_body(body))
    return service.search(request, image_url)


def _get_search(service, params, query, body, headers, image_url) -> dict[str, Any]:
    return service.search(parse_search_query(query), image_url)


def _get_product(service, params, query, body, headers, image_url) -> dict[str, Any]:
    _no_params(query)
    return service.product(validate_product_id(params["id"], "id"), image_url)


def _get_similar(service, params, query, body, headers, image_url) -> dict[str, Any]:
    request = parse_similar_query(params["id"], query)
    try:
        return service.search(request, image_url)
    except NotFoundError as exc:
        if exc.field == "product_id":  # the id came from the path, as in /products/{id}
            exc.field = "id"
        raise


def _get_health(service, params, query, body, headers, image_url) -> dict[str, Any]:
    _no_params(query)
    return service.health()


def _get_facets(service, params, query, body, headers, image_url) -> dict[str, Any]:
    _no_params(query)
    return facets(service)


_HANDLERS: dict[str, dict[str, Handler]] = {
    "/search": {"GET": _get_search, "POST": _post_search},
    "/products/{id}": {"GET": _get_product},
    "/products/{id}/similar": {"GET": _get_similar},
    "/facets": {"GET": _get_facets},
    "/health": {"GET": _get_health},
}

# (route template, methods): the OpenAPI document and the tests check against this.
ROUTES: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (template, tuple(sorted(methods))) for template, methods in _HANDLERS.items()
)


# ----------------------------------------------------------------------------- facets


def facets(service: SearchService) -> dict[str, Any]:
    """The filterable fields and what they hold, so a UI can offer real choices.

    An index that can aggregate by itself (OpenSearch terms/stats
    aggregations) may provide `facets(max_values)` returning the same shape.
    Otherwise the values are read from up to FACET_SAMPLE products fetched
    through the ordinary `knn` call, which every `VectorIndex` has; `complete`
    says whether that covered the whole catalog.
    """
    index = service.index
    native = getattr(index, "facets", None)
    if callable(native):
        return native(FACET_MAX_VALUES)
    fields = dict(index.fields())
    total = index.count()
    products = []
    if fields and total:
        dim = service.encoder.dimension
        probe = [1.0 / math.sqrt(dim)] * dim  # any unit vector: only the set matters
        import numpy as np

        hits = index.knn(np.asarray(probe, dtype=np.float32), min(total, FACET_SAMPLE))
        products = [hit.product for hit in hits]
    out: dict[str, Any] = {}
    for name in sorted(fields):
        ftype = fields[name]
        values = [p.attributes.get(name) for p in products]
        values = [v for v in values if v is not None]
        if ftype == "number":
            numbers = [float(v) for v in values
                       if isinstance(v, int | float) and not isinstance(v, bool)]
            out[name] = {"type": "number",
                         "min": min(numbers) if numbers else None,
                         "max": max(numbers) if numbers else None}
            continue
        counts: dict[Any, int] = {}
        for v in values:
            key = (v if isinstance(v, bool) else str(v)) if ftype == "boolean" else str(v)
            counts[key] = counts.get(key, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        out[name] = {
            "type": ftype,
            "values": [{"value": v, "count": c} for v, c in ranked[:FACET_MAX_VALUES]],
            "truncated": len(ranked) > FACET_MAX_VALUES,
        }
    return {"fields": out, "products": total, "complete": len(products) >= total}
