"""Query Lambda: API Gateway REST proxy events -> `clipsearch.api.handle` -> proxy responses.

Why so thin: the local server forwards its requests to the same
`api.handle`, so both runtimes answer every request with the same status and
the same JSON bytes (tests/test_lambda_query.py replays one request list
through both). What this module adds is only what exists on AWS:

- configuration from the environment the stack sets (`clipsearch.aws.settings`);
- the service, built once per container on the first request and reused
  (the SageMaker encoder, the OpenSearch index with SigV4, the S3 reader for
  `image_s3_key`), rebuilt on a later request if building it failed;
- image URLs as presigned S3 GETs that expire after CLIPSEARCH_IMAGE_URL_TTL;
- CORS headers for CLIPSEARCH_CORS_ALLOW_ORIGINS;
- the query-vector cache, one per container (CLIPSEARCH_QUERY_CACHE_ENTRIES and
  CLIPSEARCH_QUERY_CACHE_MB; 0 turns it off), so a warm container answers a
  repeated query without calling SageMaker;
- Powertools: a JSON logger whose correlation id is API Gateway's request id,
  metrics (latency, result count, 4xx/5xx/503 counts, query-cache hits and
  misses per route) and X-Ray.

No request ever gets a stack trace: `api.handle` maps every error, and
anything that escapes it (a bug in this file) becomes the contract's opaque 500.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from clipsearch import api
from clipsearch.aws.clients import build_encoder, build_index, s3_client
from clipsearch.aws.gateway import CorsPolicy, GatewayRequest, proxy_response, request_from_event
from clipsearch.aws.s3 import Bucket, Presigner
from clipsearch.aws.settings import ENV_CORS_ORIGINS, QUERY_BUDGET, LambdaSettings
from clipsearch.contract import internal_error_body
from clipsearch.errors import ClipsearchError, ServiceUnavailableError
from clipsearch.query_cache import QueryCache
from clipsearch.service import SearchService

logger = Logger()
metrics = Metrics()
tracer = Tracer()
# clipsearch's own modules log through the standard library: same JSON format.
copy_config_to_registered_loggers(source_logger=logger, include={"clipsearch"})


class _Runtime:
    """What one container builds once: settings, service and presigner."""

    def __init__(self, settings: LambdaSettings, service: SearchService,
                 presigner: Presigner) -> None:
        self.settings = settings
        self.service = service
        self.presigner = presigner


# Read apart from the other settings so even a misconfigured container answers
# with CORS headers, and the web page can show its error message.
_cors = CorsPolicy.parse(os.environ.get(ENV_CORS_ORIGINS))


_runtime: _Runtime | None = None
_lock = threading.Lock()


@tracer.capture_method
def _build() -> _Runtime:
    settings = LambdaSettings.from_env(budget=QUERY_BUDGET)
    index = build_index(settings)
    # The index knows its dimension; telling the encoder saves a probe call.
    encoder = build_encoder(settings, dimension=index.dimension)
    s3 = s3_client()
    bucket = Bucket(s3, settings.bucket, images_prefix=settings.images_prefix)
    cache = QueryCache.from_settings(settings.query_cache_entries, settings.query_cache_mb)
    service = SearchService(encoder, index, s3_image_source=bucket.query_image,
                            query_cache=cache)
    presigner = Presigner(s3, settings.bucket, images_prefix=settings.images_prefix,
                          ttl=settings.image_url_ttl)
    logger.info("query runtime ready", extra={"alias": settings.index_alias,
                                              "endpoint": settings.endpoint_name})
    return _Runtime(settings, service, presigner)


def runtime() -> _Runtime:
    """The container's runtime, built on first use; a failed build is retried next time."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = _build()
    return _runtime


def _error_response(exc: ClipsearchError) -> api.ApiResponse:
    headers = {"Content-Type": api.JSON_CONTENT_TYPE}
    if isinstance(exc, ServiceUnavailableError):
        headers["Retry-After"] = str(max(1, int(exc.retry_after)))
    return api.ApiResponse(exc.status, exc.to_body(), headers)


def _cache_counts() -> tuple[int, int] | None:
    """(hits, misses) of this container's query cache so far; None when there is none."""
    cache = _runtime.service.query_cache if _runtime is not None else None
    if cache is None:
        return None
    stats = cache.stats()
    return stats.hits, stats.misses


