"""The bootstrap end to end: moto for S3, SageMaker and CloudFormation, the packaged
tiny CLIP for the transform, and the real OpenSearch node for the index.

A "stack" is created in moto's CloudFormation with the same output names the
CDK stack has, so the bootstrap resolves everything from describe_stacks as it
does on AWS. `--local-transform` runs the handler from the real artifact
(downloaded from the SageMaker model's ModelDataUrl). Where the SageMaker
service itself matters (a job that fails, or one that runs and completes),
moto's job record is driven from botocore event hooks; in the completing case
the "service" is the same LocalTransform fed with the request the bootstrap
actually sent, so the request is proven runnable.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws
from PIL import Image

from clipsearch.bootstrap import BootstrapError, TransformJobFailed
from clipsearch.bootstrap.options import BootstrapOptions
from clipsearch.bootstrap.outputs import parse_multirecord, parse_single
from clipsearch.bootstrap.pipeline import Bootstrap
from clipsearch.bootstrap.transform import LocalTransform
from clipsearch.cli import main
from clipsearch.errors import ConfigurationError
from clipsearch.index.opensearch import OpenSearchIndex
from clipsearch.sagemaker.emulator import ModelHandler

REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK = "Clipsearch-test"
BUCKET = "clipsearch-test-catalog"
MODEL = "clipsearch-test-model"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def aws(monkeypatch):
    """moto for every botocore call; OpenSearch (plain requests) is not intercepted."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.fixture
def alias(opensearch_client) -> str:
    """A fresh alias per test; opensearch_client deletes every index afterwards."""
    return f"boot-{uuid.uuid4().hex[:8]}"


def deploy(session: Any, *, opensearch_url: str, alias: str, artifact: Path) -> None:
    """What `cdk deploy` leaves behind, as far as the bootstrap can see it."""
    template = {
        "Resources": {"Bucket": {"Type": "AWS::S3::Bucket",
                                 "Properties": {"BucketName": BUCKET}}},
        "Outputs": {
            "BucketName": {"Value": {"Ref": "Bucket"}},
            "OpenSearchUrl": {"Value": opensearch_url},
            "IndexAlias": {"Value": alias},
            # What a multi-node domain's stack outputs (a single node leaves it unassigned).
            "IndexReplicas": {"Value": "1"},
            "ModelName": {"Value": MODEL},
            "TransformRoleArn": {"Value": f"arn:aws:iam::{ACCOUNT}:role/clipsearch-model"},
            "ApiUrl": {"Value": "https://example.execute-api.us-east-1.amazonaws.com/v1/"},
            "Region": {"Value": {"Ref": "AWS::Region"}},
        },
    }
    session.client("cloudformation").create_stack(StackName=STACK,
                                                   TemplateBody=json.dumps(template))
    s3 = session.client("s3")
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.upload_file(str(artifact), BUCKET, "models/model.tar.gz")
    session.client("sagemaker").create_model(
        ModelName=MODEL, ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/clipsearch-model",
        PrimaryContainer={"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
                                   "huggingface-pytorch-inference:2.6.0-cpu",
                          "ModelDataUrl": f"s3://{BUCKET}/models/model.tar.gz"})


@pytest.fixture
def stack(aws, opensearch_url, alias, tiny_model_artifact):
    deploy(aws, opensearch_url=opensearch_url, alias=alias, artifact=tiny_model_artifact)
    return aws


@pytest.fixture
def catalog(demo_catalog_path, tmp_path) -> Path:
    """A private copy of the 40-product demo catalog (tests corrupt images in it)."""
    target = tmp_path / "catalog"
    shutil.copytree(demo_catalog_path.parent, target)
    return target / "catalog.jsonl"


def options(catalog: Path, tmp_path: Path, **overrides: Any) -> BootstrapOptions:
    values: dict[str, Any] = dict(catalog=catalog, stack_name=STACK, region=REGION,
                                  local_transform=True, records_per_file=16,
                                  state_dir=tmp_path / "state", progress=False, poll_seconds=0)
    values.update(overrides)
    return BootstrapOptions(**values)


def run(session: Any, opts: BootstrapOptions, **kwargs: Any):
    out = io.StringIO()
    report = Bootstrap(opts, session=session, out=out, **kwargs).run()
    return report, out.getvalue()


