"""`clipsearch reindex`: switch a populated local index to another model family.

Searches on the old version are answered while the new one is built (a query
runs in the middle of the run, not just before and after), the switch is one
pointer rename, the old version stays on disk, a model mismatch is refused
with the command to run, and a reindex killed with SIGKILL resumes where it
stopped instead of starting over.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clipsearch.catalog import read_catalog
from clipsearch.cli import main
from clipsearch.contract import SearchRequest
from clipsearch.encoders import load_encoder
from clipsearch.index.local import LocalIndex
from clipsearch.index.versions import STATE, current_index_dir, reindex
from clipsearch.random_models import build_random_model
from clipsearch.service import SearchService

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def siglip2_dir(tmp_path_factory) -> Path:
    return build_random_model(tmp_path_factory.mktemp("siglip2"), family="siglip2")


@pytest.fixture
def clip_data(tmp_path, tiny_clip_dir, demo_catalog_path, capsys):
    """A data dir whose local index holds the demo catalog embedded with the tiny CLIP."""
    catalog_dir = tmp_path / "catalog"
    shutil.copytree(demo_catalog_path.parent, catalog_dir)
    catalog = catalog_dir / demo_catalog_path.name  # relative image paths resolve here
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "--model", str(tiny_clip_dir), "ingest",
                 str(catalog), "--no-progress"]) == 0
    capsys.readouterr()
    return data, read_catalog(catalog).products


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_reindex_switches_family_with_searches_answered_throughout(
        clip_data, tiny_clip_dir, siglip2_dir, capsys):
    data, products = clip_data
    old_dir = current_index_dir(data)
    old = SearchService(load_encoder(str(tiny_clip_dir)), LocalIndex(old_dir))
    mid_run, queried = threading.Event(), threading.Event()
    answers: list[int] = []

    def progress(_n: int) -> None:
        if not mid_run.is_set():  # after the first batch: hold until a search went through
            mid_run.set()
            assert queried.wait(120)

    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(report=reindex(
        data, load_encoder(str(siglip2_dir)), batch_size=4, progress=progress)))
    worker.start()
    assert mid_run.wait(300), "reindex never embedded a batch"
    answers.append(len(old.search(SearchRequest(text="red circle", k=5))["results"]))
    code, out, _ = _cli(capsys, "--data-dir", data, "--model", tiny_clip_dir,
                        "search", "red circle", "--json")
    assert code == 0 and json.loads(out)["model"] == tiny_clip_dir.name
    queried.set()
    while worker.is_alive():
        answers.append(len(old.search(SearchRequest(text="blue square", k=5))["results"]))
    worker.join()
    report = outcome["report"]
    assert answers and all(n == 5 for n in answers)
    assert report.switched and report.embedded == len(products) == report.total
    assert report.resumed == 0 and not report.failed
    new_dir = current_index_dir(data)
    assert new_dir != old_dir and new_dir.parent.name == "indexes"
    assert (old_dir / "products.sqlite3").is_file()  # the old version is kept
    assert LocalIndex(new_dir).model == str(siglip2_dir)
    # The new family answers through the CLI, an image query finds its product first...
    image = products[3].image
    code, out, _ = _cli(capsys, "--data-dir", data, "--model", siglip2_dir,
                        "search", "--image", image, "--json")
    assert code == 0 and json.loads(out)["results"][0]["id"] == products[3].id
    # ...and the old model is refused with what to run.
    code, _, err = _cli(capsys, "--data-dir", data, "--model", tiny_clip_dir,
                        "search", "red circle")
    assert code == 2
    assert f"built with model {str(siglip2_dir)!r}" in err
    assert f"--model {siglip2_dir}" in err and f"clipsearch reindex --model {tiny_clip_dir}" in err
    code, _, err = _cli(capsys, "--data-dir", data, "--model", siglip2_dir,
                        "reindex", "--no-progress")
    assert code == 2 and "already built with" in err


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_killed_reindex_resumes_where_it_stopped(clip_data, siglip2_dir, capsys):
    """SIGKILL mid-run (the 11th image is a FIFO nobody writes: reading it blocks)."""
    data, products = clip_data
    old_dir = current_index_dir(data)
    stuck = Path(products[10].image)
    original = stuck.read_bytes()
    stuck.unlink()
    os.mkfifo(stuck)
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsearch.cli", "--data-dir", str(data), "reindex",
         "--model", str(siglip2_dir), "--batch-size", "2", "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: (data / STATE).is_file() or proc.poll() is not None, 300,
                  "the reindex to start")
        assert proc.poll() is None, proc.communicate()
        target = data / json.loads((data / STATE).read_text())["target"]
        _wait_for(lambda: (target / "products.sqlite3").is_file()
                  and LocalIndex(target).count() >= 10, 300, "10 products re-embedded")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert current_index_dir(data) == old_dir  # not switched
    done_before = LocalIndex(target).count()
    assert 10 <= done_before < len(products)
    stuck.unlink()
    stuck.write_bytes(original)
    code, out, err = _cli(capsys, "--data-dir", data, "reindex", "--model", siglip2_dir,
                          "--no-progress", "--json")
    assert code == 0, err
    report = json.loads(out[: out.rindex("}") + 1])
    assert report["switched"] and report["target"] == str(target)
    assert report["resumed"] == done_before
    assert report["embedded"] == len(products) - done_before
    assert current_index_dir(data) == target and LocalIndex(target).count() == len(products)
    assert not (data / STATE).exists()


def test_unreadable_images_block_the_switch_unless_dropped(clip_data, siglip2_dir, capsys):
    data, products = clip_data
    old_dir = current_index_dir(data)
    Path(products[0].image).unlink()
    code, out, err = _cli(capsys, "--data-dir", data, "reindex", "--model", siglip2_dir,
                          "--no-progress")
    assert code == 1 and "NOT switched" in err
    assert f"failed  {products[0].id}: image file" in out
    assert current_index_dir(data) == old_dir
    code, out, _ = _cli(capsys, "--data-dir", data, "reindex", "--model", siglip2_dir,
                        "--no-progress", "--drop-failed")
    assert code == 0 and "0 embedded" in out  # the rest was kept from the first run
    new = LocalIndex(current_index_dir(data))
    assert new.count() == len(products) - 1 and new.get(products[0].id) is None
