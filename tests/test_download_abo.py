"""scripts/download_abo.py against a local HTTP server laid out like the ABO bucket."""

import functools
import importlib.util
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from clipsearch.catalog import read_jsonl
from tests.conftest import png_bytes
from tests.test_catalog import make_abo

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "download_abo.py"


@pytest.fixture
def abo_server(tmp_path):
    root = tmp_path / "bucket"
    make_abo(root)
    # img2's and img5's files are missing on purpose.
    for name, color in (("ab/img1.jpg", (255, 0, 0)), ("ef/img3.jpg", (0, 0, 255))):
        image = root / "images/small" / name
        image.parent.mkdir(parents=True)
        image.write_bytes(png_bytes(color))
    handler = functools.partial(QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()


class QuietHandler(SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def log_message(self, *args):  # keep pytest output clean
        QuietHandler.requests.append(self.path)


def load_script():
    spec = importlib.util.spec_from_file_location("download_abo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_downloads_catalog_and_images_and_resumes(abo_server, tmp_path, capsys):
    url, _ = abo_server
    out = tmp_path / "abo"
    script = load_script()
    assert script.main(["--output", str(out), "--base-url", url, "--limit", "10"]) == 0
    catalog = read_jsonl(out / "catalog.jsonl")
    assert [p.id for p in catalog.products] == ["B000A"]
    (product,) = catalog.products
    # The main image first, then the other photo that downloaded; img5 (404) is left out.
    assert [Path(i).read_bytes() for i in product.images] == [png_bytes((255, 0, 0)),
                                                              png_bytes((0, 0, 255))]
    assert product.description == "Full-grain leather."
    raw = json.loads((out / "catalog.jsonl").read_text().splitlines()[0])
    assert raw["image"] == "images/ab/img1.jpg"  # relative, so the folder can move
    assert raw["images"] == ["images/ab/img1.jpg", "images/ef/img3.jpg"]
    assert "B000A img5.jpg" in capsys.readouterr().err
    QuietHandler.requests.clear()
    assert script.main(["--output", str(out), "--base-url", url]) == 0
    # Resumed: images on disk are not fetched again; only the one that failed is retried.
    assert {r for r in QuietHandler.requests if "/images/small/" in r} == {
        "/images/small/ef/img5.jpg"}


def test_unreachable_source_is_a_clear_error(tmp_path, capsys):
    script = load_script()
    code = script.main(["--output", str(tmp_path), "--base-url", "http://127.0.0.1:9"])
    assert code == 2
    assert "cannot download ABO metadata" in capsys.readouterr().err


def test_main_image_only_skips_other_photos(abo_server, tmp_path):
    url, _ = abo_server
    QuietHandler.requests.clear()
    out = tmp_path / "abo"
    assert load_script().main(["--output", str(out), "--base-url", url,
                               "--main-image-only"]) == 0
    (product,) = read_jsonl(out / "catalog.jsonl").products
    assert len(product.images) == 1
    assert not any("img3" in r for r in QuietHandler.requests)
