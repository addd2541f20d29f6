"""The local HTTP server: FastAPI + uvicorn in front of `clipsearch.api.handle`.

Why so thin: every API route is forwarded to the framework-neutral router,
which the query Lambda uses too, so the two runtimes cannot diverge. This
module only adds what is local by nature: the search page, product images
read from disk, and the OpenAPI document.

The service (and so the index behind it) is injected: `create_app` takes any
`SearchService`, whether it sits on the embedded `LocalIndex` or on OpenSearch.

Transport hardening (issue #18), because this server faces browsers and
whatever runs in them:
- a `Host` allow-list (loopback names by default, CLIPSEARCH_ALLOWED_HOSTS or
  `serve --allowed-host`), so a DNS-rebinding page cannot read the local API;
- a deadline for the request head (`TimedH11Protocol`; uvicorn has none) and
  for the body, so a slow or silent client cannot hold a connection forever;
- the declared Content-Length is checked before a byte of the body is read;
- /images/{id} serves the product's catalog file only if it is, at the time
  of the request, a regular file reached without symlinks.
"""

from __future__ import annotations

import functools
import logging
import mimetypes
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import h11
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from clipsearch import api, config
from clipsearch.catalog import Product, validate_product_id
from clipsearch.contract import ImageUrl
from clipsearch.errors import (
    ClipsearchError,
    HostNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
)
from clipsearch.openapi import build_openapi, dumps
from clipsearch.page import PAGE_CSP, WEB_DIR

if TYPE_CHECKING:
    from clipsearch.service import SearchService

log = logging.getLogger(__name__)

# Raster formats only (an SVG served from our origin could run script), from
# a fixed table so the answer does not depend on the machine's mime.types.
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
               ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp",
               ".tif": "image/tiff", ".tiff": "image/tiff", ".avif": "image/avif"}
# Requests that encode a query (the /search routes) run on their own small
# thread pool. Encoding is CPU-bound and serialised by the encoder's lock, so
# more threads than cores only add contention, and that lock is not fair:
# sharing anyio's 40 threads, text plus image queries (two turns at the lock)
# had twice the p50 of the others under 20 clients. Waiting for one of these
# threads is FIFO instead. Cheap routes (products, similar, facets, health,
# images) keep the big default pool, so they never queue behind encodes.
# Measurements: docs/benchmarks.md, "Local server load". With micro-batching
# (clipsearch/encoders/batching.py) these threads only wait on the batcher's
# FIFO queue, and `clipsearch serve` sizes the pool to fill whole batches.
DEFAULT_ENCODE_THREADS = max(2, os.cpu_count() or 1)
ENCODING_PATHS = frozenset({"/search", "/search/"})

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def allowed_hosts_from_env() -> tuple[str, ...]:
    """CLIPSEARCH_ALLOWED_HOSTS (comma-separated; `*` allows any), else loopback names."""
    raw = os.environ.get("CLIPSEARCH_ALLOWED_HOSTS", "")
    names = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    return names or LOOPBACK_HOSTS


def _host_name(value: str) -> str:
    """`Host` header to a bare lower-case name: `[::1]:8000` -> `::1`, `a.b:80` -> `a.b`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostAllowList:
    """ASGI middleware: answer 400 unless the Host header names this server.

    DNS rebinding: a page on evil.example re-points its own name at 127.0.0.1
    and then reads http://evil.example:8000/ as same-origin. The browser still
    sends `Host: evil.example`, so refusing unknown names closes the hole.
    """

    def __init__(self, app: Any, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.any = "*" in allowed
        self.allowed = frozenset(_host_name(h) for h in allowed)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.any:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if _host_name(host) not in self.allowed:
                error = HostNotAllowedError(
                    f"Host {host[:100]!r} is not served here; allowed: "
                    f"{', '.join(sorted(self.allowed))} (CLIPSEARCH_ALLOWED_HOSTS)",
                    field="Host")
                await _error(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head.

    uvicorn times out idle keep-alive connections but not a head that arrives
    slowly: a client sending one header byte every few seconds (slowloris)
    would hold its connection, and a server thread's worth of buffers, forever.
    The deadline runs from the connection (or the previous response) to the
    end of the head; the body has its own deadline in the app.
    """

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(config.HEADER_TIMEOUT_S, self._head_expired)

    def _cancel_head_deadline(self) -> None:
        timer = getattr(self, "_head_deadline", None)
        if timer is not None:
            timer.cancel()
            self._head_deadline = None

    def _head_expired(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection whose request head did not arrive in "
                             "%.0f s", config.HEADER_TIMEOUT_S)
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)


