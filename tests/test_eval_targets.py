"""The three eval targets give identical metrics on the same index contents.

The demo catalog is indexed with the tiny CLIP twice, in a LocalIndex and on
the real OpenSearch node (fixture `opensearch_url`); the LocalIndex is also
served over HTTP by a real uvicorn (`create_app`, what `clipsearch serve`
runs). The same mixed text/image query set then runs through `clipsearch
eval` against the local index, `--opensearch URL` and `--api URL`.
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from clipsearch.cli import main
from clipsearch.server import create_app
from tests.conftest import live_server


@pytest.fixture(scope="module")
def contents(tmp_path_factory, tiny_clip_dir, demo_catalog_path, opensearch_url):
    root = tmp_path_factory.mktemp("eval-targets")
    catalog_dir = root / "catalog"
    shutil.copytree(demo_catalog_path.parent, catalog_dir)
    catalog = catalog_dir / "catalog.jsonl"
    local = ["--data-dir", str(root / "data"), "--model", str(tiny_clip_dir)]
    remote = [*local, "--opensearch", opensearch_url, "--alias", f"eval-{uuid.uuid4().hex[:8]}"]
    for base in (local, remote):
        assert main([*base, "ingest", str(catalog), "--no-progress"]) == 0
    queries = root / "queries.jsonl"
    parts = []
    for task in ("title2product", "image2product"):
        out = root / f"{task}.jsonl"
        assert main([*local, "eval", "--generate", task, "--from-catalog", str(catalog),
                     "--sample", "10", "--seed", "5", "--write", str(out)]) == 0
        parts.append(out.read_text())
    queries.write_text("".join(parts))
    return local, remote, queries, root


def _eval(capsys, *argv) -> dict:
    code = main([*argv, "--json", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def _comparable(doc: dict) -> dict:
    """Everything but timings and the configuration's name."""
    return {"queries": doc["queries"], "k": doc["k"], "metrics": doc["metrics"],
            "ci95": doc["ci95"], "failed": doc["failed"],
            "per_query": [(r["id"], r["rank_of_first_relevant"], r["retrieved"])
                          for r in doc["per_query"]]}


def test_local_opensearch_and_http_api_give_identical_metrics(capsys, contents, encoder):
    local, remote, queries, root = contents
    # Vector mode: its ranking is the same on every backend. Lexical scores are not
    # (SQLite FTS5's BM25 and Lucene's differ in tokenising and statistics), so hybrid
    # rankings legitimately differ between the local index and OpenSearch.
    vector = ("--request", '{"mode": "vector"}')
    on_local = _eval(capsys, *local, "eval", str(queries), *vector)
    on_opensearch = _eval(capsys, *remote, "eval", str(queries), *vector)

    from clipsearch.index.local import LocalIndex
    from clipsearch.service import SearchService

    service = SearchService(encoder, LocalIndex(root / "data" / "index"))
    with live_server(create_app(service)) as url:
        on_api = _eval(capsys, *local, "eval", str(queries), "--api", url, "--api-key", "k",
                       *vector)
        # The report fetches result thumbnails through the API's /images route.
        assert main([*local, "eval", str(queries), "--api", url, "--no-progress",
                     "--report", str(root / "report"), "--worst", "3"]) == 0
    capsys.readouterr()

    assert on_local["queries"] == 20 and not on_local["failed"]
    assert 0 < on_local["metrics"]["recall@10"] <= 1
    assert _comparable(on_opensearch) == _comparable(on_local)
    assert _comparable(on_api) == _comparable(on_local)
    assert list((root / "report" / "worst" / "default").glob("*.png"))


def test_api_errors_fail_queries_with_the_api_message(capsys, contents, encoder, tmp_path):
    local, _, queries, root = contents
    from clipsearch.index.local import LocalIndex
    from clipsearch.service import SearchService

    service = SearchService(encoder, LocalIndex(root / "data" / "index"))
    with live_server(create_app(service)) as url:
        code = main([*local, "eval", str(queries), "--api", url, "--no-progress",
                     "--request", '{"weights": {"text": -1}}'])
    _, err = capsys.readouterr()
    assert code == 1
    assert "HTTP 400: weights.text must be a number >= 0 [weights.text]" in err
    one = tmp_path / "one.jsonl"
    one.write_text(queries.read_text().splitlines()[0] + "\n")
    code = main([*local, "eval", str(one), "--api", "http://127.0.0.1:9", "--no-progress"])
    _, err = capsys.readouterr()
    assert code == 1 and "gave up after 4 attempts" in err
