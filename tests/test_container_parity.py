"""The packaged artifact, served by the SageMaker container's own software.

The emulator tests run our handler in our own environment; these run it in
the container's: the parity virtualenv (`scripts/parity_env.py`, the image's
exact torch, transformers, inference toolkit, sagemaker-inference and
multi-model-server on Python 3.12), started through the toolkit's entry
point, the real Java model server and its Python worker, with the artifact
laid out as SageMaker lays out /opt/ml/model. Requests go over HTTP on
loopback, with the environment of the model and of a batch transform.

One serving stack per model family per session (starting one costs ~20-60 s),
each on the family's tiny random model built through its real loading path:
CLIP; SigLIP (SentencePiece tokenizer, read by the image's sentencepiece and
protobuf); SigLIP 2 NaFlex (Gemma's tokenizer.json through 4.51's
GemmaTokenizerFast, Siglip2Model); OpenCLIP in Marqo-Ecommerce's shape (timm
vision tower, SigLIP text tower with a Hugging Face tokenizer), served with
open_clip, timm, ftfy and wcwidth vendored in the artifact. The other tiny
presets (fixed-resolution SigLIP 2, OpenCLIP's CLIP-BPE ViT) run the handler
in the container's Python without the model server, which costs seconds
instead of a stack start.

Skips where the parity environment is not built (`scripts/setup.sh` builds
it), unless CLIPSEARCH_REQUIRE_PARITY=1 (CI), where it fails instead.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from clipsearch.bootstrap.transform import MIB, jsonlines_body, transform_request
from clipsearch.sagemaker import parity
from clipsearch.sagemaker import protocol as wire
from clipsearch.sagemaker.package import (
    build_artifact,
    describe_artifact,
    stage_model,
    write_deterministic_tar,
)

REPO = Path(__file__).resolve().parents[1]
# Embeddings must equal the dev environment's (different torch/transformers
# builds): measured differences are ~1e-7 (float32 rounding), so 1e-4 leaves
# room for other CPUs' kernels while any preprocessing or tokenization slip
# (a missing BOS, a shifted pixel) is far above it.
TOLERANCE = 1e-4
# The batch transform's MaxPayloadInMB for the session stack: above the model
# server's default request limit (6.5 MB), so a request that size only passes
# because the stack honours SAGEMAKER_MAX_PAYLOAD_IN_MB as the container does.
TRANSFORM_MAX_PAYLOAD_MB = 10

# family -> the random_models preset served by a real stack.
FAMILIES = {
    "clip": "tiny",
    "siglip": "tiny",
    "siglip2": "tiny-naflex",
    "openclip": "tiny-siglip",
}
# Further presets whose handler runs in the container's Python (no model server).
IN_PROCESS = [("siglip2", "tiny"), ("openclip", "tiny")]
# Query texts in five scripts: every tokenizer must read them as the local one does.
TEXTS = ["red shoe", "Wooden TABLE", "zapato rojo de cuero", "roter Lederschuh", "赤い革の靴",
         "حذاء جلد أحمر"]


def png(color=(30, 140, 200), size=(70, 50), noise: bool = False) -> bytes:
    from PIL import Image

    if noise:  # incompressible: a big body from few images
        pixels = np.random.default_rng(sum(color)).integers(0, 256, (*size[::-1], 3), np.uint8)
        image = Image.fromarray(pixels, "RGB")
    else:
        image = Image.new("RGB", size, color)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- environment


@pytest.fixture(scope="session")
def parity_venv() -> Path:
    """The built parity virtualenv, or a skip (a failure under CLIPSEARCH_REQUIRE_PARITY=1)."""
    required = os.environ.get("CLIPSEARCH_REQUIRE_PARITY") == "1"
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "parity_env.py"), "--check"],
                           capture_output=True, text=True)
    problem = None
    if check.returncode != 0:
        problem = (f"the container-parity environment is not built ({check.stdout.strip()}); "
                   "run scripts/setup.sh or scripts/parity_env.py")
    else:
        import shutil

        if shutil.which("java") is None:
            problem = "the container-parity tests need Java (multi-model-server) on PATH"
    if problem:
        if required:
            pytest.fail(problem)
        pytest.skip(problem)
    return Path(check.stdout.strip())


def _transform_environment() -> dict[str, str]:
    """What a batch transform adds to the model's environment (see transform.py)."""
    request = transform_request(
        _plan(), job_name="parity", model_name="parity", instance_type="ml.m5.large",
        instance_count=1, max_payload_mb=TRANSFORM_MAX_PAYLOAD_MB)
    return {**request["Environment"],
            # SageMaker passes the job's MaxPayloadInMB to the container; the
            # toolkit turns it into the model server's max_request_size.
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(request["MaxPayloadInMB"])}