def object_versions(session: Any) -> list[tuple[str, str]]:
    s3 = session.client("s3")
    found = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        found += [(v["Key"], v["VersionId"]) for v in page.get("Versions") or []]
    return sorted(found)


def catalog_ids(catalog: Path) -> list[str]:
    return sorted(json.loads(line)["id"] for line in catalog.read_text().splitlines())


def image_of(catalog: Path, pid: str) -> Path:
    for line in catalog.read_text().splitlines():
        record = json.loads(line)
        if record["id"] == pid:
            return catalog.parent / record["image"]
    raise KeyError(pid)


# --------------------------------------------------------------------------- end to end


def test_bootstrap_end_to_end_then_a_rerun_changes_nothing(stack, catalog, alias, tmp_path,
                                                           opensearch_client, encoder, capsys):
    args = ["--data-dir", str(tmp_path / "data"), "bootstrap", str(catalog),
            "--stack-name", STACK, "--region", REGION, "--local-transform",
            "--records-per-file", "16", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report_path = tmp_path / "data" / "bootstrap" / STACK / "report.json"
    report = json.loads(report_path.read_text())
    ids = catalog_ids(catalog)

    # The demo catalog has two photos per product (main and close-up): 80 images.
    assert report["counts"] == {"products": 40, "images": 80, "embedded": 40, "indexed": 40,
                                "failed": 0, "skipped": 0}
    assert [report["steps"][s]["status"] for s in report["steps"]] == ["done"] * 6
    assert report["steps"]["upload"]["uploaded"] == 80
    for step in ("upload", "transform", "index"):
        assert report["steps"][step]["products_per_s"] > 0
    assert "indexed 40" in printed and f"alias {alias} -> {alias}-v1" in printed

    # The alias points at the new version, which holds every product with its metadata.
    index = OpenSearchIndex(opensearch_client, alias=alias)
    assert index.current_index() == report["index"]["index"] == f"{alias}-v1"
    assert index.count() == 40
    # The version has the replicas the stack output asks for, read back from the node.
    settings = opensearch_client.indices.get_settings(index=f"{alias}-v1")
    assert settings[f"{alias}-v1"]["settings"]["index"]["number_of_replicas"] == "1"
    product = index.get(ids[5])
    assert product is not None and product.title
    assert product.image == f"s3://{BUCKET}/images/{ids[5]}.png"
    assert index.model == str(report["steps"]["transform"]["model"])

    # SageMaker's layout: one output file per input file, one line per input line;
    # 120 records: each product's two images and its title.
    s3 = stack.client("s3")
    run_id = report["transform"]["run_id"]
    records = []
    for n, expected in enumerate([16] * 7 + [8]):
        key = f"transform/output/{run_id}/part-{n:05d}.jsonl.out"
        lines = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines()
        assert len(lines) == expected
        records += [json.loads(line)["id"] for line in lines]
    assert sorted(records) == sorted(f"{pid}{slot}" for pid in ids
                                     for slot in ("", "#1", "#title"))
    # One document per product with all its vectors, main image first.
    assert list(index.get_vectors([ids[5]])[ids[5]]) == [
        f"image:s3://{BUCKET}/images/{ids[5]}.png",
        f"image:s3://{BUCKET}/images/{ids[5]}-closeup.png", "title"]
    uploaded = s3.get_object(Bucket=BUCKET, Key="catalog/catalog.jsonl")["Body"].read()
    assert all(json.loads(line)["image"].startswith(f"s3://{BUCKET}/images/")
               for line in uploaded.decode().splitlines())

    # Querying by a catalog image's vector returns that product first.
    for pid in ids[::7]:
        vector = encoder.encode_images([image_of(catalog, pid).read_bytes()])[0]
        assert index.knn(vector, 3)[0].product.id == pid

    # A second run: every step skipped, no S3 write, same index, no new version.
    before = object_versions(stack)
    versions = index.versions()
    assert main(args) == 0
    rerun = json.loads(report_path.read_text())
    # (prepare always re-reads the catalog: that is how a change would be noticed)
    assert [rerun["steps"][s]["status"] for s in ("upload", "transform", "index", "publish",
                                                  "catalog")] == ["skipped"] * 5
    assert rerun["counts"]["indexed"] == 40 and rerun["index"]["index"] == f"{alias}-v1"
    assert object_versions(stack) == before
    assert index.versions() == versions and index.current_index() == f"{alias}-v1"

    # Even without the state file, the system is the witness: nothing is written.
    assert main([*args, "--force"]) == 0
    forced = json.loads(report_path.read_text())
    assert forced["steps"]["upload"]["status"] == "done"
    assert forced["steps"]["upload"]["uploaded"] == 0
    assert forced["steps"]["upload"]["unchanged"] == 80
    assert [forced["steps"][s]["status"] for s in ("transform", "index", "publish", "catalog")
            ] == ["skipped"] * 4
    assert object_versions(stack) == before and index.versions() == versions


class _AsIndexed:
    """The tiny CLIP under the model id the bootstrap's index records (the artifact's),
    so a search service accepts the index it built; the weights are the same."""

    def __init__(self, encoder: Any, model_id: str) -> None:
        self._encoder, self.model_id = encoder, model_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)


