"""Step 3: the batch transform, on SageMaker or on this machine.

One request dict describes the job (`transform_request`). `SageMakerTransform`
sends it to `CreateTransformJob` and waits; `LocalTransform` interprets the
very same dict the way the service does, running the packaged handler
(`ModelHandler`, the container's model_fn/input_fn/predict_fn/output_fn) and
writing outputs where SageMaker would. Because both consume one request, a
setting that works locally (split type, batch strategy, payload size, the
handler's environment) is the one the real job gets.

SageMaker behaviour reproduced by `LocalTransform` (from the API reference
for TransformInput/TransformOutput and the batch transform guide):

- inputs: every object under an `S3Prefix`, or the keys of a `ManifestFile`
  (`[{"prefix": "s3://b/p/"}, "rel/key", ...]`);
- `SplitType=Line` splits an object into lines; `None` sends it whole;
- `BatchStrategy=MultiRecord` packs as many whole lines into one request as
  fit in `MaxPayloadInMB` (MiB); `SingleRecord` sends one record each; a
  record larger than the limit fails the job;
- every request gets the job's `ContentType` and `Accept`; any non-200
  answer fails the job (SageMaker reports `ClientError` and the logs);
- `AssembleWith=Line` ends every response with exactly one newline, so a
  MultiRecord response of n lines yields n output lines; `None` concatenates;
- the output of input `<prefix>/<rel>` is `<S3OutputPath>/<rel>.out`, written
  only once the whole input object succeeded.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.bootstrap import BootstrapError, TransformJobFailed
from clipsearch.bootstrap.options import IMAGES_PREFIX, TRANSFORM_PREFIX
from clipsearch.bootstrap.prepare import Failure, ImageObject, product_of
from clipsearch.errors import ConfigurationError

MIB = 1024 * 1024
JSONLINES = "application/jsonlines"
X_IMAGE = "application/x-image"
JOB_PREFIX = "clipsearch-bootstrap-"
# A transform input file stays below this many bytes whatever the record count.
MAX_FILE_BYTES = 32 * MIB
# Records one MultiRecord request may carry. The handler's own default cap
# (1,024) protects a serverless endpoint; in a transform the payload limit
# already bounds the request, and the handler encodes in bounded batches.
TRANSFORM_MAX_ITEMS = 100_000
_TERMINAL = ("Completed", "Failed", "Stopped")


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class InputFile:
    """One transform input object and the record ids its output will answer for
    (see `prepare.record_id`: an image or a title of a product)."""

    key: str
    output_key: str
    ids: tuple[str, ...]


@dataclass
class TransformPlan:
    """The run's input and output layout, fixed by the run id."""

    run_id: str
    mode: str  # "jsonlines" | "x-image"
    bucket: str
    input_prefix: str
    output_prefix: str
    files: list[InputFile] = field(default_factory=list)
    manifest_key: str | None = None
    excluded: list[Failure] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        """Every record id, in file order."""
        return [rid for f in self.files for rid in f.ids]

    @property
    def products(self) -> list[str]:
        """The products the records belong to, each once."""
        return list(dict.fromkeys(product_of(rid) for rid in self.ids))

    @property
    def input_uri(self) -> str:
        key = self.manifest_key or self.input_prefix
        return f"s3://{self.bucket}/{key}"

    @property
    def output_uri(self) -> str:
        return f"s3://{self.bucket}/{self.output_prefix}"

    @property
    def base_job_name(self) -> str:
        return JOB_PREFIX + self.run_id


def run_prefixes(run_id: str) -> tuple[str, str]:
    return f"{TRANSFORM_PREFIX}input/{run_id}/", f"{TRANSFORM_PREFIX}output/{run_id}/"


