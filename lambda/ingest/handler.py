"""Ingest Lambda: SQS batches of S3 events -> the catalog store and the product index.

The logic lives in `clipsearch.aws.ingest.Ingestor` (level-triggered
reconciliation of each changed key; see its docstring for why redelivery is
harmless). This module is the Lambda glue:

- the clients (S3, the SageMaker endpoint, OpenSearch), built once per
  container from the stack's environment and reused;
- the deadline: the context's remaining time, read at entry, bounds every
  read, call and request after it (`clipsearch.deadline`), so the response
  below is always sent before Lambda's timeout;
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
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from clipsearch.aws.events import parse_sqs_event
from clipsearch.aws.ingest import BatchOutcome, Ingestor, IngestStats, build_ingestor
from clipsearch.aws.settings import INGEST_BUDGET, LambdaSettings
from clipsearch.deadline import Deadline
from clipsearch.errors import ClipsearchError

logger = Logger()
metrics = Metrics()
tracer = Tracer()
copy_config_to_registered_loggers(source_logger=logger, include={"clipsearch"})

_ingestor: Ingestor | None = None
_settings: LambdaSettings | None = None
_lock = threading.Lock()
# Seconds a batch may use when no Lambda context says how long is left (local runs).
DEFAULT_BUDGET_S = 120.0


@tracer.capture_method
def _build(deadline: Deadline) -> tuple[LambdaSettings, Ingestor]:
    settings = LambdaSettings.from_env(budget=INGEST_BUDGET)
    ingestor = build_ingestor(settings, deadline)
    logger.info("ingest runtime ready", extra={"alias": settings.index_alias,
                                               "endpoint": settings.endpoint_name})
    return settings, ingestor


def ingestor(deadline: Deadline) -> Ingestor:
    """The container's ingestor, built on first use (within `deadline`); a failed
    build is retried next time."""
    global _ingestor, _settings
    if _ingestor is None:
        with _lock:
            if _ingestor is None:
                _settings, _ingestor = _build(deadline)
    return _ingestor


def _record_metrics(stats: IngestStats, elapsed_ms: float) -> None:
    metrics.add_metric("BatchLatency", MetricUnit.Milliseconds, elapsed_ms)
    for name, value in (
        ("Messages", stats.messages),
        ("FailedMessages", stats.failed_messages),
        ("PoisonMessages", stats.poison_messages),
        ("CatalogFiles", stats.catalogs),
        ("CatalogRecordErrors", stats.catalog_record_errors),
        ("ImagesEncoded", stats.images_encoded),
        ("ImagesRemoved", stats.images_removed),
        ("TitlesEncoded", stats.titles_encoded),
        ("ProductsIndexed", stats.products_indexed),
        ("ProductsUpdated", stats.products_updated),
        ("ProductsDeleted", stats.products_deleted),
        ("ProductsFailed", stats.products_failed),
        ("ProductsWaitingForImage", stats.products_waiting),
        ("VersionConflicts", stats.version_conflicts),
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
    global _cold_start
    started = time.monotonic()
    # Every call from here on ends before the invocation's timeout (see
    # clipsearch.deadline), so the partial-batch response is always sent.
    deadline = Deadline.from_context(context, default_s=DEFAULT_BUDGET_S)
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
        outcome: BatchOutcome = ingestor(deadline).process(messages, deadline)
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
