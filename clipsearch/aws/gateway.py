"""API Gateway REST proxy events in, proxy responses out, `clipsearch.api.handle` between.

Why this is all the query Lambda does with a request: the local server
adapts its ASGI request to the same `api.handle`, so routing, validation,
status codes and the JSON bytes are decided in one place for both runtimes.
What is specific to API Gateway lives here and nowhere else:

- the path: rebuilt from the matched `resource` template and the decoded
  `pathParameters` (so a custom-domain base path such as `/shop/search` still
  routes as `/search`), or `path` when there is no template;
- the body: `isBase64Encoded` bodies are decoded; any body is cut off just past
  `config.MAX_REQUEST_BYTES`, which `api.handle` answers with 413, so an
  oversized request is never decoded or parsed in full (a missing
  Content-Length is filled in with the full size, so the 413 reads the same);
- CORS: proxy integrations must return their own CORS headers (the gateway's
  CORS settings only answer preflight requests), from the stack's origin list;
- the response: the same JSON bytes the local server sends, as a string body.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clipsearch import config
from clipsearch.api import ROUTES, ApiResponse
from clipsearch.errors import ValidationError

KNOWN_ROUTES = frozenset(template for template, _ in ROUTES)


@dataclass(frozen=True)
class GatewayRequest:
    method: str
    path: str
    route: str  # the route template, bounded cardinality: safe as a metric dimension
    query: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str | None:
        return self.headers.get("origin")


def request_from_event(event: Mapping[str, Any]) -> GatewayRequest:
    """Parse a REST API (v1) proxy event; ValidationError when the body cannot be decoded."""
    method = str(event.get("httpMethod") or "GET").upper()
    path = _path(event)
    resource = str(event.get("resource") or "")
    route = resource if resource in KNOWN_ROUTES else "other"
    query = {str(k): "" if v is None else str(v)
             for k, v in (event.get("queryStringParameters") or {}).items()}
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()
               if v is not None}
    body = _body(event)
    if body is not None and "content-length" not in headers:
        # The full size, as an HTTP client declares it, so an oversized body gets
        # the same 413 message on both runtimes although only a prefix is passed on.
        headers["content-length"] = str(_full_size(event))
    return GatewayRequest(method, path, route, query, body, headers)


def _full_size(event: Mapping[str, Any]) -> int:
    body = event.get("body")
    text = body if isinstance(body, str) else str(body)
    if event.get("isBase64Encoded"):
        return len(text) * 3 // 4 - (text[-2:].count("=") if text else 0)
    return len(text.encode("utf-8", "surrogatepass"))


def _path(event: Mapping[str, Any]) -> str:
    resource = event.get("resource")
    params = event.get("pathParameters") or {}
    if isinstance(resource, str) and resource.startswith("/") and "+}" not in resource:
        path = resource
        for name, value in params.items():
            path = path.replace("{" + str(name) + "}", str(value))
        if "{" not in path:
            return path
    raw = event.get("path")
    return raw if isinstance(raw, str) and raw.startswith("/") else "/"


def _body(event: Mapping[str, Any]) -> bytes | None:
    body = event.get("body")
    if body is None:
        return None
    limit = config.MAX_REQUEST_BYTES + 1
    if event.get("isBase64Encoded"):
        text = body if isinstance(body, str) else str(body)
        # Only decode what can matter: 4 base64 characters per 3 bytes.
        chars = -(-limit // 3) * 4
        try:
            data = base64.b64decode(text[:chars], validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("the request body is marked base64 but is not valid base64",
                                  field="body") from None
        return data[:limit]
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    return data[:limit]


@dataclass(frozen=True)
class CorsPolicy:
    """Which origins get CORS headers: none, any (`*`), or a list echoed back."""

    origins: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str | None) -> CorsPolicy:
        """From the comma-separated CLIPSEARCH_CORS_ALLOW_ORIGINS value."""
        return cls(tuple(o.strip() for o in (value or "").split(",") if o.strip()))

    def headers(self, origin: str | None) -> dict[str, str]:
        if not self.origins:
            return {}
        # Browsers may read Retry-After (the 503 back-off) only when it is exposed.
        common = {"Access-Control-Expose-Headers": "Retry-After"}
        if "*" in self.origins:
            return {"Access-Control-Allow-Origin": "*", **common}
        if origin is not None and origin in self.origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin", **common}
        return {"Vary": "Origin"}


def proxy_response(response: ApiResponse, *, cors: CorsPolicy | None = None,
                   origin: str | None = None) -> dict[str, Any]:
    """The Lambda proxy integration response for an `ApiResponse`."""
    headers = {**response.headers, **(cors.headers(origin) if cors else {})}
    headers.setdefault("Content-Type", "application/json")
    headers["X-Content-Type-Options"] = "nosniff"
    return {
        "statusCode": response.status,
        "headers": headers,
        "body": response.json_bytes().decode("utf-8"),
        "isBase64Encoded": False,
    }
