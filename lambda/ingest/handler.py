"""Ingest Lambda: SQS batches of S3 events -> the catalog store and the product index.

The logic lives in `clipsearch.aws.ingest.Ingestor` (level-triggered
reconciliation of each changed key; see its docstring for why redelivery is
harmless). This module is the Lambda glue:

- the clients (S3, the SageMaker endpoint, OpenSearch), built once per
  container from the stack's environment and reused;
- the SQS partial-batch response: `batchItemFailures` lists exactly the
  messages that failed (the event source mapping has ReportBatchItemFailures),
  so only those are redelivered and a poison message reaches the DLQ after
  `max_receive_count` deliveries. If something unexpected breaks the whole
  batch, every message is reported, which loses nothing;
- Powertools: a JSON logger (correlation id: the invocation's request id;
  each message is logged with its id), metrics (latency, products indexed /
  deleted / failed, poison and failed messages) and X-Ray.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from clipsearch.aws.catalog_store import CatalogStore
from clipsearch.aws.clients import build_encoder, build_index, s3_client
from clipsearch.aws.events import parse_sqs_event
from clipsearch.aws.ingest import BatchOutcome, Ingestor, IngestStats
from clipsearch.aws.s3 import Bucket
from clipsearch.aws.settings import INGEST_BUDGET, LambdaSettings
from clipsearch.errors import ClipsearchError

logger = Logger()
metrics = Metrics()
tracer = Tracer()
copy_config_to_registered_loggers(source_logger=logger, include={"clipsearch"})

_ingestor: Ingestor | None = None
_settings: LambdaSettings | None = None
_lock = threading.Lock()
# Seconds a batch may use before leaving the rest of a catalog to redelivery,
# when no Lambda context says how long is left (local runs, tests).
DEFAULT_BUDGET_S = 120.0


# Seconds kept back from every OpenSearch call for answering SQS and flushing metrics.
RESPONSE_RESERVE_S = 1.0
# The current invocation's remaining time; the handler points it at the context.
_remaining_s: Callable[[], float] = lambda: DEFAULT_BUDGET_S  # noqa: E731


@tracer.capture_method
def _build() -> tuple[LambdaSettings, Ingestor]:
    settings = LambdaSettings.from_env(budget=INGEST_BUDGET)
    # Every call is bounded by the invocation's time left, so the handler always
    # returns its partial-batch response before Lambda's timeout cuts it off:
    # OpenSearch calls keep RESPONSE_RESERVE_S back, encoder calls the margin too
    # (room for writing what they encoded).
    index = build_index(settings, time_left=lambda: _remaining_s() - RESPONSE_RESERVE_S)
    encoder = build_encoder(
        settings, dimension=index.dimension,
        time_left=lambda: _remaining_s() - settings.ingest_time_margin - RESPONSE_RESERVE_S)
    ingestor = Ingestor(
        bucket=Bucket(s3_client(read_timeout=30.0), settings.bucket,
                      images_prefix=settings.images_prefix),
        index=index,
        catalog=CatalogStore(index.client, settings.index_alias,
                             replicas=settings.index_replicas),
        encoder=encoder,
        images_prefix=settings.images_prefix,
        catalog_prefix=settings.catalog_prefix,
        encode_batch=settings.ingest_encode_batch,
        time_margin=settings.ingest_time_margin,
    )
    logger.info("ingest runtime ready", extra={"alias": settings.index_alias,
                                               "endpoint": settings.endpoint_name})
    return settings, ingestor


def ingestor() -> Ingestor:
    """The container's ingestor, built on first use; a failed build is retried next time."""
    global _ingestor, _settings
    if _ingestor is None:
        with _lock:
            if _ingestor is None:
                _settings, _ingestor = _build()
    return _ingestor


def _remaining(context: Any, started: float) -> Callable[[], float]:
    get = getattr(context, "get_remaining_time_in_millis", None)
    if callable(get):
        return lambda: get() / 1000.0
    return lambda: DEFAULT_BUDGET_S - (time.monotonic() - started)


def _record_metrics(stats: IngestStats, elapsed_ms: float) -> None:
    metrics.add_metric("BatchLatency", MetricUnit.Milliseconds, elapsed_ms)
    for name, value in (
        ("Messages", stats.messages),
        ("FailedMessages", stats.failed_messages),
        ("PoisonMessages", stats.poison_messages),
        ("CatalogFiles", stats.catalogs),
        ("CatalogRecordErrors", stats.catalog_record_errors),
        ("ImagesEncoded", stats.images_encoded),
        ("ProductsIndexed", stats.products_indexed),
        ("ProductsUpdated", stats.products_updated),
        ("ProductsDeleted", stats.products_deleted),
        ("ProductsFailed", stats.products_failed),
        ("ProductsWaitingForImage", stats.products_waiting),
    ):
        metrics.add_metric(name, MetricUnit.Count, value)


_cold_start = True


def _flush_metrics() -> None:
    """Publish the batch's metrics; a metrics problem is logged, never fails the batch."""
    try:
        metrics.flush_metrics()
    except Exception:
        logger.exception("publishing metrics failed")
        metrics.clear_metrics()


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One SQS batch; returns the partial-batch response."""
    try:
        return _handler(event, context)
    finally:
        _flush_metrics()


def _handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _cold_start, _remaining_s
    started = time.monotonic()
    if _cold_start:
        _cold_start = False
        metrics.add_metric("ColdStart", MetricUnit.Count, 1)
    messages, problems = parse_sqs_event(event)
    request_id = getattr(context, "aws_request_id", None)
    if request_id:
        logger.set_correlation_id(request_id)
    all_failed = {"batchItemFailures": [{"itemIdentifier": m.message_id} for m in messages]}
    if problems:
        # A record we cannot name cannot be retried alone: fail the batch.
        logger.error("malformed SQS event", extra={"problems": problems})
        metrics.add_metric("MalformedEvents", MetricUnit.Count, 1)
        raise RuntimeError(f"malformed SQS event: {'; '.join(problems)[:500]}")
    try:
        _remaining_s = _remaining(context, started)
        worker = ingestor()
        worker.remaining_s = _remaining_s
        outcome: BatchOutcome = worker.process(messages)
    except ClipsearchError as exc:
        logger.error("batch failed; every message will be retried",
                     extra={"error": exc.message, "messages": len(messages)})
        metrics.add_metric("FailedMessages", MetricUnit.Count, len(messages))
        return all_failed
    except Exception:
        logger.exception("unexpected error; every message will be retried")
        metrics.add_metric("FailedMessages", MetricUnit.Count, len(messages))
        return all_failed
    elapsed_ms = (time.monotonic() - started) * 1000
    _record_metrics(outcome.stats, elapsed_ms)
    for message_id, reason in outcome.failures.items():
        logger.warning("message failed", extra={"message_id": message_id, "reason": reason})
    logger.info("batch done", extra={"messages": len(messages),
                                     "failed": len(outcome.failures),
                                     "stats": vars(outcome.stats),
                                     # per catalog file: indexed + waiting + failed = products
                                     "catalogs": [{**c, "failed_items": c["failed_items"][:20]}
                                                  for c in outcome.catalogs],
                                     "latency_ms": round(elapsed_ms, 1)})
    return outcome.batch_item_failures()
