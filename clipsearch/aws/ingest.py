"""The ingest Lambda's logic: reconcile the index with the S3 objects that changed.

Level-triggered, not edge-triggered. An event only says *which key* changed;
what to do is decided from the key's state *now*:

- `catalog/*.jsonl` that exists: its records are upserted into the catalog
  store (see `catalog_store`); products no longer listed by that file are
  deleted; each product whose image is already in S3 is encoded and upserted,
  except when the index already holds it with the same image, where only
  changed metadata is written (with the stored vector: no encoding).
- `catalog/*.jsonl` that no longer exists: the products it defined are deleted.
- `images/*` that exists: every catalog record that points at it is encoded
  (once per image, however many products share it) and upserted.
- `images/*` that no longer exists: the products that point at it leave the
  index (their catalog records stay, so a re-upload brings them back).

Why: SQS delivers at least once and in no particular order, and S3 may send
"created" after a later "removed" of the same key. Acting on the current state
makes a redelivery, a duplicate or a reordering end in the same index as the
orderly case. Writes are upserts and deletes by product id, so the same batch
twice gives the same index.

Failures are tracked per S3 key and reported per SQS message: a message fails
when it cannot be parsed (poison), names another bucket, or when any product
of its key could not be indexed (a corrupt image, a document OpenSearch
rejects, the endpoint unavailable after retries, time running out). Only those
messages are retried by SQS; a permanent failure reaches the DLQ after
`max_receive_count` deliveries. Catalog files larger than one invocation can
encode make progress on each delivery (already-indexed products are skipped),
but a whole catalog is best loaded by the bootstrap (batch transform).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipsearch import config
from clipsearch.aws.catalog_store import CatalogRecord, CatalogStore
from clipsearch.aws.events import Message
from clipsearch.aws.s3 import Bucket, resolve_image_key, s3_uri
from clipsearch.aws.settings import LambdaSettings
from clipsearch.catalog import Product, RecordError, iter_jsonl
from clipsearch.deadline import MIN_CALL_S, Deadline
from clipsearch.errors import (
    ClipsearchError,
    ConfigurationError,
    OutOfTimeError,
    ServiceUnavailableError,
)
from clipsearch.index import IndexRecord
from clipsearch.index.opensearch import _unavailable_on_transport_errors

log = logging.getLogger(__name__)

# A catalog file is read whole into memory; beyond this, use the bootstrap.
CATALOG_MAX_BYTES = 100 * 1024 * 1024
MGET_PAGE = 500


@dataclass
class IngestStats:
    """Counts for one batch; the handler publishes them as metrics."""

    messages: int = 0
    failed_messages: int = 0
    poison_messages: int = 0
    test_events: int = 0
    ignored_objects: int = 0
    catalogs: int = 0
    catalog_record_errors: int = 0
    products_indexed: int = 0
    products_updated: int = 0
    products_unchanged: int = 0
    products_deleted: int = 0
    products_failed: int = 0
    products_waiting: int = 0
    images_encoded: int = 0
    images_unreferenced: int = 0


@dataclass
class CatalogTally:
    """Where each product of one catalog file ended in this batch: the counts add up.

    `products` is every id the file names (a bad line without an id counts as
    `line N`); each is in exactly one of indexed (unchanged, updated with its
    stored vector, or encoded now), waiting (its image is not in S3 yet) or
    failed (a bad record, or encoding/indexing failed; retried on redelivery).
    """

    key: str
    unchanged: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    to_encode: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)  # id (or "line N") -> reason
    encoded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def settle(self, failed: dict[str, str], indexed: set[str], waiting: set[str]) -> None:
        """Resolve the products sent to encoding once the batch's encoding is over."""
        for pid in self.to_encode:
            if pid in failed:
                self.failed[pid] = failed[pid]
            elif pid in waiting:
                self.waiting.append(pid)
            elif pid in indexed:
                self.encoded.append(pid)
            else:  # not reached by the encoder: never silently dropped
                self.failed[pid] = "not encoded in this invocation"
        self.to_encode = []

    def summary(self) -> dict[str, Any]:
        indexed = len(self.unchanged) + len(self.updated) + len(self.encoded)
        failed = {**self.bad, **self.failed}
        return {"catalog": self.key,
                "products": indexed + len(self.waiting) + len(failed),
                "indexed": indexed, "unchanged": len(self.unchanged),
                "updated": len(self.updated), "encoded": len(self.encoded),
                "waiting": len(self.waiting), "failed": len(failed),
                "failed_items": [{"id": k, "reason": v} for k, v in failed.items()]}


