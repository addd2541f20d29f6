"""The bootstrap's steps in order, with the state file and the report.

Each step has a fingerprint: a SHA-256 of exactly the inputs that decide its
result (see the package docstring). The state file records, per step, the
fingerprint it finished with; a re-run whose fingerprint matches skips the
step. Where the outside world is the better witness, it is asked instead:
the index steps compare against the fingerprint stored in the live index,
and a SageMaker job is found by its deterministic name.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from clipsearch.bootstrap import BootstrapError
from clipsearch.bootstrap.accounting import Accounting, account, unique_ids
from clipsearch.bootstrap.options import BootstrapOptions
from clipsearch.bootstrap.prepare import (
    Failure,
    PreparedCatalog,
    is_title_record,
    prepare_catalog,
    product_of,
)
from clipsearch.bootstrap.target import Target, resolve_target
from clipsearch.catalog import Product
from clipsearch.errors import ConfigurationError
from clipsearch.index import product_vectors

T = TypeVar("T")
R = TypeVar("R")
STEPS = ("prepare", "upload", "transform", "index", "publish", "catalog")


def fingerprint(*parts: Any) -> str:
    """SHA-256 of a JSON rendering: equal inputs, equal fingerprint, on any machine."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- state


class State:
    """Finished steps and their fingerprints, in a JSON file written atomically."""

    def __init__(self, path: Path, *, ignore_existing: bool = False) -> None:
        self.path = path
        self.data: dict[str, Any] = {"schema": 1, "steps": {}}
        if path.is_file() and not ignore_existing:
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict) and isinstance(loaded.get("steps"), dict):
                    self.data = loaded
            except (OSError, ValueError):
                pass  # an unreadable state file only costs re-checks

    def finished(self, step: str, fp: str) -> dict[str, Any] | None:
        record = self.data["steps"].get(step)
        return record if isinstance(record, dict) and record.get("fingerprint") == fp else None

    def finish(self, step: str, fp: str, **detail: Any) -> None:
        self.data["steps"][step] = {"fingerprint": fp, "finished_at": _now(), **detail}
        self.save()

    def forget(self, step: str) -> None:
        if self.data["steps"].pop(step, None) is not None:
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n",
                           encoding="utf-8")
        os.replace(partial, self.path)


# --------------------------------------------------------------------------- report


@dataclass
class StepReport:
    """How one step went: done, skipped (and why), or what a dry run would do."""

    name: str
    status: str = "pending"  # done | skipped | planned | failed | pending
    summary: str = ""
    seconds: float = 0.0
    products: int = 0  # products the step handled, for products/s
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        if self.status != "done" or self.seconds <= 0 or not self.products:
            return None
        return self.products / self.seconds

    def to_dict(self) -> dict[str, Any]:
        rate = self.rate
        return {"status": self.status, "summary": self.summary,
                "seconds": round(self.seconds, 3), "products": self.products,
                "products_per_s": round(rate, 2) if rate else None, **self.detail}