def test_multi_image_products_with_titles_answer_hybrid_queries(stack, catalog, alias,
                                                                tmp_path, opensearch_client,
                                                                encoder):
    from clipsearch.contract import SearchRequest
    from clipsearch.service import SearchService

    rng = np.random.default_rng(7)
    shots: dict[str, bytes] = {}
    for name in ("kilner-front", "kilner-side", "tumbler-front", "tumbler-side"):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(buffer, "PNG")
        shots[name] = buffer.getvalue()
        (catalog.parent / "images" / f"{name}.png").write_bytes(shots[name])
    with catalog.open("a") as handle:
        for name, title in (("kilner", "Kilner preserving jar"),
                            ("tumbler", "Heavy glass tumbler")):
            handle.write(json.dumps({
                "id": f"{name}-1", "title": title, "description": "glassware",
                "images": [f"images/{name}-front.png", f"images/{name}-side.png"]}) + "\n")
    report, _ = run(stack, options(catalog, tmp_path))
    assert report.indexed == 42 and report.failures == [] and report.left_out == []

    index = OpenSearchIndex(opensearch_client, alias=alias)
    uri = f"s3://{BUCKET}/images/"
    assert list(index.get_vectors(["kilner-1"])["kilner-1"]) == [
        f"image:{uri}kilner-front.png", f"image:{uri}kilner-side.png", "title"]
    product = index.get("kilner-1")
    assert product.images == (f"{uri}kilner-front.png", f"{uri}kilner-side.png")
    assert product.description == "glassware"

    service = SearchService(_AsIndexed(encoder, index.model), index)
    # A rare title word: its product first in hybrid (and lexical) mode.
    for mode in ("hybrid", "lexical"):
        answer = service.search(SearchRequest(text="kilner", k=5, mode=mode, explain=True))
        assert answer["results"][0]["id"] == "kilner-1", mode
    # The second image finds its product first, once.
    answer = service.search(SearchRequest(image=shots["kilner-side"], k=20))
    ids = [r["id"] for r in answer["results"]]
    assert ids[0] == "kilner-1" and ids.count("kilner-1") == 1

    # The catalog the bootstrap uploads last reaches the ingest Lambda: it finds every
    # product indexed with the same images and title, and encodes nothing.
    outcome, calls = _ingest_catalog_event(stack, index, encoder)
    assert outcome.failures == {} and calls == []
    assert outcome.stats.products_unchanged == 42
    assert (outcome.stats.images_encoded, outcome.stats.titles_encoded) == (0, 0)