# First path segments the router owns; a static file may not shadow them.
API_PREFIXES = frozenset({"search", "products", "facets", "health", "images", "openapi.json"})


def local_image_url(product: Product, n: int = 0) -> str | None:
    """Catalog files are served by /images/{id} (the main image) and /images/{id}/{n};
    http(s) images are linked as they are.

    s3:// images cannot be shown by a local server, and files that are not
    raster images are never served, so both come back as null rather than as a
    link that would fail.
    """
    image = product.images[n] if 0 <= n < len(product.images) else None
    if not image:
        return None
    if image.startswith(("http://", "https://")):
        return image
    if "://" in image or Path(image).suffix.lower() not in IMAGE_TYPES:
        return None
    path = f"/images/{quote(product.id, safe='')}"
    return path if n == 0 else f"{path}/{n}"


def _api_response(resp: api.ApiResponse) -> Response:
    return Response(content=resp.json_bytes(), status_code=resp.status, headers=resp.headers)


def _error(exc: ClipsearchError) -> Response:
    return _api_response(api.ApiResponse(exc.status, exc.to_body(),
                                         {"Content-Type": api.JSON_CONTENT_TYPE}))


async def _read_body(request: Request) -> bytes:
    """The body, cut off just past the limit: the router answers 413, memory stays bounded.

    Refused before reading when the declared Content-Length is over the limit,
    and cut off with 408 when it does not arrive within BODY_TIMEOUT_S: a client
    that declares 10 MiB and sends nothing gets an answer, not a hung socket.
    """
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > config.MAX_REQUEST_BYTES:
        raise PayloadTooLargeError(
            f"request body is {int(declared):,} bytes; the limit is "
            f"{config.MAX_REQUEST_BYTES:,}", field="body")
    limit = config.MAX_REQUEST_BYTES + 1
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(config.BODY_TIMEOUT_S):
            async for chunk in request.stream():
                chunks.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {config.BODY_TIMEOUT_S:.0f} s",
            field="body") from None
    return b"".join(chunks)[:limit]


