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
    image = root / "images/small/ab/img1.jpg"  # img2's file is missing on purpose
    image.parent.mkdir(parents=True)
    image.write_bytes(png_bytes())
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
    assert Path(catalog.products[0].image).read_bytes() == png_bytes()
    raw = json.loads((out / "catalog.jsonl").read_text().splitlines()[0])
    assert raw["image"] == "images/ab/img1.jpg"  # relative, so the folder can move
    QuietHandler.requests.clear()
    assert script.main(["--output", str(out), "--base-url", url]) == 0
    assert not any("/images/small/" in r for r in QuietHandler.requests)  # resumed, no refetch


def test_unreachable_source_is_a_clear_error(tmp_path, capsys):
    script = load_script()
    code = script.main(["--output", str(tmp_path), "--base-url", "http://127.0.0.1:9"])
    assert code == 2
    assert "cannot download ABO metadata" in capsys.readouterr().err