def _ingest_catalog_event(session: Any, index: OpenSearchIndex, encoder: Any):
    """The ingest Lambda's logic fed the S3 event of the uploaded catalog file; returns
    its outcome and the encoder calls it made."""
    from clipsearch.aws.catalog_store import CatalogStore
    from clipsearch.aws.events import parse_sqs_record
    from clipsearch.aws.ingest import Ingestor
    from clipsearch.aws.s3 import Bucket

    calls: list[str] = []

    class Counting(_AsIndexed):
        def encode_texts(self, texts, **kwargs):
            calls.append("texts")
            return self._encoder.encode_texts(texts, **kwargs)

        def encode_images_each(self, images):
            calls.append("images")
            return list(self._encoder.encode_images(images))

    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": BUCKET},
                                 "object": {"key": "catalog/catalog.jsonl"}}}]}
    message = parse_sqs_record({"messageId": "m-1", "body": json.dumps(event)})
    ingestor = Ingestor(bucket=Bucket(session.client("s3"), BUCKET, images_prefix="images/"),
                        index=index, catalog=CatalogStore(index.client, index.alias),
                        encoder=Counting(encoder, index.model), images_prefix="images/",
                        catalog_prefix="catalog/")
    return ingestor.process([message]), calls


def test_broken_transform_output_is_reported_per_product(stack, catalog, alias, tmp_path,
                                                         opensearch_client):
    ids = catalog_ids(catalog)
    corrupt = ids[20]
    image_of(catalog, corrupt).write_bytes(b"this is not an image")
    opts = options(catalog, tmp_path, max_failed_fraction=0.2)
    report, _ = run(stack, opts)
    assert report.indexed == 39
    assert [(f.id, f.step) for f in report.failures] == [(corrupt, "transform")]
    assert "invalid_image" in report.failures[0].reason

    # Break the outputs the way a bad job could: a lost line, a garbled line, a short vector.
    s3 = stack.client("s3")
    prefix = f"transform/output/{report.run_id}/"

    def edit(change) -> None:
        for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]:
            key = obj["Key"]
            lines = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines()
            s3.put_object(Bucket=BUCKET, Key=key,
                          Body=("\n".join(change(lines)) + "\n").encode())

    missing, garbled, short = ids[3], ids[17], ids[35]
    edit(lambda lines: [ln for ln in lines if json.loads(ln)["id"] != missing])
    edit(lambda lines: ['{"id": "' + garbled + '", "embedding": [0.1, ' if
                           json.loads(ln)["id"] == garbled else ln for ln in lines])

    def shorten(lines: list[str]) -> list[str]:
        out = []
        for line in lines:
            if f'"{short}"' not in line:  # (the garbled line is no longer JSON)
                out.append(line)
                continue
            doc = json.loads(line)
            if doc["id"] == short:
                doc["embedding"] = doc["embedding"][:-1]
            out.append(json.dumps(doc))
        return out

    edit(shorten)
    report, printed = run(stack, options(catalog, tmp_path, max_failed_fraction=0.2,
                                         new_index=True))
    reasons = {f.id: f.reason for f in report.failures}
    assert set(reasons) == {corrupt, missing, garbled, short}
    assert "missing from transform output" in reasons[missing]
    assert "malformed transform output line" in reasons[garbled]
    assert "31 dimensions; the model makes 32" in reasons[short]
    assert report.steps["transform"].status == "skipped"
    assert report.indexed == 36 and report.embedded == 36
    index = OpenSearchIndex(opensearch_client, alias=alias)
    assert index.current_index() == f"{alias}-v2" and index.count() == 36
    assert index.versions() == [f"{alias}-v2"]  # the old version was dropped
    assert index.get(missing) is None and index.get(ids[4]) is not None
    assert f"failed  {garbled}: [transform] malformed" in printed


def test_too_many_failures_are_not_published(stack, catalog, alias, tmp_path, opensearch_client):
    ids = catalog_ids(catalog)
    for pid in ids[:6]:
        image_of(catalog, pid).write_bytes(b"garbage")
    with pytest.raises(BootstrapError, match="NOT published"):
        run(stack, options(catalog, tmp_path))  # 6 of 40 = 15% > 10%
    index = OpenSearchIndex(opensearch_client, alias=alias)
    assert index.current_index() is None  # readers still see what they saw before
    # Nor does the catalog go up: the ingest Lambda would encode it into the live alias.
    assert not stack.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="catalog/").get(
        "Contents")


