"""The ingest Lambda's logic: reconcile the index with the S3 objects that changed.

Level-triggered, not edge-triggered. An event only says *which key* changed;
what to do is decided from the key's state *now*. A product is indexed with
one vector per image of it that is in S3, a vector for its title, and its
words (see `clipsearch.index`); the target state of each product an event
touches is computed and written:

- `catalog/*.jsonl` that exists: its records are upserted into the catalog
  store (see `catalog_store`); products no longer listed by that file are
  deleted; every listed product is reconciled. Vectors the index already
  holds for an unchanged image or title are reused (no encoding), so a
  metadata change re-encodes nothing.
- `catalog/*.jsonl` that no longer exists: the products it defined are deleted.
- `images/*` that exists: every product that lists it is reconciled with that
  image encoded again (its bytes may have changed; once per image, however
  many products share it).
- `images/*` that no longer exists: only that image's vector leaves each
  product that lists it; the product stays findable by its other images,
  its title and its words (its catalog record stays, so a re-upload brings
  the vector back).

A product none of whose images is in S3 (yet, or any more), or that lists no
image at all, is indexed by its title and its words alone: a catalog can be
searched before its photos arrive.

Why: SQS delivers at least once and in no particular order, and S3 may send
"created" after a later "removed" of the same key. Acting on the current state
makes a redelivery, a duplicate or a reordering end in the same index as the
orderly case. Writes are upserts and deletes by product id, so the same batch
twice gives the same index. (Two invocations reconciling *different* images
of one product at the same moment each write what they saw; the later write
wins, and the next event of that product repairs a vector it missed.)

Failures are tracked per S3 key and reported per SQS message: a message fails
when it cannot be parsed (poison), names another bucket, or when any product
of its key could not be indexed (a document OpenSearch rejects, the endpoint
unavailable after retries, time running out). A corrupt image fails its own
key's message and the catalog's that listed the product, not the messages of
the product's other images: the product is written with everything else it
has. Only failed messages are retried by SQS; a permanent failure reaches the
DLQ after `max_receive_count` deliveries. Catalog files larger than one
invocation can encode make progress on each delivery (already-indexed
vectors are reused), but a whole catalog is best loaded by the bootstrap
(batch transform).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
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
from clipsearch.index import TITLE_KEY, IndexRecord, image_vector_key, product_vectors
from clipsearch.index.opensearch import _unavailable_on_transport_errors

log = logging.getLogger(__name__)

# A catalog file is read whole into memory; beyond this, use the bootstrap.
CATALOG_MAX_BYTES = 100 * 1024 * 1024
MGET_PAGE = 500
# Products per encoding chunk, per image the chunk may encode: bounds one chunk's title
# request so the time budget is checked often enough when only titles need encoding.
TITLES_PER_IMAGE = 4


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
    images_removed: int = 0
    images_unreferenced: int = 0
    titles_encoded: int = 0
    version_conflicts: int = 0


@dataclass
class CatalogTally:
    """Where each product of one catalog file ended in this batch: the counts add up.

    `products` is every id the file names (a bad line without an id counts as
    `line N`); each is in exactly one of indexed (unchanged, updated with its
    stored vectors, or encoded now), waiting (indexed by its title and words
    while none of its images is in S3 yet) or failed (a bad record or image
    reference, or encoding/indexing failed; retried on redelivery).
    """

    key: str
    unchanged: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)  # id (or "line N") -> reason
    encoded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def settle(self, failed: dict[str, str], outcomes: dict[str, str]) -> None:
        """Resolve the listed products once the batch's reconciliation is over."""
        lists = {"unchanged": self.unchanged, "updated": self.updated,
                 "encoded": self.encoded, "waiting": self.waiting}
        for pid in self.pending:
            if pid in self.bad:
                continue  # counted once, as the bad record it is
            if pid in failed:
                self.failed[pid] = failed[pid]
            elif pid in outcomes:
                lists[outcomes[pid]].append(pid)
            else:  # not reached: never silently dropped
                self.failed[pid] = "not indexed in this invocation"
        self.pending = []

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
    """A product to reconcile, and the S3 keys whose outcome depends on it."""

    record: CatalogRecord
    owners: set[str] = field(default_factory=set)
    # Image keys an event says were (re)written: encoded even if a vector exists.
    fresh: set[str] = field(default_factory=set)