def create_app(
    service: SearchService,
    *,
    static_dir: Path | str = WEB_DIR,
    image_url: ImageUrl = local_image_url,
    encode_threads: int | None = None,
    allowed_hosts: tuple[str, ...] | None = None,
) -> FastAPI:
    """The ASGI app: the page at /, its assets, /images/{id}, /openapi.json, then the API.

    `encode_threads` sizes the pool for requests that encode a query (default
    CLIPSEARCH_ENCODE_THREADS, else DEFAULT_ENCODE_THREADS). `allowed_hosts`
    are the Host names answered (default `allowed_hosts_from_env()`).
    """
    static_dir = Path(static_dir)
    encode_threads = encode_threads or int(
        os.environ.get("CLIPSEARCH_ENCODE_THREADS") or DEFAULT_ENCODE_THREADS)
    if encode_threads < 1:
        raise ValueError(f"encode_threads must be >= 1, got {encode_threads}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.encode_limiter = anyio.CapacityLimiter(encode_threads)
        yield

    app = FastAPI(title="clipsearch", openapi_url=None, docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.encode_threads = encode_threads
    app.add_middleware(HostAllowList, allowed=tuple(allowed_hosts or allowed_hosts_from_env()))
    openapi_bytes = dumps(build_openapi()).encode("utf-8")
    index_html = static_dir / "index.html"
    if not index_html.is_file():
        raise FileNotFoundError(f"{index_html} is missing: the search page cannot be served")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page() -> Response:
        return FileResponse(index_html, media_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": PAGE_CSP,
                                     "Cache-Control": "no-cache",
                                     "X-Content-Type-Options": "nosniff"})

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> Response:
        return Response(openapi_bytes, media_type=api.JSON_CONTENT_TYPE)

    @app.api_route("/images/{product_id}", methods=["GET", "HEAD"], include_in_schema=False)
    @app.api_route("/images/{product_id}/{n}", methods=["GET", "HEAD"],
                   include_in_schema=False)
    def product_image(product_id: str, n: str = "0") -> Response:
        # The file path comes from the catalog record, never from the URL,
        # so no URL can reach a file that is not some product's image.
        try:
            product = service.get_product(validate_product_id(product_id, "id"))
        except ClipsearchError as exc:
            return _error(exc)
        if not (n.isascii() and n.isdigit() and len(n) <= 4) or int(n) >= len(product.images):
            return _error(NotFoundError(f"product {product.id!r} has no image {n[:20]!r}; it "
                                        f"has {len(product.images)}", field="n"))
        image = product.images[int(n)]
        path = Path(image) if "://" not in image else None
        media_type = IMAGE_TYPES.get(path.suffix.lower()) if path else None
        data = _catalog_file(path) if path is not None and media_type else None
        if data is None:
            return _error(NotFoundError(f"product {product.id!r} has no local image",
                                        field="id"))
        return Response(data, media_type=media_type,
                        headers={"Cache-Control": "public, max-age=300",
                                 "X-Content-Type-Options": "nosniff"})

    for asset in sorted(static_dir.iterdir()):
        if not asset.is_file() or asset.name == "index.html" or asset.name.startswith("."):
            continue
        if asset.name in API_PREFIXES:
            raise ValueError(f"static file {asset.name} would shadow an API route")
        app.add_api_route(f"/{asset.name}", _asset_endpoint(asset), methods=["GET"],
                          include_in_schema=False)

    async def api_endpoint(request: Request, path: str) -> Response:
        try:
            body = (await _read_body(request) if request.method in ("POST", "PUT", "PATCH")
                    else None)
        except ClipsearchError as exc:
            return _error(exc)
        call = functools.partial(
            api.handle, service, request.method, "/" + path, dict(request.query_params),
            body, dict(request.headers), image_url=image_url,
        )
        limiter = request.app.state.encode_limiter if "/" + path in ENCODING_PATHS else None
        resp = await anyio.to_thread.run_sync(call, limiter=limiter)
        return _api_response(resp)

    app.add_api_route("/{path:path}", api_endpoint, include_in_schema=False,
                      methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    return app


def _catalog_file(path: Path) -> bytes | None:
    """The bytes of a catalog image, or None unless it is a regular file reached
    without symlinks now (the catalog path was resolved at ingest, so any
    symlink on it appeared later and may point anywhere)."""
    from clipsearch.service import read_local_image

    try:
        if os.path.realpath(path) != str(path):
            log.warning("not serving %s: a symlink now lies on its path", path)
            return None
        return read_local_image(str(path), follow_symlinks=False)
    except (ClipsearchError, OSError, ValueError):
        return None


def _asset_endpoint(asset: Path):
    media_type = {".js": "text/javascript; charset=utf-8",
                  ".css": "text/css; charset=utf-8"}.get(asset.suffix) or (
        mimetypes.guess_type(asset.name)[0] or "application/octet-stream")

    def endpoint() -> Response:
        return FileResponse(asset, media_type=media_type,
                            headers={"Cache-Control": "no-cache",
                                     "X-Content-Type-Options": "nosniff"})

    return endpoint


def serve(service: SearchService, *, host: str = "127.0.0.1", port: int = 8000,
          static_dir: Path | str = WEB_DIR, encode_threads: int | None = None,
          allowed_hosts: tuple[str, ...] | None = None,
          **uvicorn_options: Any) -> None:
    """Run the server until interrupted (what `clipsearch serve` does)."""
    import uvicorn

    allowed = tuple(allowed_hosts or allowed_hosts_from_env())
    app = create_app(service, static_dir=static_dir, encode_threads=encode_threads,
                     allowed_hosts=allowed)
    count = service.index.count()
    shown = f"[{host}]" if ":" in host else host
    print(f"clipsearch: {count} products, model {service.encoder.model_id}\n"
          f"clipsearch: search page on http://{shown}:{port}/  (Ctrl+C to stop)",
          file=sys.stderr)
    if count == 0:
        print("clipsearch: the index is empty; run `clipsearch ingest CATALOG` first",
              file=sys.stderr)
    if host not in LOOPBACK_HOSTS:
        log.warning("listening on %s: the API has no authentication", host)
        if set(allowed) <= set(LOOPBACK_HOSTS):
            print("clipsearch: only Host names "
                  f"{', '.join(allowed)} are answered; add the name clients use with "
                  "--allowed-host NAME (or CLIPSEARCH_ALLOWED_HOSTS)", file=sys.stderr)
    uvicorn_options.setdefault("http", TimedH11Protocol)
    uvicorn_options.setdefault("timeout_keep_alive", 5)
    uvicorn.run(app, host=host, port=port, log_level="info", **uvicorn_options)
