"""The API contract, through the real HTTP stack: TestClient -> FastAPI -> api.handle.

Every route, and every error the contract names, with its status and its
`{"error", "message", "field"}` body.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clipsearch import api, config
from clipsearch.contract import internal_error_body
from clipsearch.errors import ServiceUnavailableError
from clipsearch.server import create_app
from tests.api_cases import cases, comparable
from tests.conftest import png_bytes


@pytest.fixture(scope="module")
def client(demo_service):
    with TestClient(create_app(demo_service), base_url="http://127.0.0.1") as test_client:
        yield test_client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(resp, status: int, code: str, field: str | None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert list(body) == ["error", "message", "field"]
    assert (body["error"], body["field"]) == (code, field), body
    assert isinstance(body["message"], str) and len(body["message"]) > 5
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    assert not re.search(r"at 0x[0-9a-fA-F]+", body["message"]), body["message"]
    return body


# ----------------------------------------------------------------------------- errors

HUGE = b'{"text": "' + b"a" * config.MAX_REQUEST_BYTES + b'"}'
NOT_AN_IMAGE = b64(b"GIF89a but really just some text")

POST_ERRORS = [
    # (id, raw body or JSON-able object, status, code, field)
    ("malformed-json", b'{"text": "red"', 400, "invalid_request", "body"),
    ("empty-body", b"", 400, "invalid_request", "body"),
    ("json-array", b"[1, 2, 3]", 400, "invalid_request", "body"),
    ("json-string", b'"red"', 400, "invalid_request", "body"),
    ("not-utf8", b"\xff\xfe{", 400, "invalid_request", "body"),
    ("huge-payload", HUGE, 413, "payload_too_large", "body"),
    ("non-image-bytes", {"image": NOT_AN_IMAGE}, 400, "invalid_image", "image"),
    ("non-image-data-url", {"image": "data:image/png;base64," + NOT_AN_IMAGE}, 400,
     "invalid_image", "image"),
    ("bad-base64", {"image": "***"}, 400, "invalid_request", "image"),
    ("image-not-string", {"image": 12}, 400, "invalid_request", "image"),
    ("empty-text", {"text": ""}, 400, "invalid_request", "text"),
    ("blank-text", {"text": "  \t "}, 400, "invalid_request", "text"),
    ("overlong-text", {"text": "a" * (config.MAX_TEXT_CHARS + 1)}, 400, "invalid_request",
     "text"),
    ("text-not-string", {"text": ["red"]}, 400, "invalid_request", "text"),
    ("no-query", {"k": 5}, 400, "invalid_request", "text"),
    ("k-0", {"text": "red", "k": 0}, 400, "invalid_request", "k"),
    ("k-1000", {"text": "red", "k": 1000}, 400, "invalid_request", "k"),
    ("k-string", {"text": "red", "k": "ten"}, 400, "invalid_request", "k"),
    ("k-bool", {"text": "red", "k": True}, 400, "invalid_request", "k"),
    ("k-fraction", {"text": "red", "k": 2.5}, 400, "invalid_request", "k"),
    ("offset-negative", {"text": "red", "offset": -1}, 400, "invalid_request", "offset"),
    ("offset-too-far", {"text": "red", "offset": config.OFFSET_MAX + 1}, 400,
     "invalid_request", "offset"),
    ("min-score-range", {"text": "red", "min_score": 1.5}, 400, "invalid_request",
     "min_score"),
    ("unknown-field", {"txt": "red"}, 400, "invalid_request", "txt"),
    ("unknown-filter-field", {"text": "red", "filters": {"colour": "red"}}, 400,
     "unknown_filter_field", "filters.colour"),
    ("filters-not-object", {"text": "red", "filters": "red"}, 400, "invalid_request",
     "filters"),
    ("filter-range-on-keyword", {"text": "red", "filters": {"color": {"gte": 1}}}, 400,
     "invalid_request", "filters.color"),
    ("filter-bad-range-op", {"text": "red", "filters": {"price": {"between": [1, 2]}}}, 400,
     "invalid_request", "filters.price"),
    ("filter-empty-list", {"text": "red", "filters": {"color": []}}, 400, "invalid_request",
     "filters.color"),
    ("filter-not-a-number", {"text": "red", "filters": {"price": "cheap"}}, 400,
     "invalid_request", "filters.price"),
    ("filter-nested-object-value", {"text": "red", "filters": {"color": [{"a": 1}]}}, 400,
     "invalid_request", "filters.color"),
    ("too-many-filters", {"text": "red", "filters": {f"f{i}": 1 for i in range(17)}}, 400,
     "invalid_request", "filters"),
    ("product-id-and-text", {"text": "red", "product_id": "demo-red-circle"}, 400,
     "invalid_request", "product_id"),
    ("product-id-bad-chars", {"product_id": "bad id!"}, 400, "invalid_request", "product_id"),
    ("unknown-product-id", {"product_id": "no-such-product"}, 404, "not_found", "product_id"),
    ("negative-weight", {"text": "red", "image": b64(png_bytes()),
                         "weights": {"text": -1}}, 400, "invalid_request", "weights.text"),
    ("zero-weights", {"text": "red", "image": b64(png_bytes()),
                      "weights": {"text": 0, "image": 0}}, 400, "invalid_request", "weights"),
    ("s3-key-locally", {"image_s3_key": "uploads/q.jpg"}, 400, "invalid_request",
     "image_s3_key"),
]


@pytest.mark.parametrize("body, status, code, field",
                         [c[1:] for c in POST_ERRORS], ids=[c[0] for c in POST_ERRORS])
def test_post_search_errors(client, body, status, code, field):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = client.post("/search", content=raw, headers={"Content-Type": "application/json"})
    assert_error(resp, status, code, field)


GET_ERRORS = [
    # (id, path, params, status, code, field)
    ("search-no-q", "/search", {}, 400, "invalid_request", "q"),
    ("search-empty-q", "/search", {"q": ""}, 400, "invalid_request", "q"),
    ("search-overlong-q", "/search", {"q": "x" * 1001}, 400, "invalid_request", "q"),
    ("search-k-0", "/search", {"q": "red", "k": "0"}, 400, "invalid_request", "k"),
    ("search-k-1000", "/search", {"q": "red", "k": "1000"}, 400, "invalid_request", "k"),
    ("search-k-word", "/search", {"q": "red", "k": "many"}, 400, "invalid_request", "k"),
    ("search-offset", "/search", {"q": "red", "offset": "-3"}, 400, "invalid_request",
     "offset"),
    ("search-min-score", "/search", {"q": "red", "min_score": "high"}, 400, "invalid_request",
     "min_score"),
    ("search-filters-not-json", "/search", {"q": "red", "filters": "color=red"}, 400,
     "invalid_request", "filters"),
    ("search-filters-array", "/search", {"q": "red", "filters": "[1]"}, 400,
     "invalid_request", "filters"),
    ("search-unknown-filter", "/search", {"q": "red", "filters": '{"size": "L"}'}, 400,
     "unknown_filter_field", "filters.size"),
    ("search-unknown-param", "/search", {"q": "red", "limit": "3"}, 400, "invalid_request",
     "limit"),
    ("product-unknown", "/products/no-such-product", {}, 404, "not_found", "id"),
    ("product-bad-id", "/products/bad id!", {}, 400, "invalid_request", "id"),
    ("product-param", "/products/demo-red-circle", {"x": "1"}, 400, "invalid_request", "x"),
    ("similar-unknown", "/products/no-such-product/similar", {}, 404, "not_found", "id"),
    ("similar-bad-id", "/products/bad id!/similar", {}, 400, "invalid_request", "id"),
    ("similar-k-0", "/products/demo-red-circle/similar", {"k": "0"}, 400, "invalid_request",
     "k"),
    ("similar-k-1000", "/products/demo-red-circle/similar", {"k": "1000"}, 400,
     "invalid_request", "k"),
    ("similar-unknown-filter", "/products/demo-red-circle/similar",
     {"filters": '{"colour": "red"}'}, 400, "unknown_filter_field", "filters.colour"),
    ("similar-q-param", "/products/demo-red-circle/similar", {"q": "red"}, 400,
     "invalid_request", "q"),
    ("health-param", "/health", {"verbose": "1"}, 400, "invalid_request", "verbose"),
    ("facets-param", "/facets", {"field": "color"}, 400, "invalid_request", "field"),
    ("unknown-route", "/nope", {}, 404, "not_found", None),
    ("unknown-subroute", "/products/demo-red-circle/related", {}, 404, "not_found", None),
    ("too-deep", "/products/a/similar/b", {}, 404, "not_found", None),
    ("products-no-id", "/products", {}, 404, "not_found", None),
]


@pytest.mark.parametrize("path, params, status, code, field",
                         [c[1:] for c in GET_ERRORS], ids=[c[0] for c in GET_ERRORS])
def test_get_errors(client, path, params, status, code, field):
    assert_error(client.get(path, params=params), status, code, field)


@pytest.mark.parametrize("method, path, allow", [
    ("DELETE", "/search", "GET, POST"),
    ("PUT", "/search", "GET, POST"),
    ("POST", "/health", "GET"),
    ("POST", "/facets", "GET"),
    ("PATCH", "/products/demo-red-circle", "GET"),
    ("POST", "/products/demo-red-circle/similar", "GET"),
])
def test_wrong_method_is_405_with_allow(client, method, path, allow):
    resp = client.request(method, path)
    assert_error(resp, 405, "method_not_allowed", None)
    assert resp.headers["allow"] == allow


class _Broken:
    """A service whose dependencies fail, to see what clients get."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def search(self, *args, **kwargs):
        raise self.exc

    product = health = search