def _plan():
    from clipsearch.bootstrap.transform import TransformPlan

    return TransformPlan(run_id="parity", mode="jsonlines", bucket="b", input_prefix="in/",
                         output_prefix="out/")


@dataclass
class Served:
    family: str
    model_dir: Path
    artifact: Path
    stack: parity.ServingStack
    encoder: object


@pytest.fixture(scope="session", params=sorted(FAMILIES))
def served(request, parity_venv, tmp_path_factory):
    """The family's tiny model, packaged by the real packager, served by the real stack."""
    from clipsearch.encoders import load_encoder
    from clipsearch.random_models import build_random_model

    family, preset = request.param, FAMILIES[request.param]
    model_dir = build_random_model(tmp_path_factory.mktemp(f"{family}-{preset}"), family=family,
                                   preset=preset)
    artifact = build_artifact(model_dir, tmp_path_factory.mktemp("parity") / "model.tar.gz").path
    stack = parity.start(artifact, tmp_path_factory.mktemp(f"serve-{family}"),
                         parity_venv, environment=_transform_environment())
    encoder = load_encoder(str(model_dir), device="cpu", dtype="float32")
    assert encoder.family == family
    yield Served(family, model_dir, artifact, stack, encoder)
    stack.stop()


def close(got, expected) -> None:
    got = np.asarray(got, dtype=np.float32)
    assert got.shape == np.shape(expected)
    assert float(np.abs(got - expected).max()) < TOLERANCE


# --------------------------------------------------------------------------- serving


def test_the_worker_loaded_the_model_and_ping_is_healthy(served):
    ping = served.stack.ping()
    assert ping.status == 200 and "Healthy" in ping.body.decode()
    assert served.stack.ready_s is not None  # an invocation succeeded, not just /ping
    log = served.stack.log()
    # It really ran our handler inside the toolkit's worker, with nothing installed.
    assert "Inference script implementation found" in log
    assert "requirements.txt" not in log and "pip install" not in log
    assert parity.WORKER_DIED not in log


def test_json_texts_images_and_both(served):
    texts = TEXTS
    images = [png((200, 30, 30)), png((30, 200, 30), (40, 90))]
    answer = served.stack.invoke(json.dumps({"texts": texts}).encode(), wire.JSON)
    assert answer.status == 200, answer.body
    close(answer.json()["text_embeddings"], served.encoder.encode_texts(texts))

    answer = served.stack.invoke(json.dumps({"images": [b64(i) for i in images]}).encode(),
                                 wire.JSON)
    assert answer.status == 200, answer.body
    close(answer.json()["image_embeddings"], served.encoder.encode_images(images))

    answer = served.stack.invoke(
        json.dumps({"texts": texts, "images": [b64(images[0])]}).encode(), wire.JSON)
    assert answer.status == 200, answer.body
    doc = answer.json()
    assert doc["dimension"] == served.encoder.dimension
    close(doc["text_embeddings"], served.encoder.encode_texts(texts))
    # Without the template: what the bootstrap sends for product titles.
    answer = served.stack.invoke(json.dumps({"texts": texts[:2], "apply_template": False})
                                 .encode(), wire.JSON)
    assert answer.status == 200, answer.body
    close(answer.json()["text_embeddings"],
          served.encoder.encode_texts(texts[:2], apply_template=False))
    close(doc["image_embeddings"], served.encoder.encode_images(images[:1]))


def test_x_image_answers_one_json_line(served):
    image = png((10, 10, 240), (64, 64))
    answer = served.stack.invoke(image, wire.X_IMAGE, accept=wire.JSONLINES)
    assert answer.status == 200, answer.body
    lines = answer.body.decode().splitlines()
    assert len(lines) == 1
    close([json.loads(lines[0])["embedding"]], served.encoder.encode_images([image]))


def test_jsonlines_multirecord_as_a_batch_transform_sends_it(served):
    """A body above the server's default limit passes thanks to the transform's environment.

    The body is built by the bootstrap's own `jsonlines_body`; one corrupt
    record fails alone and the others keep their ids, order and vectors.
    """
    images = {f"sku-{i}": png((i * 40 % 256, 90, 160), (700, 500), noise=True)
              for i in range(6)}
    images["sku-bad"] = b"this is not an image"
    ids = ("sku-0", "sku-1", "sku-bad", *(f"sku-{i}" for i in range(2, 6)))
    body = jsonlines_body(ids, images.__getitem__)
    assert 6.5 * 1e6 < len(body) < TRANSFORM_MAX_PAYLOAD_MB * MIB, len(body)
    answer = served.stack.invoke(body, wire.JSONLINES, accept=wire.JSONLINES)
    assert answer.status == 200, answer.body[:500]
    out = [json.loads(line) for line in answer.body.decode().splitlines()]
    assert [o["id"] for o in out] == list(ids)
    assert out[2]["error"]["error"] == "invalid_image"
    good = [i for i in ids if i != "sku-bad"]
    close([o["embedding"] for o in out if o["id"] != "sku-bad"],
          served.encoder.encode_images([images[i] for i in good]))


