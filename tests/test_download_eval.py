"""scripts/download_eval.py against local HTTP servers laid out like each source: the ABO
bucket (as in tests/test_download_abo.py) and a dataset hub serving Marqo-style parquet
shards (the Hub's tree API listing plus resolve/main/<file> downloads)."""

from __future__ import annotations

import functools
import importlib.util
import json
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from clipsearch.catalog import read_jsonl
from clipsearch.eval.queries import read_queries
from tests.conftest import png_bytes
from tests.test_download_abo import QuietHandler, abo_server  # noqa: F401 (fixture)

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "download_eval.py"
REPO = "Marqo/google-shopping-general-eval-100k"


def load_script():
    spec = importlib.util.spec_from_file_location("download_eval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_abo_subset_with_both_query_sets(abo_server, tmp_path):  # noqa: F811
    url, _ = abo_server
    out = tmp_path / "abo"
    assert load_script().main(["abo", "--output", str(out), "--base-url", url]) == 0
    (product,) = read_jsonl(out / "catalog.jsonl").products
    (title,) = read_queries(out / "queries-title2product.jsonl")
    assert (title.text, dict(title.relevant)) == ("Leather boot", {"B000A": 1})
    (image,) = read_queries(out / "queries-image2product.jsonl")
    assert image.image == product.images[1] and dict(image.relevant) == {"B000A": 1}


def _shard(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([r["image"] for r in rows], type=image_type),
        "item_ID": [r["item_ID"] for r in rows],
        "query": [r["query"] for r in rows],
        "title": [r["title"] for r in rows],
        "position": [r["position"] for r in rows],
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


@pytest.fixture
def hub(tmp_path):
    """A hub with two shards: 3 + 2 rows, one duplicate id, one row without an image."""
    root = tmp_path / "hub"
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]
    rows = [{"image": {"bytes": png_bytes(c), "path": f"{i}.png"}, "item_ID": f"gs {i}",
             "query": "tv stand" if i < 2 else "desk lamp", "title": f"Item {i}",
             "position": i} for i, c in enumerate(colors)]
    first = [*rows[:2], {**rows[0], "title": "duplicate"}]
    second = [rows[2], {**rows[3], "image": None}]
    data = root / "datasets" / REPO / "resolve" / "main" / "data"
    _shard(data / "test-00000-of-00002.parquet", first)
    _shard(data / "test-00001-of-00002.parquet", second)
    listing = root / "api" / "datasets" / REPO / "tree" / "main" / "data"
    listing.parent.mkdir(parents=True)
    listing.write_text(json.dumps([
        {"type": "file", "path": f"data/{p.name}", "size": p.stat().st_size}
        for p in sorted(data.iterdir())] + [{"type": "directory", "path": "data/x"}]))
    handler = functools.partial(QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_marqo_shards_become_catalog_and_query_sets(hub, tmp_path):
    out = tmp_path / "gs"
    assert load_script().main(["google-shopping", "--output", str(out), "--hub-url", hub]) == 0
    products = read_jsonl(out / "catalog.jsonl").products
    # Ids are made catalog-safe; the duplicate and the row without an image are dropped.
    assert [(p.id, p.title) for p in products] == [("gs_0", "Item 0"), ("gs_1", "Item 1"),
                                                    ("gs_2", "Item 2")]
    assert Path(products[2].image).read_bytes() == png_bytes((0, 0, 255))
    titles = read_queries(out / "queries-title2product.jsonl")
    assert [(q.text, dict(q.relevant)) for q in titles] == [
        ("Item 0", {"gs_0": 1}), ("Item 1", {"gs_1": 1}), ("Item 2", {"gs_2": 1})]
    groups = read_queries(out / "queries-query2product.jsonl")
    assert [(q.text, sorted(q.relevant)) for q in groups] == [
        ("desk lamp", ["gs_2"]), ("tv stand", ["gs_0", "gs_1"])]
    assert not list((out / "raw").iterdir())  # shards are removed once converted


def test_marqo_limit_stops_before_the_next_shard(hub, tmp_path):
    QuietHandler.requests.clear()
    out = tmp_path / "gs"
    assert load_script().main(["google-shopping", "--output", str(out), "--hub-url", hub,
                               "--limit", "2"]) == 0
    assert len(read_jsonl(out / "catalog.jsonl").products) == 2
    assert not any("00001-of" in r for r in QuietHandler.requests)


def test_unreachable_hub_is_a_clear_error(tmp_path, capsys):
    code = load_script().main(["amazon-products", "--output", str(tmp_path),
                               "--hub-url", "http://127.0.0.1:9"])
    assert code == 2
    assert "cannot list Marqo/amazon-products-eval-100k" in capsys.readouterr().err