def test_failed_sagemaker_job_raises_with_its_reason(stack, catalog, alias, tmp_path,
                                                     opensearch_client):
    from moto.sagemaker.models import sagemaker_backends

    reason = "AlgorithmError: CUDA out of memory. See job logs for more information"
    created: list[str] = []

    def fail(**_: Any) -> None:
        job = sagemaker_backends[ACCOUNT][REGION].transform_jobs[created[-1]]
        job.transform_job_status, job.failure_reason = "Failed", reason

    stack.events.register("provide-client-params.sagemaker.CreateTransformJob",
                          lambda params, **_: created.append(params["TransformJobName"]))
    stack.events.register("after-call.sagemaker.CreateTransformJob", fail)
    opts = options(catalog, tmp_path, local_transform=False)
    with pytest.raises(TransformJobFailed) as caught:
        run(stack, opts)
    first = caught.value
    assert first.failure_reason == reason and reason in first.message
    assert first.job_name.startswith("clipsearch-bootstrap-") and first.job_name in first.message
    assert OpenSearchIndex(opensearch_client, alias=alias).current_index() is None
    written = json.loads((tmp_path / "state" / STACK / "report.json").read_text())
    assert [written["steps"][s]["status"] for s in ("upload", "transform", "index")] == [
        "done", "failed", "pending"]

    # A re-run skips the upload and starts a new attempt under a new name.
    with pytest.raises(TransformJobFailed) as again:
        run(stack, opts)
    assert again.value.job_name == f"{first.job_name}-2"
    state = json.loads((tmp_path / "state" / STACK / "state.json").read_text())
    assert set(state["steps"]) == {"upload"}