@dataclass
class Report:
    """What the run did, printed to stdout and written as JSON."""

    catalog: str
    dry_run: bool
    target: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=_now)
    seconds: float = 0.0
    products: int = 0
    images: int = 0
    embedded: int = 0
    indexed: int = 0
    accounted: int | None = None  # indexed + skipped + failed, once the run accounted for all
    failures: list[Failure] = field(default_factory=list)
    skipped: list[Failure] = field(default_factory=list)
    # Vectors a product is indexed without (a further image that failed), by record id.
    left_out: list[Failure] = field(default_factory=list)
    steps: dict[str, StepReport] = field(
        default_factory=lambda: {name: StepReport(name) for name in STEPS})
    index: str | None = None
    previous_index: str | None = None
    run_id: str | None = None
    job_name: str | None = None
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "catalog": self.catalog, "dry_run": self.dry_run, "target": self.target,
            "started_at": self.started_at, "seconds": round(self.seconds, 3),
            "counts": {"products": self.products, "images": self.images,
                       "embedded": self.embedded, "indexed": self.indexed,
                       "failed": len(self.failures), "skipped": len(self.skipped)},
            "index": {"alias": self.target.get("alias"), "index": self.index,
                      "previous": self.previous_index},
            "transform": {"run_id": self.run_id, "job_name": self.job_name},
            "steps": {name: step.to_dict() for name, step in self.steps.items()},
            "failed": [f.to_dict() for f in self.failures],
            "skipped": [f.to_dict() for f in self.skipped],
            "left_out": [f.to_dict() for f in self.left_out],
            # indexed + skipped + failed; equals counts.products once the run has checked
            # the index (null when it stopped before that).
            "accounted": self.accounted,
        }

    def render(self, limit: int = 50) -> str:
        t = self.target
        where = f"stack {t['stack']}" if t.get("stack") else f"bucket {t.get('bucket')}"
        lines = [f"clipsearch bootstrap{' (dry run)' if self.dry_run else ''}: {self.catalog} -> "
                 f"{where} ({t.get('region') or 'default region'}), s3://{t.get('bucket')}, "
                 f"alias {t.get('alias')} at {t.get('opensearch_url')}"]
        for step in self.steps.values():
            rate = f"  {step.rate:8.1f} products/s" if step.rate else ""
            took = f"{step.seconds:7.1f} s" if step.status == "done" else " " * 9
            lines.append(f"  {step.name:<10} {step.status:<8} {step.summary:<58} {took}{rate}")
        verb = "would index" if self.dry_run else "indexed"
        lines.append(f"products {self.products}  images {self.images}  embedded {self.embedded}"
                     f"  {verb} {self.indexed}  failed {len(self.failures)}"
                     f"  skipped {len(self.skipped)}")
        for label, items in (("failed ", self.failures), ("skipped", self.skipped),
                             ("left out", self.left_out)):
            for item in items[:limit]:
                lines.append(f"  {label} {item.id}: [{item.step}] {item.reason}")
            if len(items) > limit:
                lines.append(f"  ... and {len(items) - limit} more in the JSON report")
        if self.accounted is not None and self.accounted != self.products:
            lines.append(f"  WARNING: {self.accounted} of {self.products} products accounted "
                         "for; please report this")
        if self.path is not None:
            lines.append(f"report: {self.path}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- runner


def _prefetch(fn: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor,
              window: int) -> Iterator[R]:
    """`map` in order with at most `window` calls in flight, so memory stays bounded."""
    pending: list[Future[R]] = []
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()


def _content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


class Bootstrap:
    """One bootstrap run. Collaborators are injectable so tests swap only the edges."""

    def __init__(
        self,
        options: BootstrapOptions,
        *,
        session: Any = None,
        index_factory: Callable[[Target], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        out: Any = None,
    ) -> None:
        self.options = options.validate()
        self.session = session
        self.index_factory = index_factory or _default_index
        self.sleep = sleep
        self.out = out or sys.stdout
        self.local_requests = 0

    # ------------------------------------------------------------------ helpers

    def _clients(self) -> None:
        import boto3
        from botocore.config import Config

        if self.session is None:
            # botocore reads AWS_DEFAULT_REGION, not AWS_REGION; accept both.
            region = self.options.region or os.environ.get("AWS_REGION") or None
            self.session = boto3.Session(region_name=region)
        if self.session.region_name is None:
            raise ConfigurationError("no AWS region: pass --region or set AWS_DEFAULT_REGION "
                                     "(the region the stack is deployed in)", field="region")
        workers = self.options.upload_workers
        self.s3 = self.session.client("s3", config=Config(
            max_pool_connections=max(10, workers + 4),
            retries={"mode": "standard", "max_attempts": 8}))
        self.sagemaker = self.session.client("sagemaker", config=Config(
            retries={"mode": "standard", "max_attempts": 8}))

    def _bar(self, total: int | None, desc: str, unit: str = "product") -> Any:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                    disable=not self.options.progress or self.options.dry_run)

    def _read_object(self, bucket: str, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    # ------------------------------------------------------------------ run

    def run(self) -> Report:
        """All steps; botocore's set-up errors become messages that say what to fix."""
        from botocore.exceptions import (
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        try:
            return self._run()
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise ConfigurationError(f"no usable AWS credentials ({exc}); configure them with "
                                     "`aws configure`, AWS_PROFILE or an instance role") from exc
        except EndpointConnectionError as exc:
            raise BootstrapError(f"cannot reach AWS: {exc}") from exc

    def _run(self) -> Report:
        opts = self.options
        started = time.perf_counter()
        self._clients()
        target = resolve_target(opts, self.session)
        state_dir = opts.state_dir / target.name
        self.state = State(opts.state_file or state_dir / "state.json",
                           ignore_existing=opts.force)
        report = Report(str(opts.catalog), opts.dry_run, target=target.describe())
        if not opts.dry_run:
            report.path = opts.report_file or state_dir / "report.json"
        self.report, self.target = report, target
        try:
            prepared = self._prepare()
            upload_failed = self._upload(prepared)
            images = {pid: img for pid, img in prepared.images.items()
                      if img.key not in upload_failed or img.path is None}
            plan, model = self._transform(prepared, images, state_dir)
            self._index_and_publish(prepared, plan, model)
            self._account(plan, model)
            self._upload_catalog(prepared)
        except BaseException as exc:
            # The report still says how far the run got, and which step stopped it.
            running = next((s for s in report.steps.values() if s.status == "pending"), None)
            if running is not None:
                running.status = "failed"
                running.summary = (getattr(exc, "message", None) or type(exc).__name__)[:58]
            raise
        finally:
            report.seconds = time.perf_counter() - started
            if report.path is not None:
                report.path.parent.mkdir(parents=True, exist_ok=True)
                report.path.write_text(json.dumps(report.to_dict(), indent=2) + "\n",
                                       encoding="utf-8")
            print(report.render(), file=self.out)
        return report

    # ------------------------------------------------------------------ 1 prepare

    def _prepare(self) -> PreparedCatalog:
        step = self.report.steps["prepare"]
        t0 = time.perf_counter()
        prepared = prepare_catalog(self.options.catalog, self.target.bucket, s3=self.s3,
                                   workers=min(8, self.options.upload_workers),
                                   check_images=self.options.content_type == "x-image")
        step.seconds = time.perf_counter() - t0
        self.report.failures += prepared.failures
        self.report.skipped += prepared.skipped
        self.report.left_out += prepared.left_out
        dropped = sum(1 for f in prepared.failures if f.step == "prepare")
        # Every id the catalog names, the unreadable lines' too, so the counts add up.
        self.catalog_ids = unique_ids((f.id for f in prepared.failures),
                                      (p.id for p in prepared.products))
        self.report.products = len(self.catalog_ids)
        self.report.images = len(prepared.images) + dropped
        size = sum(img.size for img in prepared.uploads)
        step.status = "done"  # no products/s: reading and hashing is not a throughput step
        step.summary = (f"{self.report.products} products, {len(prepared.uploads)} local images "
                        f"({size / 1e6:.1f} MB), {len(prepared.failures)} failed")
        return prepared

    # ------------------------------------------------------------------ 2 upload

    def _upload(self, prepared: PreparedCatalog) -> set[str]:
        """Put the images; return the image keys that could not be uploaded.

        The catalog file goes up last, after the publish (`_upload_catalog`).
        """
        from clipsearch.bootstrap.s3sync import (
            UploadItem,
            list_objects,
            listing_prefixes,
            sync_objects,
        )

        opts, step, bucket = self.options, self.report.steps["upload"], self.target.bucket
        uploads = prepared.uploads
        fp = fingerprint("upload", bucket, [(i.key, i.md5, i.size) for i in uploads])
        if self.state.finished("upload", fp):
            step.status = "skipped"
            step.summary = f"{len(uploads)} images unchanged since the last run"
            return set()
        if not uploads:
            step.status, step.summary = "skipped", "no local images to upload"
            return set()
        items = [UploadItem(i.key, _content_type(i.key), path=i.path, md5=i.md5, size=i.size)
                 for i in uploads]
        t0 = time.perf_counter()
        existing = list_objects(self.s3, bucket, listing_prefixes(i.key for i in items))
        if opts.dry_run:
            todo = [i for i in items if existing.get(i.key) != (i.size, i.md5)]
            step.status = "planned"
            step.summary = (f"would upload {len(todo)} of {len(items)} objects "
                            f"({sum(i.size or 0 for i in todo) / 1e6:.1f} MB), "
                            f"{len(items) - len(todo)} unchanged")
            return set()
        with self._bar(len(items), "upload", "object") as bar:
            result = sync_objects(self.s3, bucket, items, workers=opts.upload_workers,
                                  existing=existing, on_done=lambda _i, _o: bar.update(1))
        step.seconds = time.perf_counter() - t0
        owners: dict[str, list[str]] = {}  # image key -> the records (see record_id) using it
        for rid, image in prepared.images.items():
            owners.setdefault(image.key, []).append(rid)
        for key, reason in sorted(result.failures.items()):
            for rid in owners.get(key, []):
                # A main image fails its product; a further one is left out of it.
                failure = Failure(rid, "upload", f"upload of {key} failed: {reason}")
                (self.report.failures if product_of(rid) == rid
                 else self.report.left_out).append(failure)
        step.status = "done"
        step.products = len({product_of(rid) for i in items for rid in owners.get(i.key, [])})
        step.detail = result.to_dict()
        step.summary = (f"{len(result.uploaded)} uploaded ({result.bytes_uploaded / 1e6:.1f} MB),"
                        f" {len(result.unchanged)} unchanged, {len(result.failures)} failed")
        if not result.failures:  # a partial upload is retried by the next run
            self.state.finish("upload", fp, **result.to_dict())
        return set(result.failures)

    # ------------------------------------------------------------------ 6 catalog

    def _upload_catalog(self, prepared: PreparedCatalog) -> None:
        """Put the catalog file, with s3:// image URIs, once the index is live.

        Why last: the bucket sends `catalog/` events to the ingest Lambda,
        which encodes every product the live index does not already hold with
        the same image. After the publish it holds them all, so the Lambda
        only records the catalog (no endpoint calls). Before it, the Lambda
        would re-encode the whole catalog through the serverless endpoint,
        and if the publish is refused, into the index readers use.
        """
        from clipsearch.bootstrap.s3sync import UploadItem, list_objects, md5_hex, sync_objects

        step, bucket, key = self.report.steps["catalog"], self.target.bucket, prepared.catalog_key
        md5 = md5_hex(prepared.catalog_body)
        fp = fingerprint("catalog", bucket, key, md5)
        if self.state.finished("catalog", fp):
            step.status, step.summary = "skipped", f"{key} unchanged since the last run"
            return
        existing = list_objects(self.s3, bucket, [key])
        same = existing.get(key) == (len(prepared.catalog_body), md5)
        if self.options.dry_run:
            step.status = "skipped" if same else "planned"
            step.summary = f"{key} unchanged" if same else f"would upload {key} (index live first)"
            return
        t0 = time.perf_counter()
        result = sync_objects(self.s3, bucket, [UploadItem(
            key, "application/x-ndjson", data=prepared.catalog_body, md5=md5,
            size=len(prepared.catalog_body))], existing=existing)
        if result.failures:
            raise BootstrapError(f"the index is live, but the catalog could not be uploaded to "
                                 f"s3://{bucket}/{key}: {result.failures[key]}. Run the "
                                 "bootstrap again to retry just this")
        step.seconds = time.perf_counter() - t0
        step.status = "done" if result.uploaded else "skipped"
        step.summary = (f"uploaded s3://{bucket}/{key} ({len(prepared.catalog_body) / 1e6:.1f} MB)"
                        if result.uploaded else f"{key} unchanged in S3")
        self.state.finish("catalog", fp)

    # ------------------------------------------------------------------ 3 transform

    def _model(self, state_dir: Path) -> Any:
        from clipsearch.bootstrap.transform import model_from_artifact, model_from_sagemaker

        if self.options.model_artifact is not None:
            cache = None if self.options.dry_run else state_dir.parent / "artifacts"
            return model_from_artifact(self.options.model_artifact, cache)
        assert self.target.model_name
        return model_from_sagemaker(self.sagemaker, self.s3, self.target.model_name)

    def _transform(self, prepared: PreparedCatalog, images: dict[str, Any],
                   state_dir: Path) -> tuple[Any, Any]:
        from clipsearch.bootstrap.transform import plan_transform, transform_request

        opts, step, bucket = self.options, self.report.steps["transform"], self.target.bucket
        model = self._model(state_dir)
        # Titles are embedded with the images in JSON Lines mode; x-image requests carry
        # image bytes only, so there the ingest Lambda embeds the titles when the catalog
        # is uploaded (it encodes what the index lacks).
        texts = prepared.titles() if opts.content_type == "jsonlines" else {}
        if opts.content_type != "jsonlines":
            with_image = {product_of(rid) for rid in images}
            self.report.skipped += [
                Failure(p.id, "transform", "no image; x-image mode embeds images only (the "
                        "ingest Lambda indexes it by its title once the catalog is uploaded)")
                for p in prepared.products if p.id not in with_image]
        fp = fingerprint("transform", bucket, opts.content_type, model.fingerprint,
                         sorted((pid, img.uri, img.etag) for pid, img in images.items()),
                         sorted(texts.items()), opts.records_per_file, opts.max_payload_mb)
        plan = plan_transform(images, bucket=bucket, run_id=fp[:16], mode=opts.content_type,
                              records_per_file=opts.records_per_file,
                              max_payload_mb=opts.max_payload_mb, texts=texts)
        self.texts = texts
        for failure in plan.excluded:
            (self.report.failures if product_of(failure.id) == failure.id
             else self.report.left_out).append(failure)
        self.report.run_id = plan.run_id
        step.products = len(plan.products)
        step.detail = {"run_id": plan.run_id, "mode": plan.mode, "input": plan.input_uri,
                       "output": plan.output_uri, "input_files": len(plan.files),
                       "model": model.model_id, "local": opts.local_transform}
        if not plan.files:
            step.status, step.summary = "skipped", "no images to embed"
            return plan, model
        done = self.state.finished("transform", fp)
        if done:
            self.report.job_name = done.get("job_name")
            step.status = "skipped"
            step.summary = f"run {plan.run_id} finished before ({done.get('job_name')})"
            return plan, model
        if opts.local_transform:
            name = f"local-{plan.run_id}"
            self.report.job_name = name
            if self._outputs_complete(plan):
                step.status = "skipped"
                step.summary = f"run {plan.run_id}: all {len(plan.files)} outputs already in S3"
                if not opts.dry_run:
                    self.state.finish("transform", fp, job_name=name, local=True)
                return plan, model
            if opts.dry_run:
                step.status = "planned"
                step.summary = (f"would write {len(plan.files)} input file(s) and run the model "
                                "here (--local-transform)")
                return plan, model
            t0 = time.perf_counter()
            self._write_inputs(plan, images)
            request = transform_request(plan, job_name=name, model_name=self.target.model_name
                                        or "local", instance_type="local",
                                        instance_count=1, max_payload_mb=opts.max_payload_mb)
            self._run_local(request, model, state_dir, len(plan.products))
            step.seconds = time.perf_counter() - t0
            step.status = "done"
            step.summary = (f"local run {plan.run_id}: {len(plan.files)} file(s), "
                            f"{self.local_requests} request(s)")
            self.state.finish("transform", fp, job_name=name, local=True)
            return plan, model
        return self._transform_sagemaker(plan, images, fp), model

    def _transform_sagemaker(self, plan: Any, images: dict[str, Any], fp: str) -> Any:
        from clipsearch.bootstrap.transform import SageMakerTransform, transform_request

        opts, step = self.options, self.report.steps["transform"]
        assert self.target.model_name
        runner = SageMakerTransform(self.sagemaker, self.s3, poll_seconds=opts.poll_seconds,
                                    timeout_s=opts.transform_timeout_s,
                                    progress=opts.progress and not opts.dry_run, sleep=self.sleep)
        latest, described, next_name = runner.latest_attempt(plan.base_job_name)
        status = (described or {}).get("TransformJobStatus")
        where = f"{opts.instance_type} x{opts.instance_count}"
        step.detail.update(instance_type=opts.instance_type, instance_count=opts.instance_count)
        if status == "Completed" and self._outputs_complete(plan):
            self.report.job_name = latest
            step.status, step.summary = "skipped", f"job {latest} already completed"
            if not opts.dry_run:
                self.state.finish("transform", fp, job_name=latest)
            return plan
        resume = status in ("InProgress", "Stopping") and latest is not None
        if opts.dry_run:
            step.status = "planned"
            step.summary = (f"would resume waiting for job {latest}" if resume else
                            f"would write {len(plan.files)} input file(s) and start job "
                            f"{next_name} on {where}")
            self.report.job_name = latest if resume else next_name
            return plan
        t0 = time.perf_counter()
        if resume:
            name = latest
        else:
            name = next_name
            self._write_inputs(plan, images)
            request = transform_request(plan, job_name=name, model_name=self.target.model_name,
                                        instance_type=opts.instance_type,
                                        instance_count=opts.instance_count,
                                        max_payload_mb=opts.max_payload_mb,
                                        max_concurrent=opts.max_concurrent_transforms)
            runner.start(request)
        assert name is not None
        self.report.job_name = name
        verb = "is still running; waiting for it again" if resume else "started; waiting"
        print(f"transform job {name} ({where}, {plan.mode}) {verb} (SageMaker needs a few "
              "minutes to provision the instances)", file=sys.stderr)
        runner.wait(name, plan)
        step.seconds = time.perf_counter() - t0
        step.status, step.summary = "done", f"job {name} on {where}, {len(plan.files)} file(s)"
        self.state.finish("transform", fp, job_name=name)
        return plan

    def _outputs_complete(self, plan: Any) -> bool:
        from clipsearch.bootstrap.transform import locate_outputs

        return all(key is not None for key in locate_outputs(self.s3, plan).values())

    def _write_inputs(self, plan: Any, images: dict[str, Any]) -> None:
        from clipsearch.bootstrap.s3sync import UploadItem, sync_objects
        from clipsearch.bootstrap.transform import JSONLINES, jsonlines_body, manifest_body

        def read_image(pid: str) -> bytes:
            image = images[pid]
            if image.path is not None:
                return image.path.read_bytes()
            body = self._read_object(image.bucket, image.key)
            if body is None:
                raise BootstrapError(f"{image.uri} disappeared while writing transform input")
            return body

        if plan.manifest_key is not None:
            items = [UploadItem(plan.manifest_key, "application/json", data=manifest_body(plan))]
        else:
            texts = getattr(self, "texts", {})
            items = [UploadItem(f.key, JSONLINES,
                                data=lambda ids=f.ids: jsonlines_body(ids, read_image, texts))
                     for f in plan.files]
        # Each input file is built in memory (up to 32 MiB, ~3x that while
        # encoding): few at a time.
        workers = max(1, min(4, self.options.upload_workers))
        with self._bar(len(items), "transform input", "file") as bar:
            result = sync_objects(self.s3, plan.bucket, items, workers=workers,
                                  on_done=lambda _i, _o: bar.update(1))
        if result.failures:
            key, reason = next(iter(result.failures.items()))
            raise BootstrapError(f"could not write transform input s3://{plan.bucket}/{key}: "
                                 f"{reason} ({len(result.failures)} file(s) failed)")

    def _run_local(self, request: dict[str, Any], model: Any, state_dir: Path,
                   total: int) -> None:
        from clipsearch.bootstrap.transform import LocalTransform, download_artifact
        from clipsearch.sagemaker.emulator import ModelHandler

        artifact = model.local_path or download_artifact(self.s3, model,
                                                         state_dir.parent / "artifacts")
        t0 = time.perf_counter()
        handler = ModelHandler.from_artifact(artifact)
        load = time.perf_counter() - t0
        try:
            runner = LocalTransform(self.s3, handler, progress=self.options.progress)
            runner.run(request, total_records=total)
            self.local_requests = runner.requests
            detail = self.report.steps["transform"].detail
            detail["model_load_s"] = round(load, 3)
            detail["handler_s"] = round(runner.seconds, 3)
            if runner.seconds > 0:
                detail["handler_products_per_s"] = round(total / runner.seconds, 2)
        finally:
            handler.close()

    # ------------------------------------------------------------------ 4-5 index, publish

    def _index_and_publish(self, prepared: PreparedCatalog, plan: Any, model: Any) -> None:
        """Steps 4-5, with OpenSearch's transport errors turned into what to do next."""
        from opensearchpy.exceptions import TransportError

        from clipsearch.errors import ServiceUnavailableError

        url = self.report.target.get("opensearch_url")
        try:
            self._index_and_publish_steps(prepared, plan, model)
        except (ServiceUnavailableError, TransportError) as exc:
            if isinstance(exc, ServiceUnavailableError):
                detail = exc.message
            elif isinstance(exc.status_code, int):
                detail = f"{exc.status_code} {exc.error}"
            else:  # a connection error repeats itself in " caused by: ..."
                detail = str(exc).split(" caused by: ")[0][:300]
            hint = ("; with SigV4 the caller's role must be allowed by the domain's access "
                    "policy (deploy with -c admin_role_arn=...)"
                    if getattr(exc, "status_code", None) in (401, 403) else "")
            raise BootstrapError(
                f"cannot reach OpenSearch at {url}: {detail}{hint}. Finished steps are "
                "recorded; run the bootstrap again once it answers") from exc

    def _index_and_publish_steps(self, prepared: PreparedCatalog, plan: Any,
                                 model: Any) -> None:
        from clipsearch.bootstrap.indexing import (
            check_alias_free,
            drop_unpublished,
            live_fingerprint,
        )

        opts, report = self.options, self.report
        index_step, publish_step = report.steps["index"], report.steps["publish"]
        fp = fingerprint("index", plan.run_id, prepared.metadata_digest(), model.model_id,
                         self.target.alias)
        index = self.index = self.index_factory(self.target)
        check_alias_free(index)
        current, live_fp = live_fingerprint(index)
        report.previous_index = current
        if live_fp == fp and not opts.new_index:
            report.index = current
            recorded = self.state.finished("index", fp) or {}
            meta_counts = _meta_counts(index, current)
            report.embedded = recorded.get("embedded", meta_counts.get("embedded", 0))
            report.indexed = recorded.get("indexed", meta_counts.get("indexed", 0))
            report.failures += [Failure(**f) for f in recorded.get("failed", [])]
            index_step.status = publish_step.status = "skipped"
            index_step.summary = f"{current} already holds this catalog ({report.indexed} products)"
            publish_step.summary = f"alias {self.target.alias} already points at {current}"
            return
        if not plan.files:
            raise BootstrapError("no product has a usable image, so there is nothing to index; "
                                 "the failures above say why")
        if opts.dry_run:
            versions = index.versions()
            number = int(versions[-1].rsplit("-v", 1)[-1]) + 1 if versions else 1
            name = f"{self.target.alias}-v{number}"
            report.indexed = len(plan.products)
            index_step.status = publish_step.status = "planned"
            index_step.summary = f"would bulk-load {len(plan.products)} products into {name}"
            publish_step.summary = (f"would move alias {self.target.alias} to {name}"
                                    + (f" and drop {current}" if current else ""))
            return
        drop_unpublished(index, fp)
        result = self._load(index, prepared, plan, model, fp)
        report.index = result.index
        report.embedded, report.indexed = result.embedded, result.indexed
        report.failures += result.failures
        index_step.status, index_step.seconds = "done", result.seconds
        index_step.products = result.indexed
        index_step.summary = (f"{result.index}: {result.indexed} indexed, "
                              f"{len(result.failures)} failed")
        sent = len(plan.products)
        failed_share = len(result.failures) / sent if sent else 1.0
        if result.indexed == 0 or failed_share > opts.max_failed_fraction:
            publish_step.status = "failed"
            publish_step.summary = f"refused: {len(result.failures)} of {sent} failed"
            raise BootstrapError(
                f"{len(result.failures)} of {sent} products failed "
                f"({failed_share:.0%} > --max-failed-fraction {opts.max_failed_fraction:.0%}); "
                f"{result.index} was built but NOT published, and alias {self.target.alias} "
                f"still points at {current or 'nothing'}. See the failures in the report; fix "
                "them and re-run, or raise --max-failed-fraction to publish anyway")
        self.state.finish("index", fp, index=result.index, indexed=result.indexed,
                          embedded=result.embedded,
                          failed=[f.to_dict() for f in result.failures])
        t0 = time.perf_counter()
        previous = index.publish(result.index, delete_old=not opts.keep_old_index)
        publish_step.seconds = time.perf_counter() - t0
        publish_step.status = "done"
        dropped = " (dropped)" if previous and not opts.keep_old_index else ""
        publish_step.summary = (f"alias {self.target.alias} -> {result.index} "
                                f"(was {previous or 'nothing'}{dropped})")
        report.previous_index = previous
        self.state.finish("publish", fp, index=result.index, previous=previous)

    # ------------------------------------------------------------------ accounting

    def _account(self, plan: Any, model: Any) -> None:
        """Put every catalog product in exactly one of indexed, skipped, failed.

        The index is the witness: whatever step was skipped, the products the
        live version lacks are found by id and explained (see `accounting`).
        A dry run that would build a new version counts what it would send.
        """
        from clipsearch.bootstrap.indexing import bootstrap_meta

        report, index_step = self.report, self.report.steps["index"]
        index = getattr(self, "index", None)
        explainers: list[Any] = []
        if index_step.status == "planned" or index is None or report.index is None:
            would = set(plan.products)
            present: Any = lambda ids: {pid for pid in ids if pid in would}  # noqa: E731
        else:
            version = index.staging(report.index)
            present = version.existing_ids
            recorded = {f["id"]: Failure(**f) for f in
                        bootstrap_meta(index, report.index).get("failures") or []}
            explainers = [lambda ids: {pid: recorded[pid] for pid in ids if pid in recorded},
                          lambda ids: self._transform_reasons(plan, model, ids)]
        result: Accounting = account(self.catalog_ids, failures=report.failures,
                                     skipped=report.skipped, present=present,
                                     explainers=explainers)
        report.failures, report.skipped = result.failed, result.skipped
        report.indexed = len(result.indexed)
        report.accounted = result.total

    def _transform_reasons(self, plan: Any, model: Any, ids: Any) -> dict[str, Failure]:
        """Why the transform output has no vector for `ids`, read from the outputs again."""
        from clipsearch.bootstrap.outputs import parse_multirecord, parse_single
        from clipsearch.bootstrap.transform import locate_outputs

        wanted = set(ids)
        files = [f for f in plan.files if wanted.intersection(map(product_of, f.ids))]
        if not files:
            return {}
        parse = parse_multirecord if plan.mode == "jsonlines" else parse_single
        located = locate_outputs(self.s3, plan)
        reasons: dict[str, Failure] = {}
        for entry in files:
            key = located.get(entry.output_key)
            body = self._read_object(plan.bucket, key) if key else None
            parsed = parse(body, entry.ids, entry.output_key, model.dimension)
            for failure in parsed.failures:
                pid = product_of(failure.id)
                if pid in wanted:
                    reasons.setdefault(pid, Failure(pid, failure.step, failure.reason))
        return reasons

    def _load(self, index: Any, prepared: PreparedCatalog, plan: Any, model: Any,
              fp: str) -> Any:
        from clipsearch.bootstrap.indexing import load_version
        from clipsearch.bootstrap.outputs import (
            majority_dimension,
            parse_multirecord,
            parse_single,
        )
        from clipsearch.bootstrap.transform import locate_outputs

        products = {p.id: p for p in prepared.products}
        parse = parse_multirecord if plan.mode == "jsonlines" else parse_single
        located = locate_outputs(self.s3, plan)

        def read(entry: Any) -> bytes | None:
            key = located.get(entry.output_key)
            return self._read_object(plan.bucket, key) if key else None

        dimension = model.dimension
        if dimension is None:
            dimension = majority_dimension(read(plan.files[0]) or b"")
            if dimension is None:
                raise BootstrapError(f"cannot tell the embedding dimension: the model metadata "
                                     f"does not say and {plan.files[0].output_key} has no vector")

        def fetch(entry: Any) -> tuple[Any, bytes | None]:
            return entry, read(entry)

        assembler = ProductAssembler(products, plan.ids, {
            rid: img.uri for rid, img in prepared.images.items()})

        def batches() -> Iterator[tuple[list[Any], list[Failure]]]:
            with ThreadPoolExecutor(max_workers=4) as pool:
                for entry, body in _prefetch(fetch, plan.files, pool, window=8):
                    parsed = parse(body, entry.ids, entry.output_key, dimension)
                    yield assembler.add(parsed.vectors, parsed.failures)

        with self._bar(len(plan.products), "index") as bar:
            result = load_version(index, batches(), dimension=dimension,
                                  model_id=model.model_id, fingerprint=fp, progress=bar.update)
        self.report.left_out += assembler.left_out
        return result


class ProductAssembler:
    """Turns transform outputs, record by record, into whole products for the load.

    A product's records (its images and its title) may end in different
    output files; a product is handed on once all of them are decided, with
    the vectors that came back (`product_vectors`: main image first, then the
    others, then the title) and its `images` narrowed to those. Its main image
    failing fails it, as a local ingest does; a further image or the title
    failing is `left_out` and the product indexed with the rest.
    """

    def __init__(self, products: dict[str, Product], record_ids: Iterable[str],
                 uris: dict[str, str]) -> None:
        self.products = products
        self.uris = uris
        self.waiting: dict[str, set[str]] = {}
        for rid in record_ids:
            self.waiting.setdefault(product_of(rid), set()).add(rid)
        # A product whose main image is not in the transform (its upload or its record
        # failed, and that step reported the product) is not indexed from the rest.
        self.headless = {pid for pid, rids in self.waiting.items()
                         if products[pid].images and pid not in rids}
        self.vectors: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, dict[str, Failure]] = {}
        self.left_out: list[Failure] = []

    def add(self, vectors: dict[str, Any], failures: list[Failure]
            ) -> tuple[list[tuple[Product, dict[str, Any]]], list[Failure]]:
        """Record one output's results; return the products now complete."""
        touched: list[str] = []
        for rid, vector in vectors.items():
            self.vectors.setdefault(product_of(rid), {})[rid] = vector
            touched.append(rid)
        for failure in failures:
            self.failed.setdefault(product_of(failure.id), {})[failure.id] = failure
            touched.append(failure.id)
        ready: list[tuple[Product, dict[str, Any]]] = []
        failed: list[Failure] = []
        for pid in dict.fromkeys(product_of(rid) for rid in touched):
            remaining = self.waiting.get(pid)
            if remaining is None:
                continue
            remaining -= set(self.vectors.get(pid, {})) | set(self.failed.get(pid, {}))
            if remaining:
                continue
            del self.waiting[pid]
            got, bad = self.vectors.pop(pid, {}), self.failed.pop(pid, {})
            if pid in self.headless:
                continue
            if pid in bad or not got:
                first = bad.get(pid) or next(iter(bad.values()))
                failed.append(Failure(pid, first.step, first.reason))
                continue
            self.left_out += bad.values()
            product = self.products[pid]
            images = [(self.uris[rid], vec) for rid, vec in got.items()
                      if rid in self.uris]
            order = {uri: n for n, uri in enumerate(product.images)}
            images.sort(key=lambda pair: order.get(pair[0], len(order)))
            title = next((vec for rid, vec in got.items() if is_title_record(rid)), None)
            ready.append((product.with_images([uri for uri, _ in images]),
                          product_vectors(images, title)))
        return ready, failed


def _meta_counts(index: Any, name: str | None) -> dict[str, Any]:
    from clipsearch.bootstrap.indexing import bootstrap_meta

    if name is None:
        return {}
    meta = bootstrap_meta(index, name)
    indexed = int(meta.get("indexed") or 0)
    return {"indexed": indexed, "embedded": indexed}


def _default_index(target: Target) -> Any:
    from clipsearch.index.opensearch import OpenSearchIndex

    return OpenSearchIndex.from_url(target.opensearch_url, aws_sigv4=target.aws_sigv4,
                                    region=target.region, alias=target.alias, timeout=120.0,
                                    chunk_size=500, replicas=target.replicas)


def run_bootstrap(options: BootstrapOptions, **kwargs: Any) -> Report:
    """Run every step; see `Bootstrap` for the injectable collaborators."""
    return Bootstrap(options, **kwargs).run()
