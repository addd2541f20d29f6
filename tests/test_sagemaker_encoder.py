"""SageMakerEncoder against the endpoint emulator (real HTTP, real botocore parsing)
and against botocore's Stubber for errors the emulator does not produce."""

from __future__ import annotations

import io
import json

import boto3
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from clipsearch.encoders import Encoder
from clipsearch.encoders.sagemaker import EndpointModelError, SageMakerEncoder
from clipsearch.errors import (
    ConfigurationError,
    InvalidImageError,
    ModelMismatchError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    ValidationError,
)

ATOL = 1e-5


@pytest.fixture
def endpoint(sagemaker_endpoint, monkeypatch):
    """The shared emulator with fresh faults and request log; fake credentials."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    sagemaker_endpoint.clear_faults()
    sagemaker_endpoint.requests.clear()
    yield sagemaker_endpoint
    sagemaker_endpoint.clear_faults()


class Sleeps(list):
    """Records backoff delays instead of sleeping and advances a fake clock by them,
    so retry tests take no time yet the time budget still counts the waits."""

    now = 0.0

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def make_encoder(endpoint, **kwargs) -> tuple[SageMakerEncoder, Sleeps]:
    sleeps = Sleeps()
    kwargs.setdefault("jitter", lambda: 1.0)
    encoder = SageMakerEncoder(endpoint.endpoint_name, endpoint_url=endpoint.url,
                               region_name="us-east-1", sleep=sleeps, clock=sleeps.clock,
                               **kwargs)
    return encoder, sleeps


def images(n: int) -> list[bytes]:
    """Noisy PNGs of about 3.7 KB (5 KB in base64): solid colours would be 100 bytes."""
    from PIL import Image

    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, size=(30, 40 + i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def runtime_requests(endpoint):
    return [r for r in endpoint.requests if r.path.startswith("/endpoints/")]


def test_matches_the_in_process_encoder_and_learns_model_and_dimension(endpoint, encoder):
    remote, _ = make_encoder(endpoint)
    assert isinstance(remote, Encoder)
    assert remote.model_id == encoder.model_id  # probed from the endpoint
    assert remote.dimension == 32
    texts = ["red shoe", "blue boot", "wooden table"]
    np.testing.assert_allclose(remote.encode_texts(texts), encoder.encode_texts(texts), atol=ATOL)
    np.testing.assert_allclose(
        remote.encode_texts(texts, apply_template=False),
        encoder.encode_texts(texts, apply_template=False), atol=ATOL)
    pics = images(5)
    from PIL import Image

    pil = Image.open(io.BytesIO(pics[0]))
    got = remote.encode_images([*pics, pil])
    assert got.dtype == np.float32 and got.shape == (6, 32)
    np.testing.assert_allclose(got, encoder.encode_images([*pics, pics[0]]), atol=ATOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    assert remote.encode_texts([]).shape == (0, 32)


def test_batches_stay_under_the_payload_and_item_limits(endpoint, encoder):
    pics = images(12)
    remote, _ = make_encoder(endpoint, max_payload_bytes=12_000, max_items=4)
    got = remote.encode_images(pics)
    np.testing.assert_allclose(got, encoder.encode_images(pics), atol=ATOL)
    sent = runtime_requests(endpoint)
    assert len(sent) >= 6, "at most two ~5 KB base64 images fit a 12,000-byte request"
    assert all(r.size <= 12_000 and r.content_type == "application/json" for r in sent)
    endpoint.requests.clear()
    texts = [f"item {i}" for i in range(10)]
    np.testing.assert_allclose(remote.encode_texts(texts), encoder.encode_texts(texts), atol=ATOL)
    assert len(runtime_requests(endpoint)) == 3  # 4 + 4 + 2


def test_an_image_too_big_for_a_json_batch_goes_raw_as_x_image(endpoint, encoder):
    pics = images(3)
    limit = len(pics[1]) + 60  # raw fits, base64 in JSON does not
    remote, _ = make_encoder(endpoint, max_payload_bytes=limit)
    np.testing.assert_allclose(remote.encode_images(pics), encoder.encode_images(pics),
                               atol=ATOL)
    assert {r.content_type for r in runtime_requests(endpoint)} == {"application/x-image"}
    with pytest.raises(PayloadTooLargeError) as info:
        remote.encode_texts(["x" * limit])
    assert info.value.field == "texts[0]"


def test_throttled_twice_then_succeeds_with_exponential_backoff(endpoint, encoder):
    remote, sleeps = make_encoder(endpoint, base_delay=0.25)
    endpoint.inject("throttle", times=2)
    got = remote.encode_texts(["red shoe"])
    np.testing.assert_allclose(got, encoder.encode_texts(["red shoe"]), atol=ATOL)
    assert sleeps == [0.25, 0.5]
    assert [r.status for r in runtime_requests(endpoint)] == [400, 400, 200]


def test_jitter_scales_the_backoff(endpoint):
    remote, sleeps = make_encoder(endpoint, base_delay=1.0, max_delay=3.0, jitter=lambda: 0.5)
    endpoint.inject("throttle", times=3)
    remote.encode_texts(["red"])
    assert sleeps == [0.5, 1.0, 1.5]  # 0.5 x (1, 2, capped 3)


def test_always_throttled_raises_a_typed_service_unavailable(endpoint):
    remote, sleeps = make_encoder(endpoint, max_attempts=4, retry_after=7)
    endpoint.inject("throttle", times=None)
    with pytest.raises(ServiceUnavailableError) as info:
        remote.encode_texts(["red shoe"])
    assert info.value.status == 503 and info.value.retry_after == 7
    assert "after 4 attempt(s)" in info.value.message
    assert "ThrottlingException" in info.value.message
    assert len(runtime_requests(endpoint)) == 4 and len(sleeps) == 3


def test_the_time_budget_stops_retries_early(endpoint):
    remote, sleeps = make_encoder(endpoint, max_attempts=10, base_delay=1.0, max_delay=8.0,
                                  time_budget=2.5)
    endpoint.inject("cold_start", times=None)
    with pytest.raises(ServiceUnavailableError, match="ModelNotReadyException"):
        remote.encode_texts(["red"])
    assert sleeps == [1.0], "the next wait (2 s) would end past the 2.5 s budget"
    assert len(runtime_requests(endpoint)) == 2


@pytest.mark.parametrize("fault", ["cold_start", "unavailable", "server_error", "timeout"])
def test_transient_faults_are_retried(endpoint, encoder, fault):
    remote, sleeps = make_encoder(endpoint)
    endpoint.inject(fault, times=1)
    np.testing.assert_allclose(remote.encode_images(images(2)), encoder.encode_images(images(2)),
                               atol=ATOL)
    assert len(sleeps) == 1 and len(runtime_requests(endpoint)) == 2


def test_a_read_timeout_is_retried(endpoint, encoder):
    remote, sleeps = make_encoder(endpoint, read_timeout=0.4)
    endpoint.inject("delay", times=1, delay=1.2)
    np.testing.assert_allclose(remote.encode_texts(["lamp"]), encoder.encode_texts(["lamp"]),
                               atol=ATOL)
    assert len(sleeps) == 1


def test_client_errors_are_typed_and_never_retried(endpoint):
    pics = images(8)
    pics[5] = b"definitely not an image"
    remote, sleeps = make_encoder(endpoint, max_items=4)
    with pytest.raises(InvalidImageError) as info:
        remote.encode_images(pics)
    assert info.value.field == "images[5]", "the field points into the caller's list"
    assert info.value.status == 400 and "not a readable image" in info.value.message
    assert sleeps == [] and len(runtime_requests(endpoint)) == 2
    with pytest.raises(ValidationError) as info:
        remote.encode_texts(["fine", " "])
    assert info.value.field == "texts[1]"


def test_encode_images_each_reports_one_corrupt_image_and_encodes_the_rest(endpoint, encoder):
    pics = images(10)
    pics[3] = b"\x89PNG\r\n\x1a\n truncated"
    remote, _ = make_encoder(endpoint, max_payload_bytes=12_000)
    results = remote.encode_images_each(pics)
    assert isinstance(results[3], InvalidImageError) and results[3].field == "images[3]"
    good = [i for i in range(10) if i != 3]
    np.testing.assert_allclose(np.stack([results[i] for i in good]),
                               encoder.encode_images([pics[i] for i in good]), atol=ATOL)
    sent = runtime_requests(endpoint)
    assert len(sent) == 5 and {r.content_type for r in sent} == {"application/jsonlines"}


def test_encode_images_each_sends_oversized_images_raw(endpoint, encoder):
    pics = images(3)
    pics[1] = b"not an image at all" * 300
    remote, _ = make_encoder(endpoint, max_payload_bytes=len(pics[0]) + 60)
    results = remote.encode_images_each(pics)
    assert isinstance(results[1], InvalidImageError) and results[1].field == "images[1]"
    np.testing.assert_allclose(np.stack([results[0], results[2]]),
                               encoder.encode_images([pics[0], pics[2]]), atol=ATOL)
    assert {r.content_type for r in runtime_requests(endpoint)} == {"application/x-image"}


def test_a_dimension_mismatch_is_a_configuration_error(endpoint):
    remote, _ = make_encoder(endpoint, dimension=512)
    with pytest.raises(ConfigurationError, match="512-d were expected"):
        remote.encode_texts(["red"])


def test_another_model_behind_the_endpoint_is_a_retryable_503(endpoint):
    """Mid-switch, an old caller must not compare the new model's vectors with its index;
    callers retry (503) rather than see a server error, since the switch ends it."""
    remote, _ = make_encoder(endpoint, model_id="openai/clip-vit-large-patch14")
    with pytest.raises(ModelMismatchError, match=r"serves model .* but "
                       r"'openai/clip-vit-large-patch14' was expected") as caught:
        remote.encode_texts(["red"])
    assert caught.value.status == 503 and caught.value.retry_after == 30
    assert "serves model" not in caught.value.public_message


def test_an_unknown_endpoint_is_a_configuration_error(endpoint):
    remote = SageMakerEncoder("no-such-endpoint", endpoint_url=endpoint.url,
                              region_name="us-east-1")
    with pytest.raises(ConfigurationError, match="not found"):
        remote.encode_texts(["red"])


# --------------------------------------------------------------------------- Stubber


def stubbed(max_attempts: int = 3):
    client = boto3.client("sagemaker-runtime", region_name="us-east-1",
                          aws_access_key_id="t", aws_secret_access_key="t")
    sleeps = Sleeps()
    encoder = SageMakerEncoder("ep", client=client, sleep=sleeps, jitter=lambda: 1.0,
                               max_attempts=max_attempts)
    return encoder, Stubber(client), sleeps


def ok_body(rows):
    data = json.dumps({"model": "m", "dimension": 2, "text_embeddings": rows}).encode()
    return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": "application/json"}


def test_stubber_throttle_twice_then_succeed():
    encoder, stub, sleeps = stubbed()
    for _ in range(2):
        stub.add_client_error("invoke_endpoint", service_error_code="ThrottlingException",
                              service_message="Rate exceeded", http_status_code=400)
    stub.add_response("invoke_endpoint", ok_body([[3.0, 4.0]]))
    with stub:
        got = encoder.encode_texts(["x"])
    np.testing.assert_allclose(got, [[0.6, 0.8]], atol=1e-6)
    assert len(sleeps) == 2 and encoder.model_id == "m"
    stub.assert_no_pending_responses()


def test_stubber_always_throttled_gives_service_unavailable():
    encoder, stub, sleeps = stubbed(max_attempts=3)
    for _ in range(3):
        stub.add_client_error("invoke_endpoint", service_error_code="ThrottlingException",
                              http_status_code=400)
    with stub, pytest.raises(ServiceUnavailableError):
        encoder.encode_texts(["x"])
    assert len(sleeps) == 2


def test_stubber_untagged_model_400_is_a_model_failure_not_a_client_error():
    encoder, stub, sleeps = stubbed()
    message = json.dumps({"code": 400, "type": "InternalServerException",
                          "message": "CUDA out of memory"})
    stub.add_client_error("invoke_endpoint", service_error_code="ModelError",
                          service_message=f'Received client error (400) from primary with '
                                          f'message "{message}". See x in account 1 for more '
                                          'information.',
                          http_status_code=424,
                          response_meta={}, modeled_fields={"OriginalStatusCode": 400,
                                                            "OriginalMessage": message})
    with stub, pytest.raises(EndpointModelError, match="CUDA out of memory") as info:
        encoder.encode_texts(["x"])
    assert info.value.status == 502 and sleeps == []


def test_stubber_access_denied_is_a_configuration_error():
    encoder, stub, _ = stubbed()
    stub.add_client_error("invoke_endpoint", service_error_code="AccessDeniedException",
                          http_status_code=403)
    with stub, pytest.raises(ConfigurationError, match="AccessDeniedException"):
        encoder.encode_texts(["x"])


def test_importing_the_encoder_never_pulls_torch_or_pillow():
    """The Lambda bundle has boto3 and numpy only; this import path must stay that light."""
    import subprocess
    import sys

    code = ("import sys; from clipsearch.encoders import SageMakerEncoder; "
            "heavy = {'torch', 'transformers', 'PIL'} & set(sys.modules); "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_an_unreachable_endpoint_is_retried_then_unavailable(monkeypatch):
    import socket

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()
    remote = SageMakerEncoder("ep", endpoint_url=f"http://127.0.0.1:{port}",
                              region_name="us-east-1", max_attempts=3, sleep=sleeps,
                              clock=sleeps.clock, jitter=lambda: 1.0, connect_timeout=0.5)
    with pytest.raises(ServiceUnavailableError, match="EndpointConnectionError"):
        remote.encode_texts(["red"])
    assert sleeps == [0.25, 0.5]


def test_time_left_cuts_the_call_and_its_retries(endpoint):
    """The ingest Lambda's bound: with 4.5 s left the call gets connect 2 s + the longest
    shorter read timeout that fits (2 s); cut there, no retry fits in what is left."""
    import time

    remote = SageMakerEncoder(endpoint.endpoint_name, endpoint_url=endpoint.url,
                              region_name="us-east-1", read_timeout=60.0, base_delay=0.01,
                              time_left=lambda: 4.5)
    assert remote.min_call_s == 3.0
    endpoint.inject("delay", times=None, delay=3.0)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="too little time left") as info:
        remote.encode_images_each(images(1))
    assert time.monotonic() - started < 4.5
    assert "ReadTimeoutError" in info.value.message and "after 1 attempt(s)" in info.value.message


def test_no_call_starts_with_less_time_left_than_the_shortest_call(endpoint):
    remote = SageMakerEncoder(endpoint.endpoint_name, endpoint_url=endpoint.url,
                              region_name="us-east-1", time_left=lambda: 2.5)
    with pytest.raises(ServiceUnavailableError, match="too little time left"):
        remote.encode_texts(["lamp"])
    assert runtime_requests(endpoint) == []
