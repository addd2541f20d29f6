"""Shared fixtures: a tiny random-weight CLIP saved to disk and the demo catalog.

The CLIP fixture goes through the real `from_pretrained` path on a directory
written by `save_pretrained`, exactly as a downloaded model would.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipsearch.catalog import read_catalog
from clipsearch.demo import write_demo_catalog
from clipsearch.random_clip import build_random_clip


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return build_random_clip(tmp_path_factory.mktemp("tiny-clip"), preset="tiny")


@pytest.fixture(scope="session")
def encoder(tiny_clip_dir):
    from clipsearch.encoders.clip import ClipEncoder

    return ClipEncoder(str(tiny_clip_dir), batch_size=8)


@pytest.fixture(scope="session")
def demo_catalog_path(tmp_path_factory) -> Path:
    return write_demo_catalog(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def demo_products(demo_catalog_path):
    result = read_catalog(demo_catalog_path)
    assert not result.errors
    return result.products


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Serve an ASGI app with a real uvicorn on a free loopback port, in a thread."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def png_bytes(color=(200, 10, 10), size=(48, 40)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def demo_service(encoder, demo_products, tmp_path_factory):
    """The demo catalog indexed with the tiny CLIP in a LocalIndex, ready to query.

    Shared (read-only) by the API, server and browser tests, so the catalog is
    encoded once per run.
    """
    from clipsearch.index.local import LocalIndex
    from clipsearch.service import SearchService

    service = SearchService(encoder, LocalIndex(tmp_path_factory.mktemp("demo-index")))
    report = service.ingest(demo_products, batch_size=16)
    assert report.indexed == len(demo_products) and not report.failed
    return service


@pytest.fixture(scope="session")
def tiny_model_artifact(tiny_clip_dir, tmp_path_factory) -> Path:
    """The tiny CLIP packaged by the real packaging code, as SageMaker receives it."""
    from clipsearch.sagemaker.package import build_artifact

    return build_artifact(tiny_clip_dir, tmp_path_factory.mktemp("artifact") / "model.tar.gz").path


@pytest.fixture(scope="session")
def sagemaker_endpoint(tiny_model_artifact):
    """A local SageMaker endpoint (the emulator) serving the tiny artifact over HTTP.

    Point boto3's `sagemaker-runtime` client at `sagemaker_endpoint.url`; the
    endpoint name is `sagemaker_endpoint.endpoint_name`. Shared by the whole
    session: a test that injects faults must `clear_faults()` afterwards.
    """
    from clipsearch.sagemaker.emulator import EndpointEmulator, ModelHandler

    emulator = EndpointEmulator(ModelHandler.from_artifact(tiny_model_artifact)).start()
    yield emulator
    emulator.stop()


# --------------------------------------------------------------------------- OpenSearch


def _load_node_script():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "opensearch_node.py"
    spec = importlib.util.spec_from_file_location("opensearch_node", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def opensearch_url(tmp_path_factory):
    """A real single-node OpenSearch with k-NN, started for this test session.

    Skips (with the reason printed by -ra) where Java or Maven is missing,
    unless CLIPSEARCH_REQUIRE_OPENSEARCH=1 (set by CI), where it fails instead.
    """
    import os
    import shutil

    required = os.environ.get("CLIPSEARCH_REQUIRE_OPENSEARCH") == "1"
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        reason = f"OpenSearch tests need {' and '.join(missing)} on PATH"
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    node = _load_node_script()
    port = _free_port()
    url = node.start(port, tmp_path_factory.mktemp("opensearch-data"), "1g")
    yield url
    node.stop(port)


@pytest.fixture
def opensearch_client(opensearch_url):
    from clipsearch.index.opensearch import make_client

    client = make_client(opensearch_url)
    yield client
    client.indices.delete(index="*", ignore_unavailable=True, expand_wildcards="all",
                          params={"ignore": 404})