def test_sagemaker_job_request_runs_and_completes(stack, catalog, alias, tmp_path,
                                                  opensearch_client, tiny_model_artifact):
    """The request the bootstrap sends is executed by LocalTransform acting as the service."""
    from moto.sagemaker.models import sagemaker_backends

    jobs = sagemaker_backends[ACCOUNT][REGION].transform_jobs
    sent: list[dict[str, Any]] = []
    handler = ModelHandler.from_artifact(tiny_model_artifact)

    def capture(params: dict[str, Any], **_: Any) -> None:
        sent.append(params)

    def service(**_: Any) -> None:
        """The job runs (here, at once) and reports InProgress until described once."""
        LocalTransform(stack.client("s3"), handler).run(sent[-1])
        jobs[sent[-1]["TransformJobName"]].transform_job_status = "InProgress"

    def finish_later(**_: Any) -> None:
        if sent:
            jobs[sent[-1]["TransformJobName"]].transform_job_status = "Completed"

    stack.events.register("provide-client-params.sagemaker.CreateTransformJob", capture)
    stack.events.register("after-call.sagemaker.CreateTransformJob", service)
    stack.events.register("after-call.sagemaker.DescribeTransformJob", finish_later)
    sleeps: list[float] = []
    opts = options(catalog, tmp_path, local_transform=False, instance_type="ml.m5.large",
                   instance_count=2, poll_seconds=5)
    try:
        report, _ = run(stack, opts, sleep=sleeps.append)
    finally:
        handler.close()
    (request,) = sent
    assert request["BatchStrategy"] == "MultiRecord" and request["MaxPayloadInMB"] == 6
    assert request["TransformInput"]["ContentType"] == "application/jsonlines"
    assert request["TransformInput"]["SplitType"] == "Line"
    assert request["TransformInput"]["DataSource"]["S3DataSource"] == {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/transform/input/{report.run_id}/"}
    assert request["TransformOutput"]["AssembleWith"] == "Line"
    assert request["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 2}
    assert request["Environment"]["CLIPSEARCH_MAX_REQUEST_BYTES"] == str(6 * 1024 * 1024)
    assert request["ModelName"] == MODEL
    assert sleeps == [5]  # it waited once while the job was InProgress
    assert report.indexed == 40 and report.job_name == request["TransformJobName"]
    assert OpenSearchIndex(opensearch_client, alias=alias).count() == 40


def test_single_record_x_image_mode(stack, catalog, alias, tmp_path, opensearch_client,
                                    encoder):
    ids = catalog_ids(catalog)
    corrupt = ids[1]
    image_of(catalog, corrupt).write_bytes(b"\x89PNG but not really")
    report, _ = run(stack, options(catalog, tmp_path, content_type="x-image"))
    # SingleRecord would fail the whole job on one bad image, so it is caught before.
    assert [(f.id, f.step) for f in report.failures] == [(corrupt, "prepare")]
    assert "not a decodable image" in report.failures[0].reason
    assert report.indexed == 39
    s3 = stack.client("s3")
    out = s3.get_object(Bucket=BUCKET,
                        Key=f"transform/output/{report.run_id}/{ids[0]}.png.out")["Body"].read()
    doc = json.loads(out)
    assert doc["dimension"] == 32 and len(doc["embedding"]) == 32
    index = OpenSearchIndex(opensearch_client, alias=alias)
    vector = encoder.encode_images([image_of(catalog, ids[9]).read_bytes()])[0]
    assert index.knn(vector, 1)[0].product.id == ids[9]


def test_dry_run_writes_nothing(stack, catalog, alias, tmp_path, opensearch_client):
    before = object_versions(stack)
    report, printed = run(stack, options(catalog, tmp_path, dry_run=True))
    assert [s.status for s in report.steps.values()] == ["done"] + ["planned"] * 5
    assert "would upload 80 of 80 objects" in printed
    assert f"would bulk-load 40 products into {alias}-v1" in printed
    assert object_versions(stack) == before
    assert not (tmp_path / "state").exists()
    assert OpenSearchIndex(opensearch_client, alias=alias).versions() == []


def test_resumes_after_opensearch_was_unreachable(stack, catalog, alias, tmp_path,
                                                  opensearch_client):
    with pytest.raises(BootstrapError, match="cannot reach OpenSearch"):
        run(stack, options(catalog, tmp_path, opensearch_url="http://127.0.0.1:9"))
    before = object_versions(stack)
    report, _ = run(stack, options(catalog, tmp_path))
    assert report.steps["upload"].status == "skipped"
    assert report.steps["transform"].status == "skipped"
    assert report.steps["publish"].status == "done" and report.indexed == 40
    # Nothing was uploaded twice; the catalog only goes up once the index is live.
    added = sorted(set(object_versions(stack)) - set(before))
    assert [key for key, _ in added] == ["catalog/catalog.jsonl"]


def test_missing_stack_is_a_clear_error(aws, catalog, tmp_path):
    with pytest.raises(ConfigurationError, match="stack 'Clipsearch-test' does not exist"):
        run(aws, options(catalog, tmp_path))


# --------------------------------------------------------------------------- units


def test_parse_multirecord_attributes_every_problem_to_a_product():
    good = json.dumps({"id": "a", "embedding": [1.0, 0.0]})
    body = "\n".join([good, "", "{cut", json.dumps({"id": "c", "embedding": [0, float("nan")]}),
                      json.dumps({"id": "d", "error": {"error": "invalid_image",
                                                       "message": "cannot identify"}})]) + "\n\n"
    parsed = parse_multirecord(body.encode(), ["a", "b", "c", "d"], "k.out", 2)
    assert set(parsed.vectors) == {"a"}
    reasons = {f.id: f.reason for f in parsed.failures}
    assert reasons["b"].startswith("malformed transform output line 2")  # by position
    assert "NaN" in reasons["c"] and "invalid_image" in reasons["d"]
    # A file with fewer lines than records: the unattributable ones are "missing".
    parsed = parse_multirecord(b"{cut\n", ["a", "b"], "k.out", 2)
    assert {f.reason for f in parsed.failures} == {
        "missing from transform output k.out (1 unreadable line(s) in that file)"}
    assert [f.id for f in parse_multirecord(None, ["x"], "k.out", 2).failures] == ["x"]
    single = parse_single(b'{"embedding": [0, 0]}\n', ["p", "q"], "i.out", 2)
    assert {f.id for f in single.failures} == {"p", "q"}
    assert "all zeros" in single.failures[0].reason


def test_local_transform_packs_requests_within_max_payload(aws, tiny_model_artifact):
    """MultiRecord mini-batches hold whole lines and stay under MaxPayloadInMB."""
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buffer, "PNG")
        lines.append(json.dumps({"id": f"p{i}",
                                 "image": base64.b64encode(buffer.getvalue()).decode()}))
    s3.put_object(Bucket=BUCKET, Key="in/part-0.jsonl", Body="\n".join(lines).encode())
    request = {
        "TransformJobName": "t", "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 1,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                           "S3Uri": f"s3://{BUCKET}/in/"}},
                           "ContentType": "application/jsonlines", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/out", "AssembleWith": "Line",
                            "Accept": "application/jsonlines"},
        "Environment": {"CLIPSEARCH_MAX_REQUEST_BYTES": str(1024 * 1024)},
    }
    handler = ModelHandler.from_artifact(tiny_model_artifact)
    try:
        runner = LocalTransform(s3, handler)
        runner.run(request)
        assert runner.requests == 3  # ~360 KB per record: two fit in 1 MiB
        out = s3.get_object(Bucket=BUCKET, Key="out/part-0.jsonl.out")["Body"].read().decode()
        assert [json.loads(line)["id"] for line in out.splitlines()] == [f"p{i}" for i in range(6)]
        request["MaxPayloadInMB"] = 0  # every record is now too large: the job fails
        with pytest.raises(TransformJobFailed, match="above MaxPayloadInMB"):
            runner.run(request)
    finally:
        handler.close()


