"""The local server against slow, lying and rebinding clients, and swapped image files (#18).

Classes 9 (the image route follows no symlink) and 12 (slow or lying
clients, Host). The transport tests run a real uvicorn with the protocol
`clipsearch serve` uses, over raw sockets, because a test client never sends
a half request.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from clipsearch import config
from clipsearch.catalog import Product
from clipsearch.index import IndexRecord
from clipsearch.index.local import LocalIndex
from clipsearch.server import TimedH11Protocol, create_app
from clipsearch.service import SearchService
from tests import hostile


@pytest.fixture(scope="module")
def server(demo_service) -> Iterator[tuple[str, int]]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    saved = config.HEADER_TIMEOUT_S, config.BODY_TIMEOUT_S
    config.HEADER_TIMEOUT_S, config.BODY_TIMEOUT_S = 1.5, 1.5
    server = uvicorn.Server(uvicorn.Config(create_app(demo_service), log_level="warning",
                                           http=TimedH11Protocol, timeout_keep_alive=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
    config.HEADER_TIMEOUT_S, config.BODY_TIMEOUT_S = saved


def _exchange(address, chunks: list[bytes], *, pause: float = 0.0, wait: float = 10.0
              ) -> tuple[bytes, float]:
    """Send chunks (pausing between them), then read until the server closes or answers."""
    started = time.monotonic()
    with socket.create_connection(address, timeout=wait) as conn:
        for chunk in chunks:
            try:
                conn.sendall(chunk)
            except OSError:
                break
            time.sleep(pause)
        data = b""
        try:
            while True:
                part = conn.recv(65536)
                if not part:
                    break
                data += part
                if b"\r\n\r\n" in data and _complete(data):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return data, time.monotonic() - started


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def _json_body(data: bytes) -> dict:
    return json.loads(data.partition(b"\r\n\r\n")[2])


# -------------------------------------------------------------------------- 12: slow clients


def test_a_request_head_that_never_completes_is_cut_off(server):
    for head in (b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"G", b""):
        data, took = _exchange(server, [head])
        assert took < 6, (head, took)  # HEADER_TIMEOUT_S is 1.5 here; the socket waits 10
        assert _status(data) in (0, 408)


def test_a_slowloris_head_is_cut_off_although_bytes_keep_coming(server):
    chunks = [b"GET /health HTTP/1.1\r\n"] + [b"X-a: b\r\n"] * 20
    data, took = _exchange(server, chunks, pause=0.25)
    assert took < 5.5 and _status(data) == 0  # closed before the head completed


def test_a_declared_body_that_never_arrives_gets_408(server):
    head = (b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    data, took = _exchange(server, [head, b'{"text": '])
    assert _status(data) == 408 and took < 6
    assert _json_body(data)["error"] == "request_timeout"


@pytest.mark.parametrize("declared", [config.MAX_REQUEST_BYTES + 1, 10 * 1024 * 1024, 10**18])
def test_an_oversized_declared_length_is_refused_before_reading(server, declared):
    head = (f"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    data, took = _exchange(server, [head])  # and not one byte of body
    assert _status(data) == 413 and took < 1.5
    assert _json_body(data)["error"] == "payload_too_large"


def test_a_normal_client_is_unaffected_and_keep_alive_works(server):
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
    with socket.create_connection(server, timeout=10) as conn:
        for _ in range(2):
            conn.sendall(request)
            data = b""
            while not (b"\r\n\r\n" in data and _complete(data)):
                data += conn.recv(65536)
            assert _status(data) == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io",
                                  "localhost.evil.example", "", "[::2]:80", "0.0.0.0"])
def test_unknown_host_names_are_refused(server, host):
    head = f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    data, _ = _exchange(server, [head])
    assert _status(data) == 400
    assert _json_body(data)["error"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8000", "127.0.0.1:1", "[::1]:8000",
                                  "[::1]"])
def test_loopback_host_names_are_served(server, host):
    data, _ = _exchange(server, [f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()])
    assert _status(data) == 200


def test_the_allow_list_is_configurable(demo_service, monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_ALLOWED_HOSTS", "shop.example, 10.0.0.5")
    app = create_app(demo_service)
    with TestClient(app, base_url="http://shop.example:8000") as client:
        assert client.get("/health").status_code == 200
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/health").status_code == 400
    with TestClient(create_app(demo_service, allowed_hosts=("*",)),
                    base_url="http://anything.example") as client:
        assert client.get("/health").status_code == 200


# ---------------------------------------------------------------- 9: the image route and symlinks


@pytest.fixture
def image_world(tmp_path, encoder):
    """Two products whose images are catalog files; the test then tampers with them."""
    import numpy as np

    catalog = tmp_path / "catalog"
    (catalog / "images").mkdir(parents=True)
    secret = tmp_path / "secret.png"
    secret.write_bytes(hostile.png(color=(1, 2, 3)))
    index = LocalIndex(tmp_path / "index")
    vector = np.ones(encoder.dimension, dtype=np.float32)
    records = []
    for name in ("a", "b"):
        path = catalog / "images" / f"{name}.png"
        path.write_bytes(hostile.png(color=(200, 0, 0)))
        records.append(IndexRecord(Product(name, name, str(path.resolve())), vector))
    index.upsert(records)
    app = create_app(SearchService(encoder, index))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, catalog, secret


def test_catalog_images_are_served(image_world):
    client, catalog, _ = image_world
    resp = client.get("/images/a")
    assert resp.status_code == 200 and resp.content == (catalog / "images" / "a.png").read_bytes()
    assert resp.headers["content-type"] == "image/png"


def test_a_symlink_swapped_in_after_ingest_is_not_followed(image_world):
    client, catalog, secret = image_world
    target = catalog / "images" / "a.png"
    target.unlink()
    target.symlink_to(secret)
    resp = client.get("/images/a")
    assert resp.status_code == 404 and resp.content != secret.read_bytes()
    assert resp.json()["error"] == "not_found"


def test_a_symlinked_folder_on_the_path_is_not_followed(image_world, tmp_path):
    client, catalog, secret = image_world
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(secret, elsewhere / "b.png")
    shutil.rmtree(catalog / "images")
    (catalog / "images").symlink_to(elsewhere)
    assert client.get("/images/b").status_code == 404


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_special_files_swapped_in_are_not_served(image_world):
    client, catalog, _ = image_world
    target = catalog / "images" / "a.png"
    target.unlink()
    os.mkfifo(target)  # would hang a naive open
    assert client.get("/images/a").status_code == 404
    target.unlink()
    target.mkdir()
    assert client.get("/images/b").status_code == 200
    assert client.get("/images/a").status_code == 404
