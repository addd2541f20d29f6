"""The console script, in process (fast) and once as a real subprocess."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clipsearch.cli import main


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_clip_dir, demo_catalog_path):
    data = tmp_path_factory.mktemp("cli-data")
    catalog_dir = tmp_path_factory.mktemp("cli-catalog")
    shutil.copytree(demo_catalog_path.parent / "images", catalog_dir / "images")
    lines = demo_catalog_path.read_text().splitlines()
    lines.insert(3, "{oops")
    lines.insert(7, json.dumps({"id": "x", "title": ""}))
    catalog = catalog_dir / "catalog.jsonl"
    catalog.write_text("\n".join(lines) + "\n")
    base = ["--data-dir", str(data), "--model", str(tiny_clip_dir)]
    return base, catalog, len(lines) - 2


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_summary_reports_bad_lines(capsys, indexed):
    base, catalog, good = indexed
    code, out, _err = run(capsys, *base, "ingest", str(catalog), "--no-progress")
    assert code == 0
    assert f"indexed {good}, skipped 0, failed 2" in out
    assert f"{catalog}:4: malformed JSON" in out
    assert f"{catalog}:8 (x): title must be a non-empty string" in out


def test_search_text_table_and_json(capsys, indexed):
    base, _, _ = indexed
    code, out, _ = run(capsys, *base, "search", "red circle", "--k", "3")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "score", "id", "title"]
    assert len(lines) == 5 and lines[-1].startswith("(3 results")
    code, out, _ = run(capsys, *base, "search", "red circle", "--k", "3", "--json")
    body = json.loads(out)
    assert [r["rank"] for r in body["results"]] == [1, 2, 3]


def test_search_by_image_like_and_filters(capsys, indexed, demo_products):
    base, _, _ = indexed
    target = demo_products[5]
    code, out, _ = run(capsys, *base, "search", "--image", target.image, "--json", "--k", "2")
    assert code == 0 and json.loads(out)["results"][0]["id"] == target.id
    code, out, _ = run(capsys, *base, "search", "--like", target.id, "--json")
    assert target.id not in [r["id"] for r in json.loads(out)["results"]]
    code, out, _ = run(capsys, *base, "search", "rug", "--filter", "category=rug",
                       "--filter", "price<=40", "--json", "--k", "40")
    results = json.loads(out)["results"]
    assert results and all(r["attributes"]["category"] == "rug" and
                           r["attributes"]["price"] <= 40 for r in results)
    code, out, _ = run(capsys, *base, "search", "red", "--image", target.image, "--json")
    assert code == 0 and len(json.loads(out)["results"]) == 10


def test_search_modes_and_explain(capsys, indexed, demo_products):
    base, _, _ = indexed
    target = demo_products[7]
    word = target.title.split()[0].lower()
    code, out, _ = run(capsys, *base, "search", target.id, "--mode", "lexical", "--explain")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[2] == target.id  # an exact id ranks first
    assert "exact id match" in lines[2] and ", lexical mode, model " in lines[-1]
    code, out, _ = run(capsys, *base, "search", word, "--explain", "--json", "--k", "3")
    body = json.loads(out)
    assert body["mode"] == "hybrid"
    assert set(body["results"][0]["explain"]["signals"]) == {"vector", "lexical", "image",
                                                             "title"}
    code, out, _ = run(capsys, *base, "search", word, "--explain", "--k", "2")
    assert " => " in out.splitlines()[2] and "rrf" in out.splitlines()[2]


@pytest.mark.parametrize("args, message", [
    (["search", "--like", "demo-red-circle", "--mode", "hybrid"], "more like this has none"),
    (["search", "x", "--lexical-weight", "2"], "lexical_weight must be a number between 0 and 1"),
    (["search", "x", "--k", "0"], "k must be between 1 and 100"),
    (["search", "x", "--k", "1000"], "k must be between 1 and 100"),
    (["search", ""], "text is empty"),
    (["search"], "give a TEXT query"),
    (["search", "--like", "nope"], "no product with id 'nope'"),
    (["search", "x", "--filter", "colour=red"], "unknown filter field 'colour'"),
    (["search", "x", "--filter", "price>=cheap"], "is not a number"),
    (["search", "--image", "/does/not/exist.png"], "does not exist"),
    (["ingest", "/does/not/exist.jsonl"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, indexed, args, message):
    base, _, _ = indexed
    code, _out, err = run(capsys, *base, *args)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_non_image_file(capsys, indexed, tmp_path):
    base, _, _ = indexed
    fake = tmp_path / "fake.jpg"
    fake.write_text("hello")
    code, _, err = run(capsys, *base, "search", "--image", str(fake))
    assert code == 2 and "not a readable image" in err


def test_info(capsys, indexed):
    base, _, good = indexed
    _code, out, _ = run(capsys, *base, "info")
    info = json.loads(out)
    assert info["index"]["count"] == good and info["index"]["mode"] == "exact"
    assert set(info["index"]["fields"]) == {"color", "pattern", "category", "price"}


def test_console_script_end_to_end(tmp_path, tiny_clip_dir):
    """The installed entry point, as a user runs it: the demo then a search."""
    exe = Path(sys.executable).parent / "clipsearch"
    env_args = ["--data-dir", str(tmp_path), "--model", str(tiny_clip_dir)]
    demo = subprocess.run([str(exe), *env_args, "demo", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert "indexed 40 products, failed 0" in demo.stdout
    assert "$ clipsearch search --image" in demo.stdout
    bad = subprocess.run([str(exe), *env_args, "search", "x", "--k", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: k must be between 1 and 100, got 0 [k]"


def test_ingest_counts_add_up_to_the_catalog(capsys, tmp_path, tiny_clip_dir, demo_catalog_path):
    """indexed + skipped + failed == every product of the catalog, bad lines included."""
    shutil.copytree(demo_catalog_path.parent / "images", tmp_path / "images")
    lines = demo_catalog_path.read_text().splitlines()[:6]
    corrupt = json.loads(lines[2])
    (tmp_path / corrupt["image"]).write_bytes(b"GIF89a but nothing else")
    lines += ['{"id": "no-image", "title": "Sold without a photo"}', "{oops",
              json.dumps({"id": "missing-file", "title": "Gone", "image": "images/nope.png"})]
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(lines) + "\n")
    base = ["--data-dir", str(tmp_path / "data"), "--model", str(tiny_clip_dir)]
    code, out, _err = run(capsys, *base, "ingest", str(catalog), "--no-progress", "--json")
    assert code == 0
    body = json.loads(out)
    assert body["products"] == 9
    # no-image is indexed by its title and words.
    assert (body["indexed"], body["skipped"], body["failed"]) == (6, 0, 3)
    failed = {item["id"]: item["reason"] for item in body["failed_items"]}
    assert set(failed) == {corrupt["id"], "missing-file", "line 8"}
    assert "nope.png" in failed["missing-file"]
    code, out, _err = run(capsys, *base, "ingest", str(catalog), "--no-progress")
    assert "9 products: indexed 6, skipped 0, failed 3" in out