def test_outputs_are_found_under_either_documented_nesting(aws):
    """`<out>/<rel>.out` is expected; `<out>/<input prefix>/<rel>.out` is accepted too."""
    from clipsearch.bootstrap.prepare import ImageObject
    from clipsearch.bootstrap.transform import locate_outputs, plan_transform

    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    images = {pid: ImageObject(BUCKET, f"images/{pid}.jpg", 10, "m", "m") for pid in "abc"}
    plan = plan_transform(images, bucket=BUCKET, run_id="r1", mode="jsonlines",
                          records_per_file=1, max_payload_mb=6)
    s3.put_object(Bucket=BUCKET, Key=plan.files[0].output_key, Body=b"x")
    s3.put_object(Bucket=BUCKET, Key=f"{plan.output_prefix}input/r1/part-00001.jsonl.out",
                  Body=b"x")
    located = locate_outputs(s3, plan)
    assert located == {plan.files[0].output_key: plan.files[0].output_key,
                       plan.files[1].output_key:
                           f"{plan.output_prefix}input/r1/part-00001.jsonl.out",
                       plan.files[2].output_key: None}


def test_a_rerun_resumes_waiting_for_a_running_job(stack, catalog, alias, tmp_path,
                                                   opensearch_client, tiny_model_artifact):
    """Interrupted while the job runs: the next run waits for that job, not a new one."""
    from moto.sagemaker.models import sagemaker_backends

    jobs = sagemaker_backends[ACCOUNT][REGION].transform_jobs
    created: list[dict[str, Any]] = []
    stack.events.register("provide-client-params.sagemaker.CreateTransformJob",
                          lambda params, **_: created.append(params))

    def still_running(**_: Any) -> None:
        jobs[created[-1]["TransformJobName"]].transform_job_status = "InProgress"

    stack.events.register("after-call.sagemaker.CreateTransformJob", still_running)
    with pytest.raises(BootstrapError, match="is still InProgress after"):
        run(stack, options(catalog, tmp_path, local_transform=False, transform_timeout_s=1e-6))

    handler = ModelHandler.from_artifact(tiny_model_artifact)
    try:  # the job finishes while nobody watches
        LocalTransform(stack.client("s3"), handler).run(created[-1])
    finally:
        handler.close()
    # SageMaker reports it InProgress once more, then Completed.
    stack.events.register("after-call.sagemaker.DescribeTransformJob", lambda **_: setattr(
        jobs[created[-1]["TransformJobName"]], "transform_job_status", "Completed"))
    report, _ = run(stack, options(catalog, tmp_path, local_transform=False))
    assert len(created) == 1 and report.job_name == created[0]["TransformJobName"]
    assert report.steps["transform"].status == "done"  # waited for, not skipped or restarted
    assert report.steps["upload"].status == "skipped" and report.indexed == 40


# --------------------------------------------------------------------------- accounting


def assert_accounts_for_all(report, total: int) -> None:
    """indexed + skipped + failed == the catalog's size, each product in one place."""
    ids = [f.id for f in report.failures] + [s.id for s in report.skipped]
    assert len(ids) == len(set(ids))
    assert report.products == total
    assert report.indexed + len(report.skipped) + len(report.failures) == total
    assert report.accounted == total