def _serve(event: dict[str, Any]) -> tuple[api.ApiResponse, GatewayRequest | None,
                                           tuple[int, int] | None]:
    """The answer, the parsed request, and the query-cache (hits, misses) it caused."""
    try:
        request = request_from_event(event)
    except ClipsearchError as exc:
        return _error_response(exc), None, None
    try:
        rt = runtime()
    except ClipsearchError as exc:
        logger.error("cannot build the query runtime: %s", exc.message)
        return _error_response(exc), request, None
    # One request at a time per container, so the difference is this request's.
    before = _cache_counts()
    response = api.handle(rt.service, request.method, request.path, request.query,
                          request.body, request.headers, image_url=rt.presigner)
    after = _cache_counts()
    delta = (after[0] - before[0], after[1] - before[1]) if before and after else None
    return response, request, delta


def _record_metrics(request: GatewayRequest | None, response: api.ApiResponse,
                    elapsed_ms: float, cache_delta: tuple[int, int] | None = None) -> None:
    metrics.add_dimension("route", request.route if request else "other")
    metrics.add_metric("Latency", MetricUnit.Milliseconds, elapsed_ms)
    metrics.add_metric("Requests", MetricUnit.Count, 1)
    status = response.status
    metrics.add_metric("ClientErrors", MetricUnit.Count, int(400 <= status < 500))
    metrics.add_metric("ServerErrors", MetricUnit.Count, int(status >= 500))
    metrics.add_metric("Unavailable", MetricUnit.Count, int(status == 503))
    results = response.body.get("results") if status == 200 else None
    if isinstance(results, list):
        metrics.add_metric("Results", MetricUnit.Count, len(results))
    if cache_delta is not None and any(cache_delta):
        metrics.add_metric("QueryCacheHits", MetricUnit.Count, cache_delta[0])
        metrics.add_metric("QueryCacheMisses", MetricUnit.Count, cache_delta[1])


_cold_start = True


def _flush_metrics() -> None:
    """Publish this invocation's metrics (EMF on stdout); a metrics problem is only logged.

    Not Powertools' `log_metrics` decorator: an exception it raises while
    flushing would replace the answer already computed with a gateway 502.
    """
    try:
        metrics.flush_metrics()
    except Exception:
        logger.exception("publishing metrics failed")
        metrics.clear_metrics()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST,
                              log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One API request. Request bodies are never logged: they carry shoppers' photos."""
    try:
        return _handler(event)
    finally:
        _flush_metrics()


def _handler(event: dict[str, Any]) -> dict[str, Any]:
    global _cold_start
    started = time.perf_counter()
    if _cold_start:
        _cold_start = False
        metrics.add_metric("ColdStart", MetricUnit.Count, 1)
    request: GatewayRequest | None = None
    cache_delta: tuple[int, int] | None = None
    try:
        response, request, cache_delta = _serve(event)
    except Exception:  # a bug here, not in api.handle (which never raises)
        logger.exception("unhandled error in the query handler")
        response = api.ApiResponse(500, internal_error_body(),
                                   {"Content-Type": api.JSON_CONTENT_TYPE})
    elapsed_ms = (time.perf_counter() - started) * 1000
    try:
        _record_metrics(request, response, elapsed_ms, cache_delta)
    except Exception:  # metrics must never turn an answer into an error
        logger.exception("recording metrics failed")
    level = "error" if response.status >= 500 else "info"
    getattr(logger, level)("request served", extra={
        "method": request.method if request else None,
        "route": request.route if request else None,
        "status": response.status,
        "error": response.body.get("error") if response.status >= 400 else None,
        "latency_ms": round(elapsed_ms, 1),
    })
    origin = request.origin if request else None
    try:
        # Serialising is part of answering: inside the error handling, so even a
        # body that cannot be encoded leaves as a 500 with CORS headers, not a
        # gateway 502 without them.
        return proxy_response(response, cors=_cors, origin=origin)
    except Exception:
        logger.exception("serialising the response failed")
        return proxy_response(api.internal_error_response(), cors=_cors, origin=origin)
