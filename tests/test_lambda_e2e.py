"""End to end through real components: S3 uploads -> S3 notifications -> SQS -> the ingest
Lambda -> the SageMaker endpoint (emulator, tiny packaged CLIP, via boto3) -> OpenSearch
(the real node) -> the query Lambda.

S3 and SQS are moto; the notifications are the ones moto's S3 sends for the
uploads and deletes (the notification configuration is the stack's: created and
removed, on images/ and catalog/). See tests/lambda_support.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.fault_proxy import FaultProxy
from tests.iam_policy import INGEST_FORBIDDEN, QUERY_FORBIDDEN, DomainPermissions
from tests.lambda_support import (
    api_event,
    aws_mock,  # noqa: F401  (fixture)
    call,
    drain,
    endpoint_model_id,  # noqa: F401  (fixture)
    ingest_demo,
    jsonl,
    load_handler,
    make_world,
)


@pytest.fixture(scope="module")
def traffic(opensearch_url):
    """A recording proxy in front of the node: every request the Lambdas send, by Lambda."""
    with FaultProxy(opensearch_url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def world(aws_mock, opensearch_url, traffic, sagemaker_endpoint, endpoint_model_id,  # noqa: F811
          demo_products):
    # One replica, as the stack sets for a multi-node domain (the single test node
    # cannot assign it, but it must be asked for).
    world = make_world(opensearch_url, sagemaker_endpoint, endpoint_model_id,
                       extra_env={"CLIPSEARCH_INDEX_REPLICAS": "1",
                                  "CLIPSEARCH_OPENSEARCH_URL": traffic.url})
    for name, value in world.env.items():
        aws_mock.setenv(name, value)
    world.ingest = load_handler("ingest")
    world.query = load_handler("query")
    world.ingest.handler = traffic.labelled("ingest", world.ingest.handler)
    world.query.handler = traffic.labelled("query", world.query.handler)
    world.reports = ingest_demo(world, world.ingest, demo_products)
    return world


def image_b64(product) -> str:
    return base64.b64encode(Path(product.image).read_bytes()).decode()


def search(world, body: dict) -> tuple[int, dict]:
    status, _, answer = call(world.query, api_event("POST", "/search", body=json.dumps(body)))
    return status, answer


def test_every_product_is_indexed_and_nothing_failed(world, demo_products, sagemaker_endpoint):
    assert [r.failed for r in world.reports] == [[], [], []]
    first = world.reports[0]
    # S3 sent its s3:TestEvent when the notification was configured: acknowledged.
    assert any('"s3:TestEvent"' in m["Body"] for m in world.delivered)
    assert first.processed == len(demo_products) // 2 + 1
    status, _, health = call(world.query, api_event("GET", "/health"))
    assert status == 200
    # The public model name (no local path) and the query cache, off in these tests.
    assert health == {"status": "ok", "model": Path(world.env["CLIPSEARCH_MODEL"]).name,
                      "products": len(demo_products), "query_cache": None}
    assert world.dead_letters() == []


def test_every_index_the_ingest_lambda_created_has_the_stacks_replicas(world):
    created = world.opensearch.indices.get_settings(index=f"{world.alias}*")
    assert set(created) == {f"{world.alias}-v1", f"{world.alias}-catalog"}
    for name, settings in created.items():
        assert settings["settings"]["index"]["number_of_replicas"] == "1", name
    # The alias came with the index creation (the ingest role may not move aliases).
    assert set(world.opensearch.indices.get_alias(name=world.alias)) == {f"{world.alias}-v1"}


@pytest.mark.parametrize("position", [0, 7, 20, 39])
def test_a_catalog_image_as_base64_finds_its_product_first(world, demo_products, position):
    product = demo_products[position]
    status, answer = search(world, {"image": image_b64(product), "k": 5})
    assert status == 200
    top = answer["results"][0]
    assert top["id"] == product.id and top["rank"] == 1
    assert top["score"] == pytest.approx(1.0, abs=1e-4)
    assert top["title"] == product.title and top["attributes"] == dict(product.attributes)


def test_image_s3_key_finds_its_product_first(world, demo_products):
    for product in (demo_products[3], demo_products[31]):
        key = f"images/{Path(product.image).name}"
        status, answer = search(world, {"image_s3_key": key, "k": 3})
        assert status == 200, answer
        assert answer["results"][0]["id"] == product.id
        status, answer = search(world, {"image_s3_key": f"s3://{world.bucket}/{key}", "k": 3})
        assert answer["results"][0]["id"] == product.id


def test_similar_excludes_the_product_itself(world, demo_products):
    product = demo_products[12]
    status, _, answer = call(world.query, api_event("GET", f"/products/{product.id}/similar",
                                                    {"k": "10"}))
    assert status == 200
    ids = [r["id"] for r in answer["results"]]
    assert len(ids) == 10 and product.id not in ids
    assert [r["rank"] for r in answer["results"]] == list(range(1, 11))
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)


def test_result_images_are_presigned_urls_that_serve_the_uploaded_bytes(world, demo_products):
    product = demo_products[5]
    status, _, answer = call(world.query, api_event("GET", f"/products/{product.id}"))
    assert status == 200
    url = answer["image"]
    parts = urlsplit(url)
    assert parts.scheme == "https" and world.bucket in parts.netloc + parts.path
    assert parts.path.endswith(f"images/{Path(product.image).name}")
    query = parse_qs(parts.query)
    assert query["X-Amz-Expires"] == ["120"]  # CLIPSEARCH_IMAGE_URL_TTL
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    fetched = requests.get(url, timeout=10)  # answered by moto's S3
    assert fetched.status_code == 200
    assert fetched.content == Path(product.image).read_bytes()


def test_text_search_with_filters_returns_only_matching_products(world):
    status, answer = search(world, {"text": "red poster", "k": 10,
                                    "filters": {"color": "red"}})
    assert status == 200 and answer["results"]
    assert all(r["attributes"]["color"] == "red" for r in answer["results"])
    status, _, by_get = call(world.query, api_event("GET", "/search",
                                                    {"q": "red poster", "k": "10"}))
    assert status == 200 and len(by_get["results"]) == 10


def test_removing_a_products_only_image_keeps_it_found_by_its_title(world, demo_products):
    product = demo_products[9]
    key = f"images/{Path(product.image).name}"
    world.delete(key)  # moto's S3 sends ObjectRemoved:Delete
    report = drain(world, world.ingest)
    assert report.processed == 1 and not report.failed
    status, _, answer = call(world.query, api_event("GET", f"/products/{product.id}"))
    assert status == 200 and answer["image"] is None
    status, found = search(world, {"text": product.title, "mode": "lexical", "k": 50})
    assert product.id in [r["id"] for r in found["results"]]
    world.put(key, Path(product.image).read_bytes())
    assert not drain(world, world.ingest).failed
    status, _, answer = call(world.query, api_event("GET", f"/products/{product.id}"))
    assert status == 200
    status, found = search(world, {"image": image_b64(product), "k": 1})
    assert found["results"][0]["id"] == product.id


def test_a_second_catalog_updates_metadata_without_reencoding_and_its_deletion_undoes_it(
        world, demo_products, sagemaker_endpoint):
    first, second = demo_products[0], demo_products[1]
    extra = {"id": "extra-1", "title": "Extra poster", "image": Path(first.image).name,
             "attributes": {"color": "teal", "category": "poster", "price": 3.0}}
    renamed = {"id": second.id, "title": "Renamed tile", "image": Path(second.image).name,
               "attributes": dict(second.attributes)}
    before = len(sagemaker_endpoint.requests)
    world.put("catalog/extra.jsonl", jsonl([extra, renamed]))
    assert not drain(world, world.ingest).failed
    # One image to encode (extra-1's) and one request for the two new titles; the
    # renamed product kept its image vector.
    assert len(sagemaker_endpoint.requests) - before == 2
    status, _, product = call(world.query, api_event("GET", f"/products/{second.id}"))
    assert product["title"] == "Renamed tile"
    status, answer = search(world, {"image": image_b64(first), "k": 2})
    assert {r["id"] for r in answer["results"]} == {first.id, "extra-1"}

    world.delete("catalog/extra.jsonl")
    assert not drain(world, world.ingest).failed
    for pid in ("extra-1", second.id):
        status, _, _ = call(world.query, api_event("GET", f"/products/{pid}"))
        assert status == 404  # extra.jsonl defined both last; both went with it
    # Re-uploading the demo catalog brings the product back (vector reused or re-encoded).
    world.put("catalog/demo.jsonl", world.s3.get_object(
        Bucket=world.bucket, Key="catalog/demo.jsonl")["Body"].read())
    assert not drain(world, world.ingest).failed
    status, _, product = call(world.query, api_event("GET", f"/products/{second.id}"))
    assert status == 200 and product["title"] == second.title


def test_multi_image_products_with_titles_answer_hybrid_queries(world):
    from tests.lambda_support import png

    shots = {name: png(color, seed=seed) for seed, (name, color) in enumerate(
        [("kilner-front", (200, 40, 40)), ("kilner-side", (40, 200, 40)),
         ("tumbler-front", (40, 40, 200)), ("tumbler-side", (200, 200, 40))], start=70)}
    for name, data in shots.items():
        world.put(f"images/multi/{name}.png", data)
    records = [{"id": f"{name}-1", "title": title, "description": "glassware for the kitchen",
                "images": [f"multi/{name}-front.png", f"multi/{name}-side.png"],
                "attributes": {"color": "clear", "category": "glass", "price": 5.0}}
               for name, title in (("kilner", "Kilner preserving jar"),
                                   ("tumbler", "Heavy glass tumbler"))]
    world.put("catalog/multi.jsonl", jsonl(records))
    assert not drain(world, world.ingest).failed

    # A rare title word puts its product first in hybrid search, and explain says why.
    status, answer = search(world, {"text": "kilner", "mode": "hybrid", "k": 5,
                                    "explain": True})
    assert status == 200 and answer["mode"] == "hybrid"
    top = answer["results"][0]
    assert top["id"] == "kilner-1"
    assert top["explain"]["signals"]["lexical"]["rank"] == 1
    assert top["explain"]["signals"]["image"]["vectors"] == 2

    # The second image finds its product first, once.
    status, answer = search(world, {"image": base64.b64encode(shots["kilner-side"]).decode(),
                                    "k": 10})
    ids = [r["id"] for r in answer["results"]]
    assert ids[0] == "kilner-1" and ids.count("kilner-1") == 1

    # Removing one image's object keeps the product, found by its other image.
    world.delete("images/multi/kilner-front.png")
    assert not drain(world, world.ingest).failed
    status, answer = search(world, {"image": base64.b64encode(shots["kilner-side"]).decode(),
                                    "k": 3, "explain": True})
    assert answer["results"][0]["id"] == "kilner-1"
    assert answer["results"][0]["explain"]["signals"]["image"]["vectors"] == 1
    status, _, product = call(world.query, api_event("GET", "/products/kilner-1"))
    assert status == 200 and urlsplit(product["image"]).path.endswith("multi/kilner-side.png")
    status, answer = search(world, {"text": "kilner", "mode": "hybrid", "k": 1})
    assert answer["results"][0]["id"] == "kilner-1"


# ------------------------------------------------------------------ least privilege
# Last in the module: by now the Lambdas have sent every kind of request the tests
# above make them send (ingest of images and catalogs, deletions, every API route).


def test_the_lambdas_recorded_traffic_is_exactly_what_their_policies_allow(
        world, traffic, tmp_path_factory):
    from tests.test_stacks import _synth

    synth = _synth("dev", tmp_path_factory.mktemp("cdk-policy"))
    permissions = DomainPermissions(synth.template, synth.config.region)
    roles = {name: synth.logical_id(getattr(synth.stack, f"{name}_function").role)
             for name in ("query", "ingest")}
    alias = synth.config.index_alias
    sent: dict[str, set[tuple[str, str]]] = {"query": set(), "ingest": set()}
    for label, method, path in traffic.recorded:
        assert label in sent, f"{method} {path} sent outside a Lambda invocation"
        # The world's alias stands in for the stack's.
        sent[label].add((method, path.split("?", 1)[0].replace(world.alias, alias)))
    # The traffic covers what each Lambda does, so the check below means something.
    assert {("POST", f"/{alias}/_search"), ("GET", f"/{alias}/_mapping")} <= sent["query"]
    assert any(p == "/_bulk" for _, p in sent["ingest"])
    assert ("PUT", f"/{alias}-v1") in sent["ingest"]
    assert ("PUT", f"/{alias}-catalog") in sent["ingest"]

    refused = {name: sorted(f"{m} {p}: {permissions.verdict(roles[name], m, p)}"
                            for m, p in requests
                            if not permissions.verdict(roles[name], m, p).allowed_by_each)
               for name, requests in sent.items()}
    assert refused == {"query": [], "ingest": []}

    for name, forbidden in (("query", QUERY_FORBIDDEN), ("ingest", INGEST_FORBIDDEN)):
        let_through = [f"{m} {p}" for m, template in forbidden
                       for p in [template.format(alias=alias)]
                       if not permissions.verdict(roles[name], m, p).denied]
        assert let_through == [], name
    # The query role reads: no request it may send writes, whatever the path.
    assert not [r for r in sent["query"] if r[0] not in ("GET", "HEAD", "POST")]