def test_every_product_is_accounted_for_whatever_step_is_skipped(stack, catalog, alias, tmp_path,
                                                                 opensearch_client):
    """A corrupt image, a product without one and an unreadable line among good products,
    through every path: fresh, re-run with state, without state, --force, --dry-run."""
    ids = catalog_ids(catalog)
    corrupt = ids[11]
    image_of(catalog, corrupt).write_bytes(b"\x89PNG but not really")
    with catalog.open("a") as handle:
        handle.write('{"id": "no-image-1", "title": "A product without a photo"}\n')
        handle.write('{"id": "broken-line", "title": \n')
    total = 42

    def check(report, *, indexed: int = 40) -> None:
        assert_accounts_for_all(report, total)
        assert report.indexed == indexed  # no-image-1 too, by its title
        failed = {f.id: f for f in report.failures}
        assert failed[corrupt].step == "transform" and "invalid_image" in failed[corrupt].reason
        assert report.skipped == []
        assert any(f.step == "catalog" and f.id.endswith(":42") for f in report.failures)

    first, printed = run(stack, options(catalog, tmp_path))
    check(first)
    assert f"failed  {corrupt}: [transform]" in printed
    saved = json.loads(first.path.read_text())
    assert saved["accounted"] == total and saved["counts"]["products"] == total
    assert saved["counts"]["indexed"] + saved["counts"]["skipped"] + saved["counts"][
        "failed"] == total

    # Re-run with the state file: every step skipped, the same accounts.
    again, _ = run(stack, options(catalog, tmp_path))
    assert again.steps["index"].status == "skipped"
    check(again)

    # Lost state (another machine): the index step is skipped because the live index
    # holds this catalog; the corrupt product is still reported, from the version's _meta.
    other, printed = run(stack, options(catalog, tmp_path, state_dir=tmp_path / "other"))
    assert other.steps["transform"].status == "skipped"
    assert other.steps["index"].status == "skipped"
    check(other)
    assert f"failed  {corrupt}: [transform]" in printed

    # A version built without recorded failures: the transform output is the witness.
    index = OpenSearchIndex(opensearch_client, alias=alias)
    version = index.current_index()
    mapping = opensearch_client.indices.get_mapping(index=version)[version]["mappings"]
    meta = mapping["_meta"]
    meta["bootstrap"].pop("failures")
    opensearch_client.indices.put_mapping(index=version, body={"_meta": meta})
    witness, _ = run(stack, options(catalog, tmp_path, state_dir=tmp_path / "third"))
    check(witness)

    # A product that vanished from the index without any step failing it is not lost.
    vanished = ids[30]
    opensearch_client.delete(index=version, id=vanished, refresh=True)
    lost, _ = run(stack, options(catalog, tmp_path, state_dir=tmp_path / "fourth"))
    assert_accounts_for_all(lost, total)
    reasons = {f.id: (f.step, f.reason) for f in lost.failures}
    assert reasons[vanished] == ("index", "missing from the index, and no step recorded why")
    assert lost.indexed == 39

    # --force ignores the state file; the live index still answers for every product.
    forced, _ = run(stack, options(catalog, tmp_path, force=True))
    assert_accounts_for_all(forced, total)
    assert {f.id for f in forced.failures} >= {corrupt, vanished}

    # A dry run against the live index says what is there, without writing anything.
    dry, printed = run(stack, options(catalog, tmp_path, dry_run=True,
                                      state_dir=tmp_path / "dry"))
    assert_accounts_for_all(dry, total)
    assert vanished in {f.id for f in dry.failures} and "would index 39" in printed


def test_dry_run_of_a_new_catalog_accounts_for_what_it_would_index(stack, catalog, tmp_path):
    with catalog.open("a") as handle:
        handle.write('{"id": "no-image-1", "title": "A product without a photo"}\n')
    image_of(catalog, catalog_ids(catalog)[0]).unlink()  # fails in prepare
    report, printed = run(stack, options(catalog, tmp_path, dry_run=True))
    assert_accounts_for_all(report, 41)
    assert report.indexed == 40 and "would index 40" in printed  # no-image-1 by its title
    assert [f.step for f in report.failures] == ["prepare"]