def _record_bytes(pid: str, size: int) -> int:
    """Bytes of `{"id": ..., "image": base64}` plus its newline, without building it."""
    return len(json.dumps({"id": pid, "image": ""})) + 4 * ((size + 2) // 3) + 1


def _text_record(rid: str, text: str) -> str:
    return json.dumps({"id": rid, "text": text}, separators=(",", ":"))


def plan_transform(images: dict[str, ImageObject], *, bucket: str, run_id: str, mode: str,
                   records_per_file: int, max_payload_mb: int,
                   images_prefix: str = IMAGES_PREFIX,
                   texts: dict[str, str] | None = None) -> TransformPlan:
    """Group image and title records into input files (JSON Lines) or list image keys
    (x-image, which embeds images only: its requests are raw image bytes).

    Records sort by id, so a product's records (`<id>`, `<id>#1`, `<id>#title`)
    are next to each other and the load completes products as it reads.
    """
    input_prefix, output_prefix = run_prefixes(run_id)
    plan = TransformPlan(run_id, mode, bucket, input_prefix, output_prefix)
    limit = max_payload_mb * MIB
    texts = texts or {}
    if mode == "jsonlines":
        current: list[str] = []
        size = 0

        def close() -> None:
            n = len(plan.files)
            key = f"{input_prefix}part-{n:05d}.jsonl"
            plan.files.append(InputFile(key, f"{output_prefix}part-{n:05d}.jsonl.out",
                                        tuple(current)))

        for pid in sorted({*images, *texts}):
            record = (len(_text_record(pid, texts[pid])) + 1 if pid in texts
                      else _record_bytes(pid, images[pid].size))
            if record > limit:
                plan.excluded.append(Failure(pid, "transform", f"the image's record is {record:,}"
                                             f" bytes, above MaxPayloadInMB ({max_payload_mb})"))
                continue
            if current and (len(current) >= records_per_file or size + record > MAX_FILE_BYTES):
                close()
                current, size = [], 0
            current.append(pid)
            size += record
        if current:
            close()
        return plan
    # x-image: one request per image object, read by the job straight from images/.
    by_key: dict[str, list[str]] = {}
    for pid in sorted(images):
        image = images[pid]
        if image.bucket != bucket or not image.key.startswith(images_prefix):
            plan.excluded.append(Failure(pid, "transform", f"x-image mode reads images from "
                                         f"s3://{bucket}/{images_prefix} only; {image.uri} is not"
                                         " there (use --content-type jsonlines)"))
        elif image.size > limit:
            plan.excluded.append(Failure(pid, "transform", f"the image is {image.size:,} bytes, "
                                         f"above MaxPayloadInMB ({max_payload_mb})"))
        else:
            by_key.setdefault(image.key, []).append(pid)
    for key in sorted(by_key):
        relative = key[len(images_prefix):]
        plan.files.append(InputFile(key, f"{output_prefix}{relative}.out", tuple(by_key[key])))
    plan.manifest_key = f"{input_prefix}images.manifest"
    return plan


def manifest_body(plan: TransformPlan, images_prefix: str = IMAGES_PREFIX) -> bytes:
    """A SageMaker manifest: the common prefix, then each key relative to it."""
    entries: list[Any] = [{"prefix": f"s3://{plan.bucket}/{images_prefix}"}]
    entries += [f.key[len(images_prefix):] for f in plan.files]
    return json.dumps(entries, separators=(",", ":")).encode("utf-8")


def jsonlines_body(ids: tuple[str, ...], read_image: Callable[[str], bytes],
                   texts: dict[str, str] | None = None) -> bytes:
    """One input file, in `ids` order: `{"id": ..., "text": ...}` for a title record,
    `{"id": ..., "image": base64}` for an image record."""
    lines = []
    for pid in ids:
        if texts and pid in texts:
            lines.append(_text_record(pid, texts[pid]))
            continue
        encoded = base64.b64encode(read_image(pid)).decode("ascii")
        lines.append(json.dumps({"id": pid, "image": encoded}, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode("utf-8")


def transform_request(plan: TransformPlan, *, job_name: str, model_name: str,
                      instance_type: str, instance_count: int, max_payload_mb: int,
                      max_concurrent: int | None = None) -> dict[str, Any]:
    """The CreateTransformJob request for the plan (also what LocalTransform runs)."""
    multi = plan.mode == "jsonlines"
    request: dict[str, Any] = {
        "TransformJobName": job_name,
        "ModelName": model_name,
        "BatchStrategy": "MultiRecord" if multi else "SingleRecord",
        "MaxPayloadInMB": max_payload_mb,
        # The handler refuses bodies above CLIPSEARCH_MAX_REQUEST_BYTES (4 MiB,
        # the serverless limit); a transform request may be as big as the job allows.
        "Environment": {"CLIPSEARCH_MAX_REQUEST_BYTES": str(max_payload_mb * MIB),
                        "CLIPSEARCH_MAX_ITEMS": str(TRANSFORM_MAX_ITEMS)},
        "TransformInput": {
            "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix" if multi else "ManifestFile",
                "S3Uri": plan.input_uri,
            }},
            "ContentType": JSONLINES if multi else X_IMAGE,
            "SplitType": "Line" if multi else "None",
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": plan.output_uri, "Accept": JSONLINES,
                            "AssembleWith": "Line"},
        # No Tags: they would need sagemaker:AddTags, and the name carries the run id.
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
    }
    if max_concurrent is not None:
        request["MaxConcurrentTransforms"] = max_concurrent
    return request


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelInfo:
    """The packaged model a transform runs: its id, dimension, and identity."""

    model_id: str | None
    dimension: int | None
    fingerprint: str
    artifact_uri: str | None = None
    etag: str | None = None
    local_path: Path | None = None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ConfigurationError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def model_from_artifact(path: Path, cache_dir: Path | None = None) -> ModelInfo:
    """A local model.tar.gz: metadata streamed from its head, identity its sha256.

    Hashing a 600 MB artifact takes seconds, so the digest is cached by
    (path, size, mtime) in `cache_dir`: a re-run that changes nothing should
    also cost nothing.
    """
    from clipsearch.sagemaker.package import sha256_file

    if not path.is_file():
        raise ConfigurationError(f"model artifact {path} does not exist; build it with "
                                 "scripts/package_model.py", field="model_artifact")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
                         ).hexdigest()[:32]
    cached = cache_dir / f"{key}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        known = json.loads(cached.read_text(encoding="utf-8"))
    else:
        with path.open("rb") as handle:
            meta = _metadata_from_stream(handle)
        known = {"sha256": sha256_file(path), "meta": meta}
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(known), encoding="utf-8")
    meta = known["meta"]
    if not meta:
        raise ConfigurationError(f"{path} has no clipsearch-model.json; build it with "
                                 "scripts/package_model.py", field="model_artifact")
    return ModelInfo(str(meta.get("model_id") or "") or None, _int(meta.get("dimension")),
                     "sha256:" + known["sha256"], local_path=path)