@dataclass
class _Plan:
    """How one product's vectors are obtained: reused from the index or encoded now."""

    entry: _Pending
    reused: dict[str, np.ndarray]  # image key -> stored vector
    encode: list[str]  # image keys to fetch and encode
    title: np.ndarray | None  # the stored title vector when the title is unchanged
    current: tuple[Product, dict[str, np.ndarray]] | None
    version: tuple[int, int] | None  # (_seq_no, _primary_term) read; None: not indexed

    @property
    def product_id(self) -> str:
        return self.entry.record.product.id


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
        # Per batch (reset by `process`): what became of each reconciled product.
        self._failed_ids: dict[str, str] = {}
        self._outcomes: dict[str, str] = {}

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
        fetched: dict[str, Any] = {}
        self._failed_ids, self._outcomes = {}, {}
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
            try:
                self._reconcile(pending, fetched, key_errors, stats)
            except ClipsearchError as exc:  # reading the current documents failed
                for entry in pending.values():
                    self._fail(entry, exc.message, key_errors, stats)
                log.error("reconciling %d product(s) failed: %s", len(pending), exc.message)
        summaries = []
        for tally in tallies:
            tally.settle(self._failed_ids, self._outcomes)
            summary = tally.summary()
            summaries.append(summary)
            # A catalog with failed products is worth a warning: they are retried, and
            # end in the DLQ if they keep failing.
            log.log(logging.WARNING if summary["failed"] else logging.INFO,
                    "catalog %s: %d products = %d indexed (%d unchanged, %d updated, "
                    "%d encoded) + %d waiting for their images (found by title meanwhile) "
                    "+ %d failed", tally.key,
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
            tally.bad.setdefault(error.product_id or f"line {error.line}", error.message)
        listed = {r.product.id for r in records}
        stale = [r.product.id for r in self.catalog.by_source(key)
                 if r.product.id not in listed]
        if stale:
            stats.products_deleted += self.index.delete(stale)
            self._check(self.catalog.delete(stale), "catalog store delete")
        self._check(self.catalog.put(records), "catalog store")
        for record in records:
            tally.pending.append(record.product.id)
            entry = pending.setdefault(record.product.id, _Pending(record))
            entry.record = record  # the catalog just read is newer than the store's copy
            entry.owners.add(key)
        log.info("catalog %s: %d record(s), %d bad, %d removed", key, len(records),
                 len(errors), len(stale))

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
            keys: list[str] = []
            for image in item.images:
                ref = resolve_image_key(image, bucket=self.bucket.name,
                                        images_prefix=self.images_prefix, catalog_key=key)
                if ref.key is None:
                    # The product is still indexed, by its other images and its title.
                    errors.append(RecordError(key, number, f"image not indexable: "
                                              f"{ref.problem}", item.id))
                elif ref.key not in keys:
                    keys.append(ref.key)
            product = item.with_images([s3_uri(self.bucket.name, k) for k in keys])
            by_id.pop(item.id, None)  # the last record of an id wins, as in read_jsonl
            by_id[item.id] = CatalogRecord(product, tuple(keys), key, number)
        return list(by_id.values()), sorted(errors, key=lambda e: e.line or 0)

    @_unavailable_on_transport_errors
    def _indexed(self, ids: Sequence[str]
                 ) -> tuple[dict[str, tuple[Product, dict[str, np.ndarray]]],
                            dict[str, tuple[int, int]]]:
        """Products (and their vectors by key) already in the index, for reuse, and
        each found document's version as read, so the write can be conditional on it."""
        out: dict[str, tuple[Product, dict[str, np.ndarray]]] = {}
        versions: dict[str, tuple[int, int]] = {}
        if not ids or self.index.current_index() is None:
            return out, versions
        from clipsearch.index.opensearch import _product

        for start in range(0, len(ids), MGET_PAGE):
            response = self.index.client.mget(index=self.index.alias,
                                              body={"ids": list(ids[start:start + MGET_PAGE])})
            for doc in response.get("docs", []):
                source = doc.get("_source")
                if doc.get("found") and "_seq_no" in doc:
                    versions[doc["_id"]] = (doc["_seq_no"], doc["_primary_term"])
                if doc.get("found") and source:
                    out[doc["_id"]] = (_product(source), {
                        v["key"]: np.asarray(v["vector"], dtype=np.float32)
                        for v in source.get("vectors") or ()})
        return out, versions

    # ------------------------------------------------------------------ images

    def _images(self, keys: Sequence[str], pending: dict[str, _Pending],
                fetched: dict[str, Any], key_errors: dict[str, str],
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
            if not records:
                if fetched.get(key) is not None:
                    stats.images_unreferenced += 1
                    log.info("image %s: no catalog record uses it yet; it will be encoded "
                             "when its catalog arrives", key)
                continue
            if fetched.get(key) is None:
                log.info("image %s is gone: its vector leaves %d product(s)", key,
                         len(records))
            for record in records:
                entry = pending.setdefault(record.product.id, _Pending(record))
                entry.owners.add(key)
                if fetched.get(key) is not None:
                    entry.fresh.add(key)

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

    # ------------------------------------------------------------------ reconciling

    def _fail(self, entry: _Pending, reason: str, key_errors: dict[str, str],
              stats: IngestStats, *, image: str | None = None) -> None:
        """Mark a product failed and the keys whose outcome depends on it.

        With `image`, the failure is that image's own (unreadable, corrupt): it
        fails that image's key and the catalogs listing the product, but not
        the events of the product's other images, which were indexed.
        """
        pid = entry.record.product.id
        if pid not in self._failed_ids:
            stats.products_failed += 1
            self._failed_ids[pid] = reason
        for owner in entry.owners:
            if image is None or owner == image or not owner.startswith(self.images_prefix):
                key_errors.setdefault(owner, f"product {pid}: {reason}")
        if image is not None:
            key_errors.setdefault(image, f"product {pid}: {reason}")

    def _plan(self, entry: _Pending, fetched: dict[str, Any],
              current: tuple[Product, dict[str, np.ndarray]] | None,
              version: tuple[int, int] | None) -> _Plan:
        record = entry.record
        stored = current[1] if current is not None else {}
        reused: dict[str, np.ndarray] = {}
        encode: list[str] = []
        for key in record.image_keys:
            if key in fetched and fetched[key] is None:
                continue  # known to be gone
            vector = stored.get(image_vector_key(s3_uri(self.bucket.name, key)))
            if vector is not None and key not in entry.fresh:
                reused[key] = vector
            else:
                encode.append(key)
        title = None
        if current is not None and current[0].title == record.product.title:
            title = stored.get(TITLE_KEY)
        return _Plan(entry, reused, encode, title, current, version)

    def _reconcile(self, pending: dict[str, _Pending], fetched: dict[str, Any],
                   key_errors: dict[str, str], stats: IngestStats) -> None:
        """Bring each pending product to its target state: see the module docstring."""
        current, versions = self._indexed(list(pending))
        plans = [self._plan(entry, fetched, current.get(pid), versions.get(pid))
                 for pid, entry in pending.items()]
        # Products whose vectors are all in the index already: no encoding.
        self._write([p for p in plans if not p.encode and p.title is not None], {}, {},
                    key_errors, stats)
        todo = [p for p in plans if p.encode or p.title is None]
        encoded: dict[str, Any] = {}  # image key -> vector or its error, once per image
        image_errors: dict[str, str] = {}
        stop: str | None = None
        start = 0
        while start < len(todo):
            # A chunk: products until about `encode_batch` images need encoding, and at
            # most TITLES_PER_IMAGE times as many titles (a text is far cheaper).
            end, images = start, 0
            while end < len(todo) and (end == start or (
                    images + len(todo[end].encode) <= self.encode_batch
                    and end - start < TITLES_PER_IMAGE * self.encode_batch)):
                images += len(todo[end].encode)
                end += 1
            chunk, start = todo[start:end], end
            if stop is None and not self._may_start():
                stop = self._out_of_time(f"{len(todo) - (end - len(chunk))} product(s) were "
                                         "not encoded")
            if stop is not None:
                for plan in chunk:
                    self._fail(plan.entry, stop, key_errors, stats)
                continue
            try:
                titles = self._encode_chunk(chunk, fetched, encoded, image_errors, stats)
            except (ServiceUnavailableError, ConfigurationError) as exc:
                # Unavailable after retries, cut by the deadline, or misconfigured:
                # the next chunks would fare no better in this invocation.
                stop = exc.message
                for plan in chunk:
                    self._fail(plan.entry, stop, key_errors, stats)
                continue
            except ClipsearchError as exc:
                for plan in chunk:
                    self._fail(plan.entry, exc.message, key_errors, stats)
                continue
            self._write(chunk, encoded, titles, key_errors, stats,
                        image_errors=image_errors)

    def _encode_chunk(self, chunk: Sequence[_Plan], fetched: dict[str, Any],
                      encoded: dict[str, Any], image_errors: dict[str, str],
                      stats: IngestStats) -> dict[str, np.ndarray]:
        """Fetch and encode the chunk's new images and titles; returns titles by product."""
        keys = list(dict.fromkeys(k for plan in chunk for k in plan.encode
                                  if k not in encoded and k not in image_errors))
        missing = [k for k in keys if k not in fetched]
        for key, result in zip(missing, self._fetch(missing), strict=True):
            if isinstance(result, OutOfTimeError):
                raise result  # not the image's fault: the chunk is left for redelivery
            if isinstance(result, ClipsearchError):
                image_errors[key] = result.message
            else:
                fetched[key] = result
        ready = [k for k in keys if k not in image_errors and fetched.get(k) is not None]
        if ready:
            vectors = self.encoder.encode_images_each([fetched[k] for k in ready])
            for key, vector in zip(ready, vectors, strict=True):
                if isinstance(vector, ClipsearchError):
                    image_errors[key] = f"image {key}: {vector.message}"
                else:
                    encoded[key] = vector
                    stats.images_encoded += 1
        need_title = [plan for plan in chunk if plan.title is None]
        titles: dict[str, np.ndarray] = {}
        if need_title:
            vectors = self.encoder.encode_texts(
                [plan.entry.record.product.title for plan in need_title])
            stats.titles_encoded += len(need_title)
            titles = {plan.product_id: vector
                      for plan, vector in zip(need_title, vectors, strict=True)}
        return titles

    def _write(self, plans: Sequence[_Plan], encoded: dict[str, Any],
               titles: dict[str, np.ndarray], key_errors: dict[str, str], stats: IngestStats, *,
               image_errors: dict[str, str] | None = None) -> None:
        """Assemble each product's target document and upsert the ones that changed."""
        image_errors = image_errors or {}
        records: list[IndexRecord] = []
        kinds: dict[str, str] = {}
        for plan in plans:
            record = plan.entry.record
            present: list[tuple[str, np.ndarray]] = []
            for key in record.image_keys:
                vector = plan.reused.get(key)
                if vector is None:
                    vector = encoded.get(key)
                if vector is not None:
                    present.append((s3_uri(self.bucket.name, key), vector))
                elif key in image_errors:
                    self._fail(plan.entry, image_errors[key], key_errors, stats, image=key)
            product = record.product.with_images([ref for ref, _ in present])
            title = plan.title if plan.title is not None else titles[plan.product_id]
            vectors = product_vectors(present, title)
            if plan.current is not None:
                removed = set(plan.current[1]) - set(vectors)
                stats.images_removed += len(removed)
            if not present and record.image_keys:
                kinds[product.id] = "waiting"
                stats.products_waiting += 1
            elif plan.encode or plan.title is None:
                kinds[product.id] = "encoded"
            elif (plan.current is not None and plan.current[0] == product
                  and list(plan.current[1]) == list(vectors)):
                stats.products_unchanged += 1
                self._outcomes[product.id] = "unchanged"
                continue
            else:
                kinds[product.id] = "updated"
            records.append(IndexRecord(product, vectors))
        if not records:
            return
        try:
            if not self._index_ready:
                first = next(iter(records[0].vectors.values()))
                self.index.ensure(int(np.asarray(first).shape[-1]),
                                  model=getattr(self.encoder, "model_id", None))
                self._index_ready = True
            # Conditional on the version each plan was made from: an invocation
            # that wrote this product meanwhile (another of its images, say) is
            # not overwritten with vectors planned without its change; this
            # product's messages fail instead and their redelivery merges both.
            result = self.index.upsert(records, expected={
                plan.product_id: plan.version for plan in plans if plan.product_id in kinds})
        except ClipsearchError as exc:
            for plan in plans:
                if plan.product_id in kinds:
                    self._fail(plan.entry, exc.message, key_errors, stats)
            return
        rejected = {failure.id: failure for failure in result.failures}
        for plan in plans:
            pid = plan.product_id
            if pid not in kinds:
                continue
            if pid in rejected:
                if rejected[pid].conflict:
                    stats.version_conflicts += 1
                    reason = ("another invocation changed the product meanwhile; its "
                              "redelivery merges both changes")
                else:
                    reason = f"the index rejected it: {rejected[pid].reason}"
                self._fail(plan.entry, reason, key_errors, stats)
                continue
            self._outcomes[pid] = kinds[pid]
            if kinds[pid] == "updated":
                stats.products_updated += 1
            else:
                stats.products_indexed += 1

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
