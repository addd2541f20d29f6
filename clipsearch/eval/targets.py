"""Where evaluation queries go: the in-process service (local index or OpenSearch) or an
HTTP API (`clipsearch serve`, or the deployed API Gateway).

Both take the same POST /search JSON body and answer with the same response,
through the code users hit: the in-process target hands the body to the
shared API router (`clipsearch.api.handle`, which the local server and the
query Lambda also call), the HTTP target sends it over the wire. So a metric
difference between targets is a difference in the backends, never in eval.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.parse
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from clipsearch.errors import ClipsearchError, ServiceUnavailableError, ValidationError
from clipsearch.eval.queries import EvalQuery

# Fields a query itself sets; configuration options may not override them.
QUERY_OWNED_FIELDS = frozenset({"text", "image", "image_s3_key", "product_id", "filters", "k",
                                "offset"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class QueryFailed(Exception):
    """One query could not be answered; the run records it and goes on."""


class Target(Protocol):
    name: str

    def search(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /search with `body`; the response JSON, or QueryFailed."""
        ...

    def image_bytes(self, ref: str) -> bytes | None:
        """A result's `image` field as bytes, for report thumbnails (None if unavailable)."""
        ...

    def close(self) -> None: ...


@lru_cache(maxsize=4096)
def _image_base64(path: str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def request_body(query: EvalQuery, k: int, options: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The POST /search body for one query; `options` (mode, weights, ...) pass through."""
    clash = set(options or {}) & QUERY_OWNED_FIELDS
    if clash:
        raise ValidationError(f"request options may not set {', '.join(sorted(clash))}: the "
                              "query set and --k own them", field="request")
    body: dict[str, Any] = dict(options or {})
    if query.text is not None:
        body["text"] = query.text
    if query.image is not None:
        try:
            body["image"] = _image_base64(query.image)
        except OSError as exc:
            raise QueryFailed(f"cannot read query image {query.image}: {exc.strerror}") from None
    if query.filters:
        body["filters"] = dict(query.filters)
    body["k"] = k
    return body


class ServiceTarget:
    """The in-process SearchService (local index or an OpenSearch node) via the API router."""

    def __init__(self, service: Any, name: str = "local") -> None:
        self.service = service
        self.name = name

    def search(self, body: Mapping[str, Any]) -> dict[str, Any]:
        from clipsearch import api

        response = api.handle(self.service, "POST", "/search", body=json.dumps(body))
        if response.status != 200:
            raise QueryFailed(_error_text(response.status, response.body))
        return response.body

    def image_bytes(self, ref: str) -> bytes | None:
        if not ref or "://" in ref:
            return None
        try:
            return Path(ref).read_bytes()
        except OSError:
            return None

    def close(self) -> None:
        close = getattr(self.service.index, "close", None)
        if callable(close):
            close()


class ApiTarget:
    """An HTTP API: one keep-alive connection, retries with backoff on 429/5xx and resets."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 60,
                 attempts: int = 4, name: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url.rstrip("/"))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValidationError(f"--api must be an http(s) URL, got {url!r}", field="api")
        self.url = url.rstrip("/")
        self.name = name or self.url
        self._parsed = parsed
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["x-api-key"] = api_key
        self.timeout = timeout
        self.attempts = attempts
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = (http.client.HTTPSConnection if self._parsed.scheme == "https"
                   else http.client.HTTPConnection)
            self._conn = cls(self._parsed.netloc, timeout=self.timeout)
        return self._conn

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        last = ""
        for attempt in range(self.attempts):
            try:
                conn = self._connection()
                conn.request(method, self._parsed.path + path, body=body,
                             headers=self._headers)
                response = conn.getresponse()
                data = response.read()
                if response.status not in RETRY_STATUSES:
                    return response.status, data
                last = f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                self.close()  # a broken keep-alive connection is not reused
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.attempts - 1:
                time.sleep(0.25 * 2**attempt)
        raise ServiceUnavailableError(f"{self.url}{path}: gave up after {self.attempts} "
                                      f"attempts ({last})")

    def search(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            status, data = self._request("POST", "/search", json.dumps(body).encode("utf-8"))
        except ServiceUnavailableError as exc:
            raise QueryFailed(exc.message) from None
        try:
            payload = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = {"message": data[:200].decode("utf-8", "replace")}
        if status != 200:
            raise QueryFailed(_error_text(status, payload))
        if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
            raise QueryFailed(f"{self.url}/search answered 200 without a results list")
        return payload

    def image_bytes(self, ref: str) -> bytes | None:
        if not ref:
            return None
        if ref.startswith("/"):
            try:
                status, data = self._request("GET", ref, None)
            except ClipsearchError:
                return None
            return data if status == 200 else None
        return None  # absolute URLs (CDN, presigned S3) are linked, not fetched

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _error_text(status: int, payload: Any) -> str:
    if isinstance(payload, Mapping) and payload.get("message"):
        field = f" [{payload['field']}]" if payload.get("field") else ""
        return f"HTTP {status}: {payload['message']}{field}"
    return f"HTTP {status}"