@dataclass
class BatchOutcome:
    failures: dict[str, str]  # SQS message id -> why it failed, in message order
    stats: IngestStats
    catalogs: list[dict[str, Any]] = field(default_factory=list)  # CatalogTally.summary()s

    def batch_item_failures(self) -> dict[str, list[dict[str, str]]]:
        return {"batchItemFailures": [{"itemIdentifier": mid} for mid in self.failures]}


@dataclass
class _Pending:
    """A product to encode, and the S3 keys whose outcome depends on it."""

    record: CatalogRecord
    owners: set[str] = field(default_factory=set)


class Ingestor:
    """Processes one SQS batch at a time; holds no state between batches but its clients."""

    def __init__(
        self,
        *,
        bucket: Bucket,
        index: Any,
        catalog: CatalogStore,
        encoder: Any,
        images_prefix: str,
        catalog_prefix: str,
        encode_batch: int = 16,
        fetch_workers: int = 8,
        time_margin: float = 15.0,
    ) -> None:
        """`time_margin`: seconds kept back from every call that something must follow
        (an encoder call, an S3 read); see `clipsearch.deadline`."""
        self.bucket = bucket
        self.index = index
        self.catalog = catalog
        self.encoder = encoder
        self.images_prefix = images_prefix
        self.catalog_prefix = catalog_prefix
        self.encode_batch = max(1, encode_batch)
        self.fetch_workers = fetch_workers
        self.time_margin = time_margin
        # The current invocation's deadline (set by `process`); the clients' time
        # limits read it too (see `build_ingestor`).
        self.deadline = Deadline.unbounded()
        self._index_ready = False
        # Per batch (reset by `process`): what became of each product sent to encoding.
        self._failed_ids: dict[str, str] = {}
        self._indexed_ids: set[str] = set()
        self._waiting_ids: set[str] = set()

    # ------------------------------------------------------------------ batch

    def process(self, messages: Sequence[Message],
                deadline: Deadline | None = None) -> BatchOutcome:
        """One batch. With a `deadline`, no unit of work (a catalog file, the image
        reads, a chunk to encode, each S3 read, encoder call and OpenSearch request)
        starts unless it fits, calls are cut to the time left, and what is not done
        fails its messages (to be redelivered); none is dropped, none done is failed."""
        self.deadline = (deadline or Deadline.unbounded()).with_margin(self.time_margin)
        stats = IngestStats(messages=len(messages))
        message_errors: dict[str, str] = {}
        catalog_keys: list[str] = []
        image_keys: list[str] = []
        keys_of: dict[str, list[str]] = {}
        for message in messages:
            keys: list[str] = []
            if message.problem is not None:
                stats.poison_messages += 1
                message_errors[message.message_id] = message.problem
                log.error("poison message %s (delivery %d): %s", message.message_id,
                          message.receive_count, message.problem)
                continue
            if message.test_event:
                stats.test_events += 1
                log.info("message %s is an s3:TestEvent; nothing to do", message.message_id)
                continue
            for obj in message.objects:
                if obj.bucket != self.bucket.name:
                    stats.poison_messages += 1
                    message_errors.setdefault(
                        message.message_id,
                        f"event for bucket {obj.bucket}; this function serves "
                        f"{self.bucket.name}")
                elif obj.key.startswith(self.catalog_prefix) and \
                        obj.key.lower().endswith(".jsonl"):
                    keys.append(obj.key)
                    if obj.key not in catalog_keys:
                        catalog_keys.append(obj.key)
                elif obj.key.startswith(self.images_prefix) and not obj.key.endswith("/"):
                    keys.append(obj.key)
                    if obj.key not in image_keys:
                        image_keys.append(obj.key)
                else:
                    stats.ignored_objects += 1
                    log.info("ignoring s3://%s/%s (%s): neither a catalog .jsonl nor an image",
                             obj.bucket, obj.key, obj.event_name)
            keys_of[message.message_id] = keys

        key_errors: dict[str, str] = {}
        pending: dict[str, _Pending] = {}
        fetched: dict[str, bytes | None] = {}
        self._failed_ids, self._indexed_ids, self._waiting_ids = {}, set(), set()
        tallies: list[CatalogTally] = []
        for key in catalog_keys:
            tally = CatalogTally(key)
            if not self._may_start():
                key_errors[key] = self._out_of_time(f"catalog {key} was not started")
                continue
            try:
                self._catalog(key, pending, stats, tally)
                tallies.append(tally)
            except ClipsearchError as exc:
                key_errors[key] = exc.message
                log.error("catalog %s failed: %s", key, exc.message)
        if image_keys and not self._may_start():
            for key in image_keys:
                key_errors[key] = self._out_of_time(f"image {key} was not read")
        elif image_keys:
            try:
                self._images(image_keys, pending, fetched, key_errors, stats)
            except ClipsearchError as exc:
                for key in image_keys:
                    key_errors.setdefault(key, exc.message)
                log.error("images failed: %s", exc.message)
        if pending:
            self._encode(pending, fetched, key_errors, stats)
        summaries = []
        for tally in tallies:
            tally.settle(self._failed_ids, self._indexed_ids, self._waiting_ids)
            summary = tally.summary()
            summaries.append(summary)
            # A catalog with failed products is worth a warning: they are retried, and
            # end in the DLQ if they keep failing.
            log.log(logging.WARNING if summary["failed"] else logging.INFO,
                    "catalog %s: %d products = %d indexed (%d unchanged, %d updated, "
                    "%d encoded) + %d waiting for their image + %d failed", tally.key,
                    summary["products"], summary["indexed"], summary["unchanged"],
                    summary["updated"], summary["encoded"], summary["waiting"],
                    summary["failed"], extra={"catalog_accounts": summary})

        for message in messages:
            if message.message_id in message_errors:
                continue
            errors = [key_errors[k] for k in keys_of.get(message.message_id, [])
                      if k in key_errors]
            if errors:
                message_errors[message.message_id] = errors[0]
                log.warning("message %s fails (delivery %d): %s", message.message_id,
                            message.receive_count, errors[0])
        ordered = {m.message_id: message_errors[m.message_id] for m in messages
                   if m.message_id in message_errors}
        stats.failed_messages = len(ordered)
        return BatchOutcome(ordered, stats, summaries)

    # ------------------------------------------------------------------ catalogs

    def _catalog(self, key: str, pending: dict[str, _Pending], stats: IngestStats,
                 tally: CatalogTally) -> None:
        stats.catalogs += 1
        (data,) = self._fetch([key], max_bytes=CATALOG_MAX_BYTES)
        if isinstance(data, ClipsearchError):
            raise data
        if data is None:
            gone = [r.product.id for r in self.catalog.by_source(key)]
            stats.products_deleted += self.index.delete(gone) if gone else 0
            self._check(self.catalog.delete(gone), "catalog store delete")
            log.info("catalog %s is gone: removed its %d product(s)", key, len(gone))
            return
        records, errors = self._parse_catalog(key, data)
        stats.catalog_record_errors += len(errors)
        for error in errors[:50]:
            log.warning("catalog record skipped: %s", error)
        if len(errors) > 50:
            log.warning("... and %d more bad records in %s", len(errors) - 50, key)

        for error in errors:
            tally.bad[error.product_id or f"line {error.line}"] = error.message
        listed = {r.product.id for r in records}
        stale = [r.product.id for r in self.catalog.by_source(key)
                 if r.product.id not in listed]
        if stale:
            stats.products_deleted += self.index.delete(stale)
            self._check(self.catalog.delete(stale), "catalog store delete")
        self._check(self.catalog.put(records), "catalog store")

        existing = self._indexed(list(listed))
        reuse: list[IndexRecord] = []
        drop: list[str] = []
        for record in records:
            product = record.product
            current = existing.get(product.id)
            if record.image_key is None:
                stats.products_waiting += 1
                if product.id not in tally.bad:  # a record that can never be indexed failed
                    tally.waiting.append(product.id)
                if current is not None:
                    drop.append(product.id)
                continue
            if current is not None and current[0].image == product.image:
                if current[0] == product:
                    stats.products_unchanged += 1
                    tally.unchanged.append(product.id)
                else:
                    reuse.append(IndexRecord(product, current[1]))
                continue
            tally.to_encode.append(product.id)
            entry = pending.setdefault(product.id, _Pending(record))
            entry.record = record
            entry.owners.add(key)
        if drop:
            stats.products_deleted += self.index.delete(drop)
        if reuse:
            result = self.index.upsert(reuse)
            stats.products_updated += result.indexed
            tally.updated += [r.product.id for r in reuse]
            if result.failures:
                stats.products_failed += len(result.failures)
                first = result.failures[0]
                raise _IndexWriteError(f"product {first.id}: {first.reason}")
        log.info("catalog %s: %d record(s), %d bad, %d removed, %d to encode, %d updated",
                 key, len(records), len(errors), len(stale), sum(
                     1 for p in pending.values() if key in p.owners), len(reuse))

    def _parse_catalog(self, key: str, data: bytes) -> tuple[list[CatalogRecord],
                                                          list[RecordError]]:
        lines: list[str] = []
        errors: list[RecordError] = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                lines.append("")  # keeps the numbering of the lines after it
                errors.append(RecordError(key, number, "line is not UTF-8"))
        by_id: dict[str, CatalogRecord] = {}
        line_numbers = iter(n for n, line in enumerate(lines, start=1) if line.strip())
        for item in iter_jsonl(iter(lines), key, None):
            number = next(line_numbers, None)
            if isinstance(item, RecordError):
                errors.append(item)
                continue
            ref = resolve_image_key(item.image, bucket=self.bucket.name,
                                    images_prefix=self.images_prefix, catalog_key=key)
            if ref.problem is not None and item.image is not None:
                errors.append(RecordError(key, number, f"not indexable: {ref.problem}", item.id))
            image = s3_uri(self.bucket.name, ref.key) if ref.key else item.image
            product = Product(item.id, item.title, image, dict(item.attributes))
            by_id.pop(item.id, None)  # the last record of an id wins, as in read_jsonl
            by_id[item.id] = CatalogRecord(product, ref.key, key, number)
        return list(by_id.values()), sorted(errors, key=lambda e: e.line or 0)

    @_unavailable_on_transport_errors
    def _indexed(self, ids: Sequence[str]
                 ) -> dict[str, tuple[Product, dict[str, np.ndarray]]]:
        """Products (and their vectors by key) already in the index, for the
        no-re-encode path."""
        out: dict[str, tuple[Product, dict[str, np.ndarray]]] = {}
        if not ids or self.index.current_index() is None:
            return out
        from clipsearch.index.opensearch import _product

        for start in range(0, len(ids), MGET_PAGE):
            response = self.index.client.mget(index=self.index.alias,
                                              body={"ids": list(ids[start:start + MGET_PAGE])})
            for doc in response.get("docs", []):
                source = doc.get("_source")
                if doc.get("found") and source and source.get("vectors"):
                    out[doc["_id"]] = (_product(source), {
                        v["key"]: np.asarray(v["vector"], dtype=np.float32)
                        for v in source["vectors"]})
        return out

    # ------------------------------------------------------------------ images

    def _images(self, keys: Sequence[str], pending: dict[str, _Pending],
                fetched: dict[str, bytes | None], key_errors: dict[str, str],
                stats: IngestStats) -> None:
        for key, result in zip(keys, self._fetch(keys), strict=True):
            if isinstance(result, ClipsearchError):
                key_errors[key] = result.message
            else:
                fetched[key] = result
        usable = [k for k in keys if k not in key_errors]
        users = self.catalog.by_image_keys(usable)
        for key in usable:
            records = users.get(key, [])
            if fetched.get(key) is None:
                gone = [r.product.id for r in records]
                removed = self.index.delete(gone) if gone else 0
                stats.products_deleted += removed
                log.info("image %s is gone: %d product(s) left the index", key, removed)
                continue
            if not records:
                stats.images_unreferenced += 1
                log.info("image %s: no catalog record uses it yet; it will be encoded when "
                         "its catalog arrives", key)
                continue
            for record in records:
                entry = pending.setdefault(record.product.id, _Pending(record))
                entry.owners.add(key)

    def _fetch(self, keys: Sequence[str], *, max_bytes: int = config.MAX_IMAGE_BYTES
               ) -> list[bytes | ClipsearchError | None]:
        """Read `keys` in parallel, each within the time a call with a follow-up may take.

        botocore's timeouts bound each socket operation, not a whole read with its
        retries and back-off, so the reads run in threads and are waited for only
        until the deadline allows: a read still running then fails its key (its
        thread finishes or times out on its own; its result is dropped).
        """
        def one(key: str) -> bytes | ClipsearchError | None:
            try:
                return self.bucket.get(key, max_bytes=max_bytes)
            except ClipsearchError as exc:
                return exc

        if not keys:
            return []
        limit = self.deadline.timeout(math.inf)
        if limit < MIN_CALL_S:
            return [OutOfTimeError(self._out_of_time(f"s3://{self.bucket.name}/{k} was not "
                                                     "read")) for k in keys]
        pool = ThreadPoolExecutor(max_workers=min(self.fetch_workers, len(keys)))
        try:
            futures: list[Future[bytes | ClipsearchError | None]] = [
                pool.submit(one, key) for key in keys]
            wait(futures, timeout=None if math.isinf(limit) else limit)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return [future.result() if future.done() and not future.cancelled()
                else OutOfTimeError(self._out_of_time(
                    f"reading s3://{self.bucket.name}/{key} did not finish"))
                for key, future in zip(keys, futures, strict=True)]

    # ------------------------------------------------------------------ time

    def _may_start(self) -> bool:
        """Whether a unit of work may start: the time a call with a follow-up may take
        still covers the shortest encoder call."""
        return self.deadline.allows(getattr(self.encoder, "min_call_s", MIN_CALL_S))

    def _out_of_time(self, what: str) -> str:
        return (f"{what}: the invocation's time ran out ({self.deadline.describe()}); "
                "it is done on redelivery")

    # ------------------------------------------------------------------ encoding

    def _encode(self, pending: dict[str, _Pending], fetched: dict[str, bytes | None],
                key_errors: dict[str, str], stats: IngestStats) -> None:
        by_image: dict[str, list[_Pending]] = {}
        for entry in pending.values():
            assert entry.record.image_key is not None
            by_image.setdefault(entry.record.image_key, []).append(entry)

        def fail(entries: Iterable[_Pending], reason: str) -> None:
            for entry in entries:
                pid = entry.record.product.id
                if pid in self._failed_ids or pid in self._indexed_ids \
                        or pid in self._waiting_ids:
                    continue  # settled already: failed once, or done
                stats.products_failed += 1
                self._failed_ids[pid] = reason
                for owner in entry.owners:
                    key_errors.setdefault(owner, f"product {pid}: {reason}")

        images = list(by_image)
        stop: str | None = None
        for start in range(0, len(images), self.encode_batch):
            chunk = images[start:start + self.encode_batch]
            entries = [e for image in chunk for e in by_image[image]]
            if stop is None and not self._may_start():
                stop = self._out_of_time(f"{len(images) - start} image(s) were not encoded")
            if stop is not None:
                fail(entries, stop)
                continue
            try:
                self._chunk(chunk, by_image, pending, fetched, fail, stats)
            except (ServiceUnavailableError, ConfigurationError) as exc:
                # Unavailable after retries, cut by the deadline, or misconfigured:
                # the next chunks would fare no better in this invocation.
                stop = exc.message
                fail(entries, stop)
            except ClipsearchError as exc:
                fail(entries, exc.message)

    def _chunk(self, chunk: list[str], by_image: dict[str, list[_Pending]],
               pending: dict[str, _Pending], fetched: dict[str, bytes | None],
               fail: Callable[[Iterable[_Pending], str], None], stats: IngestStats) -> None:
        """Read (what is not read yet), encode and write one chunk of images.

        Raises what should stop the batch's encoding (time out, endpoint
        unavailable); the caller fails the chunk's products not settled yet.
        """
        missing = [k for k in chunk if k not in fetched]
        for key, result in zip(missing, self._fetch(missing), strict=True):
            if isinstance(result, OutOfTimeError):
                raise result
            if isinstance(result, ClipsearchError):
                fail(by_image[key], result.message)
                fetched[key] = None
                by_image[key] = []
            else:
                fetched[key] = result
        absent = [k for k in chunk if fetched.get(k) is None and by_image[k]]
        if absent:
            waiting = [e.record.product.id for k in absent for e in by_image[k]]
            stats.products_deleted += self.index.delete(waiting)
            stats.products_waiting += len(waiting)
            self._waiting_ids.update(waiting)
        ready = [k for k in chunk if fetched.get(k) is not None]
        if not ready:
            return
        vectors = self.encoder.encode_images_each([fetched[k] for k in ready])
        records: list[IndexRecord] = []
        for key, vector in zip(ready, vectors, strict=True):
            if isinstance(vector, ClipsearchError):
                fail(by_image[key], f"image {key}: {vector.message}")
                continue
            stats.images_encoded += 1
            records.extend(IndexRecord(e.record.product, vector) for e in by_image[key])
        self._write(records, pending, fail, stats)

    def _write(self, records: list[IndexRecord], pending: dict[str, _Pending],
               fail: Callable[[Iterable[_Pending], str], None], stats: IngestStats) -> None:
        if not records:
            return
        try:
            if not self._index_ready:
                first = next(iter(records[0].vectors.values()))
                self.index.ensure(int(np.asarray(first).shape[-1]),
                                  model=getattr(self.encoder, "model_id", None))
                self._index_ready = True
            result = self.index.upsert(records)
        except ClipsearchError as exc:
            fail([pending[r.product.id] for r in records], exc.message)
            return
        stats.products_indexed += result.indexed
        rejected = {failure.id for failure in result.failures}
        self._indexed_ids.update(r.product.id for r in records if r.product.id not in rejected)
        for failure in result.failures:
            entry = pending.get(failure.id)
            if entry is not None:
                fail([entry], f"the index rejected it: {failure.reason}")

    @staticmethod
    def _check(failures: Sequence[Any], what: str) -> None:
        if failures:
            first = failures[0]
            raise _IndexWriteError(f"{what} rejected {len(failures)} record(s), first "
                                   f"{first.id}: {first.reason}")


def build_ingestor(settings: LambdaSettings, deadline: Deadline) -> Ingestor:
    """The ingest Lambda's ingestor, its clients bound by the current invocation's deadline.

    Built once per container, within the first invocation's `deadline`. Every
    OpenSearch request (with the transport's retries and 429 back-off) then ends
    within the current deadline's `request_time()`, and every encoder call (its
    read timeout, retries and back-off) within its `work_time()`, which leaves
    the margin for writing what the call encoded.
    """
    from clipsearch.aws.clients import build_encoder, build_index, s3_client

    ingestor: Ingestor | None = None

    def current() -> Deadline:  # the invocation's deadline, once the ingestor exists
        return ingestor.deadline if ingestor is not None else deadline.with_margin(
            settings.ingest_time_margin)

    index = build_index(settings, time_left=lambda: current().request_time())
    encoder = build_encoder(settings, dimension=index.dimension,
                            time_left=lambda: current().work_time())
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
    return ingestor


class _IndexWriteError(ClipsearchError):
    """OpenSearch refused a document: reported as the key's (and so the message's) failure."""

    code = "index_write_failed"