def model_from_sagemaker(sagemaker: Any, s3: Any, model_name: str) -> ModelInfo:
    """Find the SageMaker model's artifact and read its clipsearch metadata.

    Only the first few kilobytes are streamed: the packaging sorts entries,
    so `clipsearch-model.json` comes before the weights.
    """
    from botocore.exceptions import ClientError

    try:
        described = sagemaker.describe_model(ModelName=model_name)
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        raise ConfigurationError(f"cannot describe SageMaker model {model_name!r}: {message}",
                                 field="model_name") from None
    container = described.get("PrimaryContainer") or (described.get("Containers") or [{}])[0]
    uri = container.get("ModelDataUrl")
    if not uri:
        raise ConfigurationError(f"SageMaker model {model_name!r} has no ModelDataUrl (a "
                                 "model.tar.gz); the bootstrap needs the packaged artifact",
                                 field="model_name")
    bucket, key = parse_s3_uri(uri)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        raise ConfigurationError(f"cannot read the model artifact {uri}: "
                                 f"{exc.response.get('Error', {}).get('Code')}") from None
    etag = str(head["ETag"]).strip('"')
    meta = _stream_metadata(s3, bucket, key)
    return ModelInfo(str(meta.get("model_id") or "") or None, _int(meta.get("dimension")),
                     f"{uri}#{etag}", artifact_uri=uri, etag=etag)


