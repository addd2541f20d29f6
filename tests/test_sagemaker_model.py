"""The SageMaker CLIP model end to end: package -> tar -> emulator -> boto3.

Every embedding that comes back over HTTP is compared with the in-process
`ClipEncoder` on the same weights; every bad input must come back as a
client error whose message says what to fix.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from clipsearch import config
from clipsearch.errors import ConfigurationError, InvalidImageError, PayloadTooLargeError
from clipsearch.sagemaker import protocol as wire
from clipsearch.sagemaker.emulator import EndpointEmulator, ModelHandler
from clipsearch.sagemaker.package import FIXED_MTIME, sha256_file
from tests.conftest import png_bytes

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-5


def image_bytes(fmt: str, color=(30, 140, 200), size=(70, 50)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="module")
def runtime(sagemaker_endpoint):
    """boto3 sagemaker-runtime against the emulator, botocore retries off."""
    return boto3.client(
        "sagemaker-runtime", endpoint_url=sagemaker_endpoint.url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
    )


def invoke(runtime, endpoint, body, content_type, accept=None):
    kwargs = {"EndpointName": endpoint.endpoint_name, "Body": body, "ContentType": content_type}
    if accept:
        kwargs["Accept"] = accept
    response = runtime.invoke_endpoint(**kwargs)
    return response["ContentType"], response["Body"].read().decode("utf-8")


def post(endpoint, path, body: bytes, headers: dict[str, str]):
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- packaging


def test_artifact_layout_is_what_the_container_expects(tiny_model_artifact):
    with tarfile.open(tiny_model_artifact, "r:gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        meta = json.load(tar.extractfile("clipsearch-model.json"))
        tokenizer = json.load(tar.extractfile("tokenizer_config.json"))
    assert names == sorted(names)
    for required in ("config.json", "model.safetensors", "clipsearch-model.json",
                     "preprocessor_config.json", "tokenizer.json", "code/inference.py",
                     "code/clipsearch/encoders/clip.py", "code/clipsearch/images.py",
                     "code/clipsearch/sagemaker/protocol.py"):
        assert required in names
    # The container's transformers 4.x reads preprocessor_config.json; 5.x's
    # processor_config.json would be passed to the processor's constructor.
    assert "processor_config.json" not in names
    # Nothing is installed at start: no requirements.txt, no download.
    assert "code/requirements.txt" not in names
    assert tokenizer["model_max_length"] == 77 and "backend" not in tokenizer
    # Nothing from the source tree beyond what the handler needs.
    assert not any("index" in n or "service" in n for n in names if n.startswith("code/"))
    assert all(m.mtime == FIXED_MTIME and m.uid == 0 and m.gid == 0 and not m.uname
               for m in members)
    assert meta["dimension"] == 32 and meta["prompt_template"] == config.DEFAULT_PROMPT_TEMPLATE
    with open(tiny_model_artifact, "rb") as raw:
        header = raw.read(10)
    assert header[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"


@pytest.fixture
def staged(tiny_model_artifact, tmp_path) -> Path:
    with tarfile.open(tiny_model_artifact, "r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path


@pytest.mark.parametrize("change, words", [
    (lambda d: (d / "preprocessor_config.json").rename(d / "processor_config.json"),
     "preprocessor_config.json is missing; processor_config.json (the transformers-5 layout)"),
    (lambda d: (d / "code" / "requirements.txt").write_text("transformers>=5\n"),
     "code/requirements.txt is present"),
    (lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
    (lambda d: (d / "config.json").write_text('{"model_type": "bert"}'),
     "model type 'bert' cannot be served"),
], ids=["transformers-5 processor", "requirements.txt", "no weights", "unknown family"])
def test_packager_refuses_what_the_container_cannot_load(staged, change, words):
    from clipsearch.sagemaker.package import check_container_layout

    check_container_layout(staged)  # the real artifact passes
    change(staged)
    with pytest.raises(ConfigurationError) as error:
        check_container_layout(staged)
    message = str(error.value)
    assert words in message and "2.6.0-transformers4.51.3-cpu" in message
    # It says what to do.
    assert "scripts/package_model.py" in message or "SUPPORTED_MODEL_TYPES" in message


@pytest.fixture(scope="module")
def openclip_staged(tmp_path_factory) -> Path:
    """A Marqo-shaped tiny OpenCLIP model (timm tower, HF tokenizer), staged for SageMaker."""
    from clipsearch.random_models import build_random_model
    from clipsearch.sagemaker.package import stage_model

    model = build_random_model(tmp_path_factory.mktemp("openclip"), family="openclip",
                               preset="tiny-siglip")
    staging = tmp_path_factory.mktemp("openclip-staged")
    stage_model(model, staging)
    return staging


def test_openclip_artifact_vendors_open_clip_and_its_tokenizer(openclip_staged):
    """open_clip is not in the image: the artifact brings it (and timm for a timm tower),
    pure Python only, plus the HF tokenizer the container could not download."""
    import json

    staged = openclip_staged
    meta = json.loads((staged / "clipsearch-model.json").read_text())
    assert meta["family"] == "openclip" and meta["dimension"] == 64
    assert meta["prompt_template"] == "{}"
    assert set(meta["vendored"]) == {"open_clip_torch", "ftfy", "wcwidth", "timm"}
    code = staged / "code"
    for package in ("open_clip", "ftfy", "wcwidth", "timm"):
        assert (code / package / "__init__.py").is_file()
    assert (code / "open_clip" / "bpe_simple_vocab_16e6.txt.gz").is_file()  # package data too
    assert not (code / "open_clip_train").exists()  # training code is not served
    assert not [p for p in code.rglob("*") if p.suffix in (".so", ".pyc")]
    assert {"open_clip_config.json", "open_clip_model.safetensors", "spiece.model",
            "tokenizer_config.json"} <= {p.name for p in staged.iterdir()}
    assert "backend" not in json.loads((staged / "tokenizer_config.json").read_text())


def test_the_bootstrap_reads_family_artifacts_dimension(openclip_staged, tmp_path):
    """The bootstrap sizes the new index version from the artifact's metadata: a 64-d
    model's artifact says 64, whatever the default model's width."""
    from clipsearch.bootstrap.transform import model_from_artifact
    from clipsearch.sagemaker.package import write_deterministic_tar

    artifact = tmp_path / "model.tar.gz"
    write_deterministic_tar(openclip_staged, artifact)
    info = model_from_artifact(artifact)
    assert info.dimension == 64 and info.model_id and info.fingerprint.startswith("sha256:")


@pytest.mark.parametrize("change, words", [
    (lambda d: shutil.rmtree(d / "code" / "open_clip"), "code/open_clip (vendored"),
    (lambda d: shutil.rmtree(d / "code" / "timm"), "code/timm (vendored"),
    (lambda d: (d / "tokenizer_config.json").unlink(), "the Hugging Face tokenizer"),
    (lambda d: (d / "open_clip_model.safetensors").unlink(), "open_clip_model.safetensors is"),
], ids=["no open_clip", "no timm", "no tokenizer", "no weights"])
def test_packager_refuses_an_openclip_artifact_missing_what_it_needs(openclip_staged, tmp_path,
                                                                     change, words):
    from clipsearch.sagemaker.package import check_container_layout

    staged = tmp_path / "staged"
    shutil.copytree(openclip_staged, staged)
    check_container_layout(staged)
    change(staged)
    with pytest.raises(ConfigurationError) as error:
        check_container_layout(staged)
    assert words in str(error.value) and "scripts/package_model.py" in str(error.value)


def _load_script():
    spec = importlib.util.spec_from_file_location("package_model",
                                                  REPO / "scripts" / "package_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_is_deterministic_prints_size_and_sha_and_uploads(
        tiny_clip_dir, tiny_model_artifact, tmp_path, capsys, monkeypatch):
    from moto import mock_aws

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    output = tmp_path / "again" / "model.tar.gz"
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        code = _load_script().main(["--model", str(tiny_clip_dir), "--output", str(output),
                                    "--s3-uri", "s3://models/clip/"])
        head = s3.head_object(Bucket="models", Key="clip/model.tar.gz")
    out = capsys.readouterr().out
    assert code == 0
    digest = sha256_file(output)
    assert digest == sha256_file(tiny_model_artifact), "same inputs must give the same bytes"
    assert f"sha256 {digest}" in out
    assert f"({output.stat().st_size:,} bytes" in out
    assert "uploaded s3://models/clip/model.tar.gz" in out
    assert head["Metadata"]["sha256"] == digest
    assert head["ContentLength"] == output.stat().st_size


def test_script_reports_a_missing_model_dir_without_a_traceback(tmp_path, capsys):
    code = _load_script().main(["--model", str(tmp_path / "nope"), "--output",
                                str(tmp_path / "m.tar.gz")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_vendored_handler_runs_with_only_the_artifact_on_the_path(tiny_model_artifact,
                                                                   encoder, tmp_path):
    """The container has no clipsearch install: the tar's copy alone must suffice."""
    with tarfile.open(tiny_model_artifact, "r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path / "code")!r})
        import clipsearch, inference
        assert clipsearch.__file__.startswith({str(tmp_path)!r}), clipsearch.__file__
        model = inference.model_fn({str(tmp_path)!r})
        request = inference.input_fn('{{"texts": ["red shoe"]}}', "application/json")
        print(inference.output_fn(inference.predict_fn(request, model), "application/json"))
    """)
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(answer["text_embeddings"], encoder.encode_texts(["red shoe"]),
                               atol=ATOL)


# --------------------------------------------------------------------------- round trip


def test_json_texts_and_images_match_the_in_process_encoder(runtime, sagemaker_endpoint,
                                                           encoder, tiny_clip_dir):
    texts = ["red shoe", "blue striped rug", "a lamp"]
    images = [png_bytes((255, 0, 0)), image_bytes("JPEG"), image_bytes("WEBP", (9, 200, 9))]
    body = json.dumps({"texts": texts, "images": [b64(i) for i in images]})
    content_type, text = invoke(runtime, sagemaker_endpoint, body, "application/json")
    answer = json.loads(text)
    assert content_type == "application/json"
    assert answer["model"] == str(tiny_clip_dir) and answer["dimension"] == 32
    np.testing.assert_allclose(answer["text_embeddings"], encoder.encode_texts(texts), atol=ATOL)
    np.testing.assert_allclose(answer["image_embeddings"], encoder.encode_images(images),
                               atol=ATOL)
    norms = np.linalg.norm(np.array(answer["image_embeddings"]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)


def test_prompt_template_is_applied_once_and_can_be_turned_off(runtime, sagemaker_endpoint,
                                                               encoder):
    plain = json.loads(invoke(runtime, sagemaker_endpoint,
                              json.dumps({"texts": ["red shoe"]}), "application/json")[1])
    raw = json.loads(invoke(runtime, sagemaker_endpoint,
                            json.dumps({"texts": ["red shoe"], "apply_template": False}),
                            "application/json")[1])
    np.testing.assert_allclose(plain["text_embeddings"],
                               encoder.encode_texts(["a photo of red shoe"], apply_template=False),
                               atol=ATOL)
    np.testing.assert_allclose(raw["text_embeddings"],
                               encoder.encode_texts(["red shoe"], apply_template=False),
                               atol=ATOL)
    assert plain["image_embeddings"] == []


@pytest.mark.parametrize("content_type,fmt", [
    ("application/x-image", "PNG"), ("image/jpeg", "JPEG"), ("image/png", "PNG"),
    ("image/webp", "WEBP"),
])
def test_single_image_content_types_answer_one_json_line(runtime, sagemaker_endpoint, encoder,
                                                         content_type, fmt):
    data = image_bytes(fmt, (200, 60, 10))
    _, text = invoke(runtime, sagemaker_endpoint, data, content_type)
    assert text.endswith("\n") and text.count("\n") == 1
    answer = json.loads(text)
    assert answer["dimension"] == 32
    np.testing.assert_allclose([answer["embedding"]], encoder.encode_images([data]), atol=ATOL)


def test_jsonlines_keeps_ids_and_order_and_isolates_bad_records(runtime, sagemaker_endpoint,
                                                                encoder):
    good = [image_bytes("JPEG", (i * 40, 90, 200 - i * 30)) for i in range(4)]
    lines = [
        {"id": "sku-1", "image": b64(good[0])},
        {"id": 2, "text": "green chair"},
        {"id": "sku-3", "image": b64(b"this is not an image")},
        {"id": "sku-4", "image": b64(good[1])},
        {"id": "sku-5"},
        {"id": "sku-6", "image": b64(good[2])},
        {"id": "sku-7", "text": "wooden table"},
    ]
    body = "\n".join(json.dumps(x) for x in lines[:4]) + "\n\n" + \
        "\n".join(json.dumps(x) for x in lines[4:]) + "\n"
    content_type, text = invoke(runtime, sagemaker_endpoint, body, "application/jsonlines",
                                accept="application/jsonlines")
    assert content_type == "application/jsonlines"
    out = [json.loads(line) for line in text.splitlines()]
    assert [o["id"] for o in out] == [x["id"] for x in lines]
    assert out[2]["error"]["error"] == "invalid_image"
    assert "not a readable image" in out[2]["error"]["message"]
    assert out[4]["error"]["error"] == "invalid_request"
    assert '"text" and "image"' in out[4]["error"]["message"]
    images = encoder.encode_images([good[0], good[1], good[2]])
    np.testing.assert_allclose([out[0]["embedding"], out[3]["embedding"], out[5]["embedding"]],
                               images, atol=ATOL)
    np.testing.assert_allclose([out[1]["embedding"], out[6]["embedding"]],
                               encoder.encode_texts(["green chair", "wooden table"]), atol=ATOL)


def test_batch_transform_style_outputs_parse(runtime, sagemaker_endpoint, tmp_path):
    """SingleRecord writes one `<input>.out` per file; MultiRecord joins mini-batches by line."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        (inputs / f"p{i}.jpg").write_bytes(image_bytes("JPEG", (i * 80, 20, 20)))
    for path in sorted(inputs.iterdir()):
        _, text = invoke(runtime, sagemaker_endpoint, path.read_bytes(), "application/x-image",
                         accept="application/jsonlines")
        (tmp_path / f"{path.name}.out").write_text(text)
    for out in sorted(tmp_path.glob("*.out")):
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(records) == 1 and len(records[0]["embedding"]) == 32

    records = [{"id": f"p{i}", "image": b64((inputs / f"p{i}.jpg").read_bytes())}
               for i in range(3)]
    batches = [records[:2], records[2:]]  # how SageMaker splits by MaxPayloadInMB
    assembled = "".join(
        invoke(runtime, sagemaker_endpoint, "".join(json.dumps(r) + "\n" for r in batch),
               "application/jsonlines", accept="application/jsonlines")[1]
        for batch in batches)
    parsed = [json.loads(line) for line in assembled.splitlines()]
    assert [p["id"] for p in parsed] == ["p0", "p1", "p2"]
    assert all(len(p["embedding"]) == 32 for p in parsed)


# --------------------------------------------------------------------------- bad input

BAD_REQUESTS = [
    ("non-image bytes", b"GIF89a but not really", "application/x-image", None,
     "invalid_image", "not a readable image"),
    ("non-image base64", json.dumps({"images": [b64(b"hello")]}), "application/json", None,
     "invalid_image", "not a readable image"),
    ("bad base64", json.dumps({"images": ["***"]}), "application/json", None,
     "invalid_request", "not valid base64"),
    ("wrong content type", b"a,b\n1,2\n", "text/csv", None,
     "unsupported_content_type", "unsupported Content-Type 'text/csv'"),
    ("empty texts", json.dumps({"texts": []}), "application/json", None,
     "invalid_request", "texts is empty"),
    ("empty images", json.dumps({"images": []}), "application/json", None,
     "invalid_request", "images is empty"),
    ("both lists empty", json.dumps({"texts": [], "images": []}), "application/json", None,
     "invalid_request", "texts is empty"),
    ("missing keys", json.dumps({}), "application/json", None,
     "invalid_request", "neither key"),
    ("misspelt key", json.dumps({"text": ["red"]}), "application/json", None,
     "invalid_request", "unknown key 'text'"),
    ("texts not a list", json.dumps({"texts": "red shoe"}), "application/json", None,
     "invalid_request", "texts must be a list of strings, not str"),
    ("blank text", json.dumps({"texts": ["ok", "  "]}), "application/json", None,
     "invalid_request", "non-empty string"),
    ("invalid JSON", b'{"texts": [', "application/json", None,
     "invalid_request", "not valid JSON"),
    ("JSON array", b'["red"]', "application/json", None,
     "invalid_request", "must be a JSON object"),
    ("empty body", b"", "application/x-image", None, "invalid_request", "body is empty"),
    ("blank lines only", b"\n \n", "application/jsonlines", None,
     "invalid_request", "request body is empty"),
    ("too many items", json.dumps({"texts": ["a"] * 1025}), "application/json", None,
     "too_many_items", "1025 items"),
    ("unsupported accept", json.dumps({"texts": ["red"]}), "application/json", "text/csv",
     "unsupported_accept", "unsupported Accept 'text/csv'"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_is_a_client_error_with_a_clear_message(runtime, sagemaker_endpoint, case):
    _, body, content_type, accept, code, words = case
    with pytest.raises(ClientError) as info:
        invoke(runtime, sagemaker_endpoint, body, content_type, accept)
    response = info.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    error = wire.decode_client_error(response["OriginalMessage"])
    assert error is not None and 400 <= error.status < 500
    assert error.code == code
    assert words in error.message
    # The runtime's own message quotes the model's, as AWS does.
    assert "Received client error (400) from primary" in response["Error"]["Message"]
    assert wire.decode_client_error(response["Error"]["Message"]).code == code


def test_oversize_payloads_are_refused_by_the_runtime_and_by_the_handler(runtime,
                                                                         sagemaker_endpoint):
    big = json.dumps({"texts": ["x" * (wire.SERVERLESS_MAX_PAYLOAD + 10)]})
    with pytest.raises(ClientError) as info:
        invoke(runtime, sagemaker_endpoint, big, "application/json")
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert "exceeds" in info.value.response["Error"]["Message"]
    # Past the runtime (batch transform has no 4 MB gate), the handler's own cap holds.
    bigger = json.dumps({"texts": ["x" * (config.MAX_REQUEST_BYTES + 10)]}).encode()
    status, payload = post(sagemaker_endpoint, "/invocations", bigger,
                           {"Content-Type": "application/json"})
    assert status == 400
    error = wire.decode_client_error(payload.decode())
    assert isinstance(error, PayloadTooLargeError) and error.status == 413
    assert "limit is 4,194,304" in error.message


def test_container_routes_speak_the_model_server_contract(sagemaker_endpoint):
    conn = http.client.HTTPConnection("127.0.0.1", sagemaker_endpoint.port, timeout=10)
    conn.request("GET", "/ping")
    ping = conn.getresponse()
    assert ping.status == 200 and json.loads(ping.read()) == {"status": "Healthy"}
    conn.close()
    status, body = post(sagemaker_endpoint, "/invocations", b'{"texts": ["red"]}',
                        {"Content-Type": "application/json", "Accept": "*/*"})
    assert status == 200 and len(json.loads(body)["text_embeddings"][0]) == 32
    status, body = post(sagemaker_endpoint, "/invocations", b"nope",
                        {"Content-Type": "image/png"})
    doc = json.loads(body)
    assert status == 400 and doc["code"] == 400 and doc["type"] == "InternalServerException"
    assert isinstance(wire.decode_client_error(doc["message"]), InvalidImageError)
    status, body = post(sagemaker_endpoint, "/invocations", b'{"texts": ["red"]}', {})
    assert status == 400 and "Content-Type is missing" in json.loads(body)["message"]


def test_unknown_endpoint_name_is_a_validation_error(runtime, sagemaker_endpoint):
    with pytest.raises(ClientError) as info:
        runtime.invoke_endpoint(EndpointName="other", Body=b"{}", ContentType="application/json")
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint other of account" in info.value.response["Error"]["Message"]


# --------------------------------------------------------------------------- emulator rules


def _write_handler(root: Path, source: str) -> Path:
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(textwrap.dedent(source))
    return root


def test_emulator_follows_the_toolkit_calling_rules(tmp_path):
    """Context only for functions that take it; only exact application/json becomes str."""
    root = _write_handler(tmp_path, """
        def model_fn(model_dir):
            return {"dir": model_dir}

        def input_fn(data, content_type, context):
            if data == b"boom":
                raise RuntimeError("boom <failed> it's")
            return {"type": type(data).__name__, "ct": content_type,
                    "ctx": sorted(context.system_properties)}

        def predict_fn(data, model):
            return data

        def output_fn(prediction, accept):
            import json
            return json.dumps(dict(prediction, accept=accept))
    """)
    handler = ModelHandler(root)
    ok = handler.invoke(b'{"a": 1}', "application/json", None)
    assert ok.status == 200 and ok.content_type == "application/json"
    assert json.loads(ok.body) == {"type": "str", "ct": "application/json",
                                   "ctx": ["batch_size", "gpu_id", "model_dir"],
                                   "accept": "application/json"}
    params = json.loads(handler.invoke(b"{}", "application/json; charset=utf-8", "*/*").body)
    assert params["type"] == "bytes", "the toolkit decodes only the exact JSON content type"
    failed = handler.invoke(b"boom", "application/octet-stream", None)
    assert failed.status == 400
    assert b"\\u003cfailed\\u003e it\\u0027s" in failed.body  # Gson's escaping, as in AWS
    assert json.loads(failed.body)["message"] == "boom <failed> it's"


def test_emulator_refuses_handlers_the_toolkit_refuses(tmp_path):
    root = _write_handler(tmp_path, """
        def model_fn(model_dir): return None
        def transform_fn(model, data, content_type, accept): return data
        def input_fn(data, content_type): return data
    """)
    with pytest.raises(ConfigurationError, match="transform_fn together"):
        ModelHandler(root)
    with pytest.raises(ConfigurationError, match="does not exist"):
        ModelHandler.from_artifact(tmp_path / "missing.tar.gz")


def test_model_serve_command_serves_the_artifact(tiny_model_artifact, tmp_path):
    """`clipsearch model serve ARTIFACT --port 0` prints where it listens and answers."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsearch.cli", "model", "serve", str(tiny_model_artifact),
         "--port", "0", "--endpoint-name", "shop-clip"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        url = None
        for line in proc.stdout:
            if "listening on" in line:
                url = line.rsplit(" ", 1)[-1].strip()
                break
        assert url, proc.stderr.read() if proc.poll() is not None else "no listening line"
        client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id="t", aws_secret_access_key="t")
        response = client.invoke_endpoint(EndpointName="shop-clip", Body=b'{"texts": ["hat"]}',
                                          ContentType="application/json")
        assert len(json.loads(response["Body"].read())["text_embeddings"][0]) == 32
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        proc.stdout.close()
        proc.stderr.close()


def test_model_serve_reports_a_missing_artifact(capsys):
    from clipsearch.cli import main

    assert main(["model", "serve", "/nonexistent/model.tar.gz"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_gzip_stream_is_readable_by_other_tools(tiny_model_artifact):
    """A plain gunzip + tar reader (what SageMaker uses) sees the same members."""
    with gzip.open(tiny_model_artifact, "rb") as gz:
        data = gz.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        assert "code/inference.py" in tar.getnames()


def test_emulator_can_host_two_artifacts_in_one_process(tiny_model_artifact):
    """Handlers load under unique module names, so two endpoints never collide."""
    first = EndpointEmulator(ModelHandler.from_artifact(tiny_model_artifact),
                             endpoint_name="a").start()
    second = EndpointEmulator(ModelHandler.from_artifact(tiny_model_artifact),
                              endpoint_name="b").start()
    try:
        assert first.handler.module is not second.handler.module
        for emulator in (first, second):
            status, _ = post(emulator, "/endpoints/" + emulator.endpoint_name + "/invocations",
                             b'{"texts": ["x"]}', {"Content-Type": "application/json"})
            assert status == 200
    finally:
        first.stop()
        second.stop()


# --------------------------------------------------------------------------- image pipeline


@pytest.mark.parametrize("size", [(224, 224), (500, 333), (97, 300), (40, 30), (1001, 67)])
@pytest.mark.parametrize("edge", [64, 224])
def test_split_preprocessing_equals_the_processor(sagemaker_endpoint, size, edge):
    """PIL resize/crop on the pool + tensor normalisation == the processor's pixel_values."""
    from PIL import Image

    module = sagemaker_endpoint.handler.module
    processor = _pil_clip_image_processor()(size={"shortest_edge": edge},
                                   crop_size={"height": edge, "width": edge})
    plan = module.PixelPlan.from_processor(processor)
    assert plan is not None
    rng = np.random.default_rng(size[0])
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    expected = processor(images=[image], return_tensors="pt")["pixel_values"].numpy()
    got = plan.pixels(np.stack([plan.crop(image)]), "cpu").numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)


def _pil_clip_image_processor():
    """CLIP's PIL image processor: transformers 5 names it CLIPImageProcessorPil (its
    CLIPImageProcessor is the torchvision one when torchvision is installed)."""
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def test_processor_configurations_the_plan_does_not_mirror_get_no_plan(sagemaker_endpoint):
    CLIPImageProcessor = _pil_clip_image_processor()
    module = sagemaker_endpoint.handler.module
    assert module.PixelPlan.from_processor(CLIPImageProcessor(do_center_crop=False)) is None
    assert module.PixelPlan.from_processor(
        CLIPImageProcessor(size={"height": 224, "width": 224})) is None


def _many_images(n: int) -> list[bytes]:
    rng = np.random.default_rng(3)
    return [image_bytes("PNG", tuple(int(c) for c in rng.integers(0, 256, 3)),
                        size=(30 + i % 20, 50 - i % 15)) for i in range(n)]


def test_many_images_span_several_forward_chunks_in_order(runtime, sagemaker_endpoint,
                                                          encoder):
    """70 images > the handler's batch of 32: decoding runs a chunk ahead, order holds."""
    pics = _many_images(70)
    pics[5] = b"broken"
    pics[40] = b"\xff\xd8\xff broken jpeg"
    lines = "".join(json.dumps({"id": i, "image": b64(p)}) + "\n" for i, p in enumerate(pics))
    _, text = invoke(runtime, sagemaker_endpoint, lines, "application/jsonlines")
    out = [json.loads(line) for line in text.splitlines()]
    assert [o["id"] for o in out] == list(range(70))
    assert {i for i, o in enumerate(out) if "error" in o} == {5, 40}
    good = [i for i in range(70) if i not in (5, 40)]
    np.testing.assert_allclose([out[i]["embedding"] for i in good],
                               encoder.encode_images([pics[i] for i in good]), atol=ATOL)
    with pytest.raises(ClientError) as info:
        invoke(runtime, sagemaker_endpoint, json.dumps({"images": [b64(p) for p in pics]}),
               "application/json")
    error = wire.decode_client_error(info.value.response["OriginalMessage"])
    assert isinstance(error, InvalidImageError) and error.field == "images[5]"


def test_processor_fallback_and_stdlib_json_give_the_same_vectors(sagemaker_endpoint, encoder,
                                                                  monkeypatch):
    """Without the split plan or orjson the answers still match, rounded to 7 decimals."""
    handler = sagemaker_endpoint.handler
    monkeypatch.setattr(handler.model, "plan", None)
    monkeypatch.setattr(handler.module, "orjson", None)
    pics = _many_images(3)
    result = handler.invoke(json.dumps({"images": [b64(p) for p in pics], "texts": ["hat"]})
                            .encode(), "application/json", None)
    answer = json.loads(result.body)
    np.testing.assert_allclose(answer["image_embeddings"], encoder.encode_images(pics),
                               atol=ATOL)
    np.testing.assert_allclose(answer["text_embeddings"], encoder.encode_texts(["hat"]),
                               atol=ATOL)
    assert all(round(x, 7) == x for x in answer["image_embeddings"][0])


def test_jpeg_draft_mode_is_close_but_opt_in(sagemaker_endpoint, encoder, monkeypatch):
    """Draft decoding (GPU throughput option) stays near the exact path for big JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(11)
    x = np.linspace(0, 255, 640)
    base = x[None, :, None] * np.array([1.0, 0.4, 0.1]) + x[:480, None, None] * 0.5
    photo = np.clip(base + rng.normal(0, 8, (480, 640, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    handler = sagemaker_endpoint.handler
    assert handler.model.jpeg_draft is False, "draft mode must be off by default"
    monkeypatch.setattr(handler.model, "jpeg_draft", True)
    drafted = json.loads(handler.invoke(jpeg, "image/jpeg", None).body)["embedding"]
    exact = encoder.encode_images([jpeg])[0]
    cosine = float(np.dot(drafted, exact))
    assert 0.98 < cosine < 1 - 1e-7, "draft decoding was not used"
    png = image_bytes("PNG")
    same = json.loads(handler.invoke(png, "image/png", None).body)["embedding"]
    np.testing.assert_allclose(same, encoder.encode_images([png])[0], atol=ATOL)
