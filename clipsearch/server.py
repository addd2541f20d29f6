"""The local HTTP server: FastAPI + uvicorn in front of `clipsearch.api.handle`.

Why so thin: every API route is forwarded to the framework-neutral router,
which the query Lambda uses too, so the two runtimes cannot diverge. This
module only adds what is local by nature: the search page, product images
read from disk, and the OpenAPI document.

The service (and so the index behind it) is injected: `create_app` takes any
`SearchService`, whether it sits on the embedded `LocalIndex` or on OpenSearch.
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
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response

from clipsearch import api, config
from clipsearch.catalog import Product, validate_product_id
from clipsearch.contract import ImageUrl
from clipsearch.errors import ClipsearchError, NotFoundError
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

# First path segments the router owns; a static file may not shadow them.
API_PREFIXES = frozenset({"search", "products", "facets", "health", "images", "openapi.json"})


def local_image_url(product: Product) -> str | None:
    """Catalog files are served by /images/{id}; http(s) images are linked as they are.

    s3:// images cannot be shown by a local server, and files that are not
    raster images are never served, so both come back as null rather than as a
    link that would fail.
    """
    image = product.image
    if not image:
        return None
    if image.startswith(("http://", "https://")):
        return image
    if "://" in image or Path(image).suffix.lower() not in IMAGE_TYPES:
        return None
    return f"/images/{quote(product.id, safe='')}"


def _api_response(resp: api.ApiResponse) -> Response:
    return Response(content=resp.json_bytes(), status_code=resp.status, headers=resp.headers)


def _error(exc: ClipsearchError) -> Response:
    return _api_response(api.ApiResponse(exc.status, exc.to_body(),
                                         {"Content-Type": api.JSON_CONTENT_TYPE}))


async def _read_body(request: Request) -> bytes:
    """The body, cut off just past the limit: the router answers 413, memory stays bounded."""
    limit = config.MAX_REQUEST_BYTES + 1
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def create_app(
    service: SearchService,
    *,
    static_dir: Path | str = WEB_DIR,
    image_url: ImageUrl = local_image_url,
    encode_threads: int | None = None,
) -> FastAPI:
    """The ASGI app: the page at /, its assets, /images/{id}, /openapi.json, then the API.

    `encode_threads` sizes the pool for requests that encode a query (default
    CLIPSEARCH_ENCODE_THREADS, else DEFAULT_ENCODE_THREADS).
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
    def product_image(product_id: str) -> Response:
        # The file path comes from the catalog record, never from the URL,
        # so no URL can reach a file that is not some product's image.
        try:
            product = service.get_product(validate_product_id(product_id, "id"))
        except ClipsearchError as exc:
            return _error(exc)
        path = Path(product.image) if product.image and "://" not in product.image else None
        media_type = IMAGE_TYPES.get(path.suffix.lower()) if path else None
        if path is None or media_type is None or not path.is_file():
            return _error(NotFoundError(f"product {product.id!r} has no local image",
                                        field="id"))
        return FileResponse(path, media_type=media_type,
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
        body = await _read_body(request) if request.method in ("POST", "PUT", "PATCH") else None
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
          **uvicorn_options: Any) -> None:
    """Run the server until interrupted (what `clipsearch serve` does)."""
    import uvicorn

    app = create_app(service, static_dir=static_dir, encode_threads=encode_threads)
    count = service.index.count()
    shown = f"[{host}]" if ":" in host else host
    print(f"clipsearch: {count} products, model {service.encoder.model_id}\n"
          f"clipsearch: search page on http://{shown}:{port}/  (Ctrl+C to stop)",
          file=sys.stderr)
    if count == 0:
        print("clipsearch: the index is empty; run `clipsearch ingest CATALOG` first",
              file=sys.stderr)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: the API has no authentication", host)
    uvicorn.run(app, host=host, port=port, log_level="info", **uvicorn_options)
