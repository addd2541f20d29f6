"""The local server around the router: page, assets, images, OpenAPI, CLI wiring.

Also the parity guarantee at its root: what the server sends is byte for
byte what `api.handle` returns, for every shared contract case.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from clipsearch import api, cli
from clipsearch.catalog import Product
from clipsearch.index import IndexRecord
from clipsearch.index.local import LocalIndex
from clipsearch.openapi import build_openapi, dumps
from clipsearch.server import DEFAULT_ENCODE_THREADS, WEB_DIR, create_app, local_image_url
from clipsearch.service import SearchService
from tests.api_cases import cases, comparable

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_OPENAPI = ROOT / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def client(demo_service):
    with TestClient(create_app(demo_service), base_url="http://127.0.0.1") as test_client:
        yield test_client


# ----------------------------------------------------------------------------- parity


def test_server_sends_exactly_what_the_router_returns(client, demo_service, demo_products):
    for case in cases(demo_products):
        resp = client.request(case.method, case.path, params=case.query, content=case.body)
        direct = api.handle(demo_service, case.method, case.path, case.query, case.body,
                            image_url=local_image_url)
        assert resp.status_code == direct.status, case.name
        for name, value in direct.headers.items():
            assert resp.headers[name] == value, (case.name, name)
        if "took_ms" in direct.body:
            assert comparable(resp.json()) == comparable(direct.body), case.name
        else:
            assert resp.content == direct.json_bytes(), case.name


# ----------------------------------------------------------------------------- page


def test_search_page_and_its_assets_are_served(client):
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in resp.headers["content-security-policy"]
    html = resp.text
    for needed in ('id="q"', 'type="file"', 'role="search"', 'id="grid"', 'role="alert"',
                   'aria-live="polite"', 'name="viewport"', '<label for="q"'):
        assert needed in html, needed
    assets = re.findall(r'(?:src|href)="([^":#]+\.(?:js|css))"', html)
    assert sorted(assets) == ["app.js", "config.js", "style.css"]
    for asset in assets:
        served = client.get(f"/{asset}")
        assert served.status_code == 200, asset
        assert served.content == (WEB_DIR / asset).read_bytes()
        kind = "text/javascript" if asset.endswith(".js") else "text/css"
        assert served.headers["content-type"].startswith(kind)
    assert client.head("/").status_code == 200


def test_static_files_are_package_data():
    pyproject = (ROOT / "pyproject.toml").read_text()
    patterns = ("web/*.html", "web/*.css", "web/*.js", "web/*.svg")
    for pattern in patterns:
        assert pattern in pyproject
    shipped = {p.name for p in WEB_DIR.iterdir() if any(p.match(pat[4:]) for pat in patterns)}
    assert shipped == {p.name for p in WEB_DIR.iterdir() if p.is_file()}
    assert shipped == {"index.html", "app.js", "style.css", "config.js", "favicon.svg"}


def test_a_static_file_cannot_shadow_the_api(tmp_path, demo_service):
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "health").write_text("fake")
    with pytest.raises(ValueError, match="shadow"):
        create_app(demo_service, static_dir=tmp_path)
    with pytest.raises(FileNotFoundError):
        create_app(demo_service, static_dir=tmp_path / "nowhere")


# ----------------------------------------------------------------------------- images


def test_product_images_are_served_from_the_catalog(client, demo_products):
    product = demo_products[4]
    resp = client.get(f"/images/{product.id}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/png"
    assert resp.content == Path(product.image).read_bytes()
    head = client.head(f"/images/{product.id}")
    assert head.status_code == 200 and head.headers["content-type"] == "image/png"


def test_every_image_of_a_product_is_served_by_its_position(client, demo_products):
    product = next(p for p in demo_products if len(p.images) > 1)
    for n, image in enumerate(product.images):
        resp = client.get(f"/images/{product.id}/{n}")
        assert resp.status_code == 200 and resp.content == Path(image).read_bytes()
    assert client.get(f"/products/{product.id}").json()["images"] == [
        f"/images/{product.id}"] + [f"/images/{product.id}/{n}"
                                    for n in range(1, len(product.images))]
    for bad in (str(len(product.images)), "x", "-1", "%EF%BC%91", "99999"):
        resp = client.get(f"/images/{product.id}/{bad}")
        assert resp.status_code == 404, bad
        assert resp.json()["error"] == "not_found" and "has no image" in resp.json()["message"]


@pytest.mark.parametrize("path", [
    "/images/..%2F..%2F..%2Fetc%2Fpasswd",
    "/images/%2Fetc%2Fpasswd",
    "/images/demo-red-circle%2F..%2F..%2Fcatalog.jsonl",
    "/images/%2E%2E",
    "/images/catalog.jsonl",
])
def test_no_path_reaches_a_file_that_is_not_a_catalog_image(client, path):
    resp = client.get(path)
    assert resp.status_code in (400, 404), resp.status_code
    assert resp.json()["error"] in ("invalid_request", "not_found")
    assert "root:" not in resp.text


@pytest.fixture(scope="module")
def odd_images_client(encoder, tmp_path_factory):
    """Products whose images a local server must not (or cannot) serve."""
    tmp = tmp_path_factory.mktemp("odd-images")
    (tmp / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>')
    (tmp / "notes.txt").write_text("secret")
    images = {"svg": str(tmp / "logo.svg"), "txt": str(tmp / "notes.txt"),
              "s3": "s3://bucket/images/a.jpg", "gone": str(tmp / "missing.png"),
              "web": "https://cdn.example.com/a.jpg", "none": None}
    index = LocalIndex(tmp / "index")
    rng = np.random.default_rng(0)
    records = []
    for pid, image in images.items():
        vector = rng.normal(size=encoder.dimension).astype(np.float32)
        records.append(IndexRecord(Product(pid, f"product {pid}", image),
                                   vector / np.linalg.norm(vector)))
    assert index.upsert(records).indexed == len(images)
    with TestClient(create_app(SearchService(encoder, index)),
                        base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.mark.parametrize("pid", ["svg", "txt", "s3", "gone", "web", "none"])
def test_only_local_raster_images_are_served(odd_images_client, pid):
    resp = odd_images_client.get(f"/images/{pid}")
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found"
    assert "secret" not in resp.text and "<script" not in resp.text


def test_image_links_in_results(odd_images_client):
    links = {pid: odd_images_client.get(f"/products/{pid}").json()["image"]
             for pid in ("svg", "txt", "s3", "gone", "web", "none")}
    assert links == {"svg": None, "txt": None, "s3": None, "gone": "/images/gone",
                     "web": "https://cdn.example.com/a.jpg", "none": None}


def test_image_link_escapes_the_id():
    product = Product("a:b+c=d@e", "t", "/x/y.jpg")
    assert local_image_url(product) == "/images/a%3Ab%2Bc%3Dd%40e"


# ----------------------------------------------------------------------------- OpenAPI


def test_served_openapi_equals_the_committed_document(client):
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    committed = COMMITTED_OPENAPI.read_text(encoding="utf-8")
    assert served.json() == json.loads(committed)
    assert committed == dumps(build_openapi()), (
        "docs/openapi.json is stale: python -m clipsearch.openapi > docs/openapi.json")


def test_openapi_describes_every_route_and_the_error_schema():
    doc = json.loads(COMMITTED_OPENAPI.read_text(encoding="utf-8"))
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items()
                  for method in ops}
    routed = {(path, method) for path, methods in api.ROUTES for method in methods}
    assert documented == routed
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message", "field"]
    assert set(error["properties"]) == {"error", "message", "field"}
    responses = doc["components"]["responses"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"200", "405", "500", "503"} <= codes, (path, method)
            assert "400" in codes
            if "{id}" in path or method == "post":
                assert "404" in codes, (path, method)
            for code, ref in op["responses"].items():
                if code.startswith(("4", "5")):
                    name = ref["$ref"].rsplit("/", 1)[1]
                    schema = responses[name]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}
    assert "413" in doc["paths"]["/search"]["post"]["responses"]
    assert "Retry-After" in responses["ServiceUnavailable"]["headers"]
    assert "Allow" in responses["MethodNotAllowed"]["headers"]


def _json_schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """An OpenAPI 3.0 schema as plain JSON Schema: refs inlined, nullable as a type."""

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return convert(doc["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
        out = {k: convert(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable"):
            out["type"] = [node["type"], "null"]
        return out

    return convert(copy.deepcopy(doc["components"]["schemas"][name]))


def test_real_responses_match_the_documented_schemas(client, demo_products):
    jsonschema = pytest.importorskip("jsonschema")
    doc = json.loads(COMMITTED_OPENAPI.read_text(encoding="utf-8"))
    schema_of_path = {"/health": "Health", "/facets": "Facets"}
    for case in cases(demo_products):
        resp = client.request(case.method, case.path, params=case.query, content=case.body)
        if resp.status_code != 200:
            name = "Error"
        elif case.path.startswith("/products/") and not case.path.endswith("/similar"):
            name = "Product"
        else:
            name = schema_of_path.get(case.path, "SearchResponse")
        jsonschema.validate(resp.json(), _json_schema(doc, name))
        if case.method == "POST" and case.status == 200:
            jsonschema.validate(json.loads(case.body), _json_schema(doc, "SearchRequest"))


# ----------------------------------------------------------------------------- CLI


def test_cli_serve_wires_the_service(monkeypatch, tmp_path, tiny_clip_dir, encoder,
                                     demo_products):
    """By default: query cache and micro-batching on, one torch thread per pass."""
    import torch

    from clipsearch.encoders.batching import MicroBatchingEncoder

    index = LocalIndex(tmp_path / "index")
    SearchService(encoder, index).ingest(demo_products[:5])
    seen: dict[str, Any] = {}

    def fake_serve(service, *, host, port, encode_threads, allowed_hosts):
        seen.update(host=host, port=port, count=service.index.count(),
                    model=service.encoder.model_id, encoder=service.encoder,
                    cache=service.query_cache, encode_threads=encode_threads)

    monkeypatch.setattr("clipsearch.server.serve", fake_serve)
    monkeypatch.delenv("CLIPSEARCH_ENCODE_THREADS", raising=False)
    threads = torch.get_num_threads()
    base = ["--data-dir", str(tmp_path), "--model", str(tiny_clip_dir)]
    try:
        code = cli.main([*base, "serve", "--host", "0.0.0.0", "--port", "8123"])
        assert code == 0
        assert (seen["host"], seen["port"], seen["count"], seen["model"]) == \
            ("0.0.0.0", 8123, 5, str(tiny_clip_dir))
        assert isinstance(seen["encoder"], MicroBatchingEncoder)
        assert seen["encoder"].max_batch == 16 and seen["encode_threads"] == 32
        assert seen["cache"].max_entries == 10_000
        assert torch.get_num_threads() == 1

        code = cli.main([*base, "--threads", "2", "serve", "--no-query-cache",
                         "--no-micro-batching"])
        assert code == 0 and seen["cache"] is None and seen["encode_threads"] is None
        assert not isinstance(seen["encoder"], MicroBatchingEncoder)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_cli_serve_rejects_a_bad_port(capsys, tmp_path, tiny_clip_dir):
    code = cli.main(["--data-dir", str(tmp_path), "--model", str(tiny_clip_dir), "serve",
                     "--port", "70000"])
    assert code == cli.EXIT_USAGE
    assert "--port must be 0-65535" in capsys.readouterr().err


def test_encoding_requests_get_their_own_small_pool(demo_service, monkeypatch):
    """/search runs on a FIFO pool of encode_threads; cheap routes never queue behind it."""
    import threading

    import anyio

    seen: dict[str, tuple[float, float]] = {}
    real_search, real_product = demo_service.search, demo_service.product

    def limits(name):
        def record(*args, **kwargs):
            limiter = test_client.app.state.encode_limiter
            seen[name] = (limiter.total_tokens, limiter.borrowed_tokens)
            assert threading.current_thread() is not threading.main_thread()
            real = real_search if name == "search" else real_product
            return real(*args, **kwargs)
        return record

    monkeypatch.setattr(demo_service, "search", limits("search"))
    monkeypatch.setattr(demo_service, "product", limits("product"))
    with TestClient(create_app(demo_service, encode_threads=3),
                        base_url="http://127.0.0.1") as test_client:
        assert isinstance(test_client.app.state.encode_limiter, anyio.CapacityLimiter)
        assert test_client.get("/search", params={"q": "red"}).status_code == 200
        assert test_client.get("/products/demo-red-circle").status_code == 200
    assert seen == {"search": (3, 1), "product": (3, 0)}
    monkeypatch.setenv("CLIPSEARCH_ENCODE_THREADS", "5")
    assert create_app(demo_service).state.encode_threads == 5
    monkeypatch.delenv("CLIPSEARCH_ENCODE_THREADS")
    assert create_app(demo_service).state.encode_threads == DEFAULT_ENCODE_THREADS >= 2
    with pytest.raises(ValueError, match="encode_threads"):
        create_app(demo_service, encode_threads=-1)