def test_service_unavailable_is_503_with_retry_after():
    exc = ServiceUnavailableError("the model endpoint is warming up", retry_after=7)
    with TestClient(create_app(_Broken(exc)), base_url="http://127.0.0.1") as client:
        resp = client.post("/search", json={"text": "red"})
    body = assert_error(resp, 503, "service_unavailable", None)
    assert resp.headers["retry-after"] == "7"
    # The detail goes to the log; the client gets the class's public text (#18).
    assert body["message"] == ServiceUnavailableError.public_text


def test_a_bug_is_an_opaque_500_and_is_logged(caplog):
    secret = "password=hunter2 in /srv/app/clipsearch/service.py"
    with TestClient(create_app(_Broken(RuntimeError(secret))),
                        base_url="http://127.0.0.1") as client, \
            caplog.at_level(logging.ERROR, logger="clipsearch.api"):
        resp = client.get("/health")
    assert resp.status_code == 500
    assert resp.json() == internal_error_body()
    assert "hunter2" not in resp.text and "service.py" not in resp.text
    record = next(r for r in caplog.records if r.name == "clipsearch.api")
    assert record.exc_info and "hunter2" in str(record.exc_info[1])


def test_declared_oversize_body_is_refused_before_parsing(demo_service):
    resp = api.handle(demo_service, "POST", "/search", {}, b'{"text": "red"}',
                      {"Content-Length": str(config.MAX_REQUEST_BYTES + 1)})
    assert resp.status == 413 and resp.body["error"] == "payload_too_large"