def _stream_metadata(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        return _metadata_from_stream(body)
    finally:
        body.close()


def _metadata_from_stream(stream: Any) -> dict[str, Any]:
    """`clipsearch-model.json` from a tar.gz read front to back, stopping once found."""
    from clipsearch.sagemaker.package import METADATA_FILE

    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:
            for member in tar:
                if member.name.removeprefix("./") == METADATA_FILE:
                    handle = tar.extractfile(member)
                    return json.load(handle) if handle else {}
    except (tarfile.TarError, OSError, ValueError):
        return {}
    return {}


def download_artifact(s3: Any, info: ModelInfo, cache_dir: Path) -> Path:
    """The artifact as a local file, cached by ETag so re-runs do not download again."""
    assert info.artifact_uri and info.etag
    bucket, key = parse_s3_uri(info.artifact_uri)
    target = cache_dir / f"{info.etag.replace('-', '_')}.tar.gz"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    s3.download_file(bucket, key, str(partial))
    os.replace(partial, target)
    return target


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- SageMaker


class SageMakerTransform:
    """Create (or find) the job, wait for it, and turn a failure into a clear error."""

    def __init__(self, sagemaker: Any, s3: Any, *, poll_seconds: float = 30.0,
                 timeout_s: float = 48 * 3600.0, progress: bool = True,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sagemaker = sagemaker
        self.s3 = s3
        self.poll_seconds = poll_seconds
        self.timeout_s = timeout_s
        self.progress = progress
        self._sleep = sleep
        self._clock = clock

    def describe(self, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.sagemaker.describe_transform_job(TransformJobName=name)
        except ClientError as exc:
            message = exc.response.get("Error", {}).get("Message", "")
            code = exc.response.get("Error", {}).get("Code", "")
            if "Could not find" in message or code == "ResourceNotFound":
                return None
            raise

    def latest_attempt(self, base_name: str) -> tuple[str | None, dict[str, Any] | None, str]:
        """(newest existing attempt, its description, the next unused name).

        Job names are unique forever in an account and region, so a retry
        after a failure is `<base>-2`, `-3`, ... and a re-run finds the newest.
        """
        latest: tuple[str | None, dict[str, Any] | None] = (None, None)
        for attempt in range(1, 1000):
            name = base_name if attempt == 1 else f"{base_name}-{attempt}"
            described = self.describe(name)
            if described is None:
                return latest[0], latest[1], name
            latest = (name, described)
        raise BootstrapError(f"{base_name}: too many failed attempts; look at the job logs")

    def start(self, request: dict[str, Any]) -> None:
        from botocore.exceptions import ClientError

        try:
            self.sagemaker.create_transform_job(**request)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise BootstrapError(
                f"CreateTransformJob {request['TransformJobName']} was refused: "
                f"{error.get('Code')}: {error.get('Message')}. A ResourceLimitExceeded means the "
                f"account's quota for {request['TransformResources']['InstanceType']} transform "
                "instances is lower; pick another --instance-type or ask for an increase",
            ) from None

    def wait(self, name: str, plan: TransformPlan) -> dict[str, Any]:
        """Poll until the job ends; progress is the share of output files written."""
        started = self._clock()
        bar = _bar(len(plan.files), "transform", "file", self.progress)
        try:
            while True:
                described = self.describe(name) or {}
                status = described.get("TransformJobStatus", "Unknown")
                bar.set_postfix_str(status)
                if status == "Completed":
                    bar.update(len(plan.files) - bar.n)
                    return described
                if status in ("Failed", "Stopped"):
                    reason = described.get("FailureReason") or "(no reason given)"
                    verb = "failed" if status == "Failed" else "was stopped"
                    raise TransformJobFailed(
                        f"batch transform job {name} {verb}: {reason}. Its logs are in CloudWatch "
                        f"log group /aws/sagemaker/TransformJobs (streams {name}/...). Fix the "
                        "cause and run the bootstrap again: finished steps are skipped and a new "
                        "attempt of the job starts", job_name=name, failure_reason=reason)
                if self._clock() - started > self.timeout_s:
                    raise BootstrapError(
                        f"batch transform job {name} is still {status} after "
                        f"{self.timeout_s:.0f} s; it keeps running. Run the bootstrap again to "
                        "resume waiting for it")
                done = _count_outputs(self.s3, plan)
                if done > bar.n:
                    bar.update(done - bar.n)
                self._sleep(self.poll_seconds)
        except KeyboardInterrupt:
            print(f"\ninterrupted: job {name} keeps running on SageMaker. Run the bootstrap "
                  "again to resume waiting, or stop it: aws sagemaker stop-transform-job "
                  f"--transform-job-name {name}", file=sys.stderr)
            raise
        finally:
            bar.close()


def locate_outputs(s3: Any, plan: TransformPlan) -> dict[str, str | None]:
    """Each planned output key -> the object that holds it, or None if there is none.

    The expected key is `<output prefix><path relative to the input prefix>.out`.
    AWS's documentation words the nesting of that relative path in more than
    one way, so an object that ends with the relative path, anywhere under
    the run's output prefix, is accepted too when it is the only one.
    """
    from clipsearch.bootstrap.s3sync import list_objects

    found = list(list_objects(s3, plan.bucket, [plan.output_prefix]))
    present = set(found)
    by_name: dict[str, list[str]] = {}
    for key in found:
        by_name.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    located: dict[str, str | None] = {}
    for entry in plan.files:
        if entry.output_key in present:
            located[entry.output_key] = entry.output_key
            continue
        relative = entry.output_key[len(plan.output_prefix):]
        matches = [key for key in by_name.get(relative.rsplit("/", 1)[-1], [])
                   if key.endswith("/" + relative)]
        located[entry.output_key] = matches[0] if len(matches) == 1 else None
    return located


def _count_outputs(s3: Any, plan: TransformPlan) -> int:
    paginator = s3.get_paginator("list_objects_v2")
    return sum(len(page.get("Contents") or [])
               for page in paginator.paginate(Bucket=plan.bucket, Prefix=plan.output_prefix))


# --------------------------------------------------------------------------- local


class LocalTransform:
    """Run a CreateTransformJob request here, with SageMaker's input/output semantics."""

    def __init__(self, s3: Any, handler: Any, *, progress: bool = False) -> None:
        self.s3 = s3
        self.handler = handler
        self.progress = progress
        self.requests = 0  # handler invocations, for tests and the report
        self.seconds = 0.0  # time spent in the handler (model load excluded)

    def run(self, request: dict[str, Any], total_records: int | None = None) -> dict[str, Any]:
        """Process every input object; raise TransformJobFailed as the service would fail."""
        name = request["TransformJobName"]
        tin = request["TransformInput"]
        source = tin["DataSource"]["S3DataSource"]
        out_bucket, out_prefix = parse_s3_uri(request["TransformOutput"]["S3OutputPath"])
        out_prefix = out_prefix.rstrip("/") + "/" if out_prefix else ""
        assemble = request["TransformOutput"].get("AssembleWith", "None")
        accept = request["TransformOutput"].get("Accept")
        content_type = tin.get("ContentType")
        split = tin.get("SplitType", "None")
        multi = request.get("BatchStrategy", "SingleRecord") == "MultiRecord"
        limit = int(request.get("MaxPayloadInMB", 6)) * MIB
        started = time.perf_counter()
        bar = _bar(total_records, "transform (local)", "record", self.progress)
        try:
            with _environment(request.get("Environment") or {}):
                for bucket, key, relative in self._inputs(source):
                    body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                    records = _split(body, split)
                    responses = []
                    for batch in _batches(records, multi, limit, name, relative):
                        t0 = time.perf_counter()
                        answer = self.handler.invoke(batch, content_type, accept)
                        self.seconds += time.perf_counter() - t0
                        self.requests += 1
                        if not answer.ok:
                            raise TransformJobFailed(
                                f"local transform {name} failed: ClientError: the model answered "
                                f"{answer.status} for {relative}: "
                                f"{answer.body.decode('utf-8', 'replace')[:500]}",
                                job_name=name, failure_reason=f"ClientError: {answer.status}")
                        responses.append(answer.body)
                        bar.update(batch.count(b"\n") if multi else 1)
                    if assemble == "Line":
                        output = b"".join(r.rstrip(b"\n") + b"\n" for r in responses)
                    else:
                        output = b"".join(responses)
                    self.s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}{relative}.out",
                                       Body=output,
                                       ContentType=accept or "application/octet-stream")
        finally:
            bar.close()
        return {"TransformJobName": name, "TransformJobStatus": "Completed",
                "Local": True, "Seconds": round(time.perf_counter() - started, 3),
                "Requests": self.requests}

    def _inputs(self, source: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
        """(bucket, key, key relative to the prefix) for each input object, in key order."""
        bucket, prefix = parse_s3_uri(source["S3Uri"])
        if source.get("S3DataType") == "ManifestFile":
            entries = json.loads(self.s3.get_object(Bucket=bucket, Key=prefix)["Body"].read())
            base_bucket, base = parse_s3_uri(entries[0]["prefix"])
            for relative in entries[1:]:
                yield base_bucket, base + relative, relative
            return
        directory = prefix[:prefix.rfind("/") + 1]
        paginator = self.s3.get_paginator("list_objects_v2")
        keys = [obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
                for obj in page.get("Contents") or [] if not obj["Key"].endswith("/")]
        for key in sorted(keys):
            yield bucket, key, key[len(directory):]


def _split(body: bytes, split: str) -> list[bytes]:
    if split == "Line":
        return [line for line in body.split(b"\n") if line.strip()]
    return [body]


def _batches(records: list[bytes], multi: bool, limit: int, job: str,
             relative: str) -> Iterator[bytes]:
    """Requests as SageMaker forms them: whole records, each request within `limit`."""
    batch: list[bytes] = []
    size = 0
    for record in records:
        needed = len(record) + (1 if multi else 0)
        if needed > limit:
            raise TransformJobFailed(
                f"local transform {job} failed: ClientError: a record in {relative} is "
                f"{len(record):,} bytes, above MaxPayloadInMB ({limit // MIB})",
                job_name=job, failure_reason="ClientError: record larger than MaxPayloadInMB")
        if not multi:
            yield record
            continue
        if batch and size + needed > limit:
            yield b"\n".join(batch) + b"\n"
            batch, size = [], 0
        batch.append(record)
        size += needed
    if batch:
        yield b"\n".join(batch) + b"\n"


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """The job's Environment, as the container would see it, for the run's duration."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _bar(total: int | None, desc: str, unit: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                leave=True)