def test_a_corrupt_image_is_a_4xx_with_our_error_json(served):
    for body, content_type in ((b"GIF89a but not really", wire.X_IMAGE),
                               (json.dumps({"images": [b64(b"hello")]}).encode(), wire.JSON)):
        answer = served.stack.invoke(body, content_type)
        assert 400 <= answer.status < 500, (answer.status, answer.body)
        # The model server's JSON body carries our tagged error.
        assert answer.json()["code"] == answer.status
        error = wire.decode_client_error(answer.body.decode())
        assert error is not None, answer.body
        assert error.code == "invalid_image" and "not a readable image" in error.message


# --------------------------------------------------------------------------- it can fail


def test_the_check_fails_for_an_artifact_the_container_cannot_load(parity_venv, tiny_clip_dir,
                                                                  tmp_path):
    """Yesterday's artifact: the transformers-5 processor layout (and requirements.txt gone,
    so the failure is the layout's, not a download's). The stack must not become ready."""
    from clipsearch.encoders.clip import ClipEncoder

    staging = tmp_path / "staging"
    stage_model(tiny_clip_dir, staging)
    ClipEncoder(str(tiny_clip_dir), device="cpu").processor.save_pretrained(staging)
    (staging / "preprocessor_config.json").unlink()
    artifact = tmp_path / "v5-layout.tar.gz"
    write_deterministic_tar(staging, artifact)
    with pytest.raises(parity.ServingStackError) as error:
        parity.start(artifact, tmp_path / "serve", parity_venv, timeout=180)
    assert "preprocessor_config.json" in str(error.value)


def test_the_artifact_extracts_as_sagemaker_lays_it_out(served):
    model_dir = served.stack.model_dir
    assert (model_dir / "code" / "inference.py").is_file()
    layout = ("open_clip_config.json" if served.family == "openclip"
              else "preprocessor_config.json")
    assert (model_dir / layout).is_file()
    with tarfile.open(served.artifact) as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
    assert names == {p.relative_to(model_dir).as_posix()
                     for p in model_dir.rglob("*") if p.is_file()}


def test_the_artifact_records_family_dimension_and_template(served):
    """What the bootstrap and the stack read from the artifact is what the model makes."""
    meta = describe_artifact(served.artifact)
    assert meta["family"] == served.family
    assert meta["dimension"] == served.encoder.dimension
    assert meta["prompt_template"] == served.encoder.prompt_template
    if served.family == "openclip":  # open_clip and timm came with it, at our versions
        from importlib.metadata import version

        assert meta["vendored"] == {name: version(name) for name in
                                    ("open_clip_torch", "ftfy", "wcwidth", "timm")}
    assert f"({served.encoder.label}, dimension {served.encoder.dimension})" in \
        served.stack.log()


@pytest.mark.parametrize("family, preset", IN_PROCESS, ids=[f"{f}-{p}" for f, p in IN_PROCESS])
def test_other_presets_load_in_the_containers_python(family, preset, parity_venv, tmp_path):
    """The handler in the parity venv's Python, transformers and torch, with only the
    artifact's code/ on the path, gives the local encoder's vectors."""
    from clipsearch.encoders import load_encoder
    from clipsearch.random_models import build_random_model

    model_dir = build_random_model(tmp_path / "model", family=family, preset=preset)
    artifact = build_artifact(model_dir, tmp_path / "model.tar.gz").path
    images = [png((200, 30, 30)), png((30, 200, 30), (40, 90)), png(noise=True, size=(300, 200))]
    body = json.dumps({"texts": TEXTS, "images": [b64(i) for i in images]}).encode()
    doc = json.loads(parity.invoke_in_process(artifact, tmp_path / "root", parity_venv, body,
                                              wire.JSON))
    encoder = load_encoder(str(model_dir), device="cpu", dtype="float32")
    assert encoder.family == family and doc["dimension"] == encoder.dimension
    close(doc["text_embeddings"], encoder.encode_texts(TEXTS))
    close(doc["image_embeddings"], encoder.encode_images(images))