# ----------------------------------------------------------------------------- successes


def test_text_search_post(client, demo_service):
    resp = client.post("/search", json={"text": "red circle", "k": 5})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert list(body) == ["results", "k", "offset", "took_ms", "model", "mode"]
    assert body["mode"] == "hybrid"
    assert (body["k"], body["offset"], body["model"]) == (5, 0,
                                                         demo_service.model_name)
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4, 5]
    for result in body["results"]:
        assert list(result) == ["rank", "id", "title", "score", "image", "attributes",
                                "images", "description"]
        assert result["image"] == f"/images/{result['id']}"
        product = demo_service.index.get(result["id"])
        # Every image, main first; the others at /images/{id}/{n}.
        assert result["images"] == [result["image"]] + [
            f"/images/{result['id']}/{n}" for n in range(1, len(product.images))]
        assert result["description"] == product.description
        assert result["title"] == product.title
        assert result["attributes"] == dict(product.attributes)
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_get_search_equals_post_search(client):
    post = client.post("/search", json={"text": "blue striped rug", "k": 7,
                                        "filters": {"price": {"lte": 40}}}).json()
    get = client.get("/search", params={"q": "blue striped rug", "k": 7,
                                         "filters": '{"price": {"lte": 40}}'}).json()
    assert comparable(get) == comparable(post)
    assert all(r["attributes"]["price"] <= 40 for r in get["results"])


def test_image_query_finds_the_product_first(client, demo_products):
    target = demo_products[11]
    raw = Path(target.image).read_bytes()
    for image in (b64(raw), "data:image/png;base64," + b64(raw)):
        top = client.post("/search", json={"image": image, "k": 3}).json()["results"][0]
        assert top["id"] == target.id and top["score"] > 0.99


def test_text_plus_image_blends_both(client, demo_products):
    image = b64(Path(demo_products[11].image).read_bytes())

    def ids(payload: dict[str, Any]) -> list[tuple[str, float]]:
        # vector mode: the blend is of query vectors, which words would mask.
        body = client.post("/search", json={**payload, "k": 40, "mode": "vector"}).json()
        return [(r["id"], r["score"]) for r in body["results"]]

    both = ids({"text": "red circle", "image": image})
    assert both != ids({"text": "red circle"}) and both != ids({"image": image})
    image_heavy = ids({"text": "red circle", "image": image,
                       "weights": {"text": 0.01, "image": 0.99}})
    assert image_heavy[0][0] == demo_products[11].id


def test_more_like_this_post_and_get_agree_and_exclude_the_product(client, demo_products):
    pid = demo_products[5].id
    get = client.get(f"/products/{pid}/similar", params={"k": 6}).json()
    post = client.post("/search", json={"product_id": pid, "k": 6}).json()
    assert comparable(get) == comparable(post)
    assert len(get["results"]) == 6
    assert pid not in [r["id"] for r in get["results"]]


def test_pagination_is_a_window_of_one_ranking(client):
    full = client.get("/search", params={"q": "poster", "k": 10}).json()["results"]
    page = client.get("/search", params={"q": "poster", "k": 5, "offset": 5}).json()
    assert page["offset"] == 5
    assert [r["rank"] for r in page["results"]] == [6, 7, 8, 9, 10]
    assert [r["id"] for r in page["results"]] == [r["id"] for r in full[5:]]


def test_min_score_cuts_results(client):
    full = client.post("/search", json={"text": "poster", "k": 40}).json()["results"]
    cut = sorted(r["score"] for r in full)[20]
    kept = client.post("/search", json={"text": "poster", "k": 40, "min_score": cut}).json()
    assert kept["results"] and all(r["score"] >= cut for r in kept["results"])
    assert len(kept["results"]) == sum(r["score"] >= cut for r in full)


def test_filters_restrict_results(client):
    body = client.post("/search", json={"text": "poster", "k": 100, "filters": {
        "color": ["red", "blue"], "price": {"gte": 10, "lt": 40}}}).json()
    assert body["results"]
    for r in body["results"]:
        assert r["attributes"]["color"] in ("red", "blue")
        assert 10 <= r["attributes"]["price"] < 40
    only_rugs = client.get("/search", params={"q": "x", "k": 100,
                                              "filters": '{"category": "rug"}'}).json()
    assert {r["attributes"]["category"] for r in only_rugs["results"]} == {"rug"}
    assert len(only_rugs["results"]) == 8


def test_product(client, demo_products):
    product = demo_products[2]
    body = client.get(f"/products/{product.id}").json()
    assert body == {"id": product.id, "title": product.title,
                    "image": f"/images/{product.id}", "attributes": dict(product.attributes),
                    "images": [f"/images/{product.id}"] + [
                        f"/images/{product.id}/{n}" for n in range(1, len(product.images))],
                    "description": product.description}


def test_health_and_trailing_slash(client, demo_service, demo_products):
    for path in ("/health", "/health/"):
        assert client.get(path).json() == {"status": "ok",
                                           "model": demo_service.model_name,
                                           "products": len(demo_products),
                                           "query_cache": None}


def test_facets_describe_the_catalog(client, demo_products):
    body = client.get("/facets").json()
    assert body["products"] == len(demo_products) and body["complete"] is True
    fields = body["fields"]
    assert sorted(fields) == ["category", "color", "pattern", "price"]
    colors = fields["color"]
    assert colors["type"] == "keyword" and colors["truncated"] is False
    assert sorted(v["value"] for v in colors["values"]) == sorted(
        {p.attributes["color"] for p in demo_products})
    assert {v["count"] for v in colors["values"]} == {5}
    categories = {v["value"]: v["count"] for v in fields["category"]["values"]}
    assert categories == {"poster": 16, "tile": 8, "rug": 8, "cushion": 8}
    assert list(categories) == ["poster", "cushion", "rug", "tile"]  # by count, then name
    prices = [p.attributes["price"] for p in demo_products]
    assert fields["price"] == {"type": "number", "min": min(prices), "max": max(prices)}


def test_every_route_in_the_table_answers(client, demo_products):
    """ROUTES is what OpenAPI documents; each entry must be live."""
    pid = demo_products[0].id
    for template, methods in api.ROUTES:
        path = template.replace("{id}", pid)
        for method in methods:
            if method == "POST":
                resp = client.post(path, json={"text": "red"})
            else:
                resp = client.get(path, params={"q": "red"} if path == "/search" else None)
            assert resp.status_code == 200, (method, template, resp.text)


def test_shared_cases_get_their_status(client, demo_products):
    """The table the Lambda parity tests replay; here through the local server."""
    for case in cases(demo_products):
        resp = client.request(case.method, case.path, params=case.query, content=case.body)
        assert resp.status_code == case.status, (case.name, resp.text)
        if case.error:
            assert resp.json()["error"] == case.error, case.name
