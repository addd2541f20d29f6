"""SearchService over the real tiny CLIP and LocalIndex, on the demo catalog."""

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from clipsearch.catalog import Product
from clipsearch.contract import SearchRequest, parse_filters
from clipsearch.errors import (
    ConfigurationError,
    InvalidImageError,
    ModelMismatchError,
    NotFoundError,
    ValidationError,
)
from clipsearch.index.local import LocalIndex
from clipsearch.service import SearchService


@pytest.fixture(scope="module", params=["exact", "ann"])
def service(request, encoder, demo_products, tmp_path_factory):
    # ann_threshold=1 puts even the 40-product demo catalog behind HNSW.
    threshold = 10_000 if request.param == "exact" else 1
    index = LocalIndex(tmp_path_factory.mktemp(f"idx-{request.param}"), ann_threshold=threshold)
    svc = SearchService(encoder, index)
    report = svc.ingest(demo_products, batch_size=16)
    assert report.indexed == len(demo_products) and not report.failed
    assert index.mode == request.param
    return svc


def image_of(product: Product) -> bytes:
    return Path(product.image).read_bytes()


def test_every_product_finds_itself_first(service, demo_products):
    for product in demo_products:
        response = service.search(SearchRequest(image=image_of(product), k=3))
        top = response["results"][0]
        assert top["id"] == product.id, product.id
        assert top["score"] > 0.99


def test_response_shape(service, demo_products):
    response = service.search(SearchRequest(text="red circle", k=5, mode="vector"))
    assert list(response) == ["results", "k", "offset", "took_ms", "model", "mode"]
    assert response["mode"] == "vector"
    assert response["k"] == 5 and response["offset"] == 0
    assert response["model"] == service.model_name == Path(service.encoder.model_id).name
    assert [r["rank"] for r in response["results"]] == [1, 2, 3, 4, 5]
    first = response["results"][0]
    assert list(first) == ["rank", "id", "title", "score", "image", "attributes", "images",
                           "description"]
    scores = [r["score"] for r in response["results"]]
    assert scores == sorted(scores, reverse=True)
    # A product scores by its best vector: its image's or its title's.
    vector = service.encoder.encode_texts(["red circle"])[0]
    stored = service.index.get_vectors([first["id"]])[first["id"]]
    images = service.get_product(first["id"]).images
    assert set(stored) == {f"image:{ref}" for ref in images} | {"title"}
    assert first["score"] == pytest.approx(max(float(vector @ v) for v in stored.values()),
                                           abs=1e-5)


def test_text_defaults_to_hybrid_and_image_to_vector(service, demo_products):
    assert service.search(SearchRequest(text="red circle"))["mode"] == "hybrid"
    image = image_of(demo_products[0])
    assert service.search(SearchRequest(image=image))["mode"] == "vector"
    assert service.search(SearchRequest(product_id=demo_products[0].id))["mode"] == "vector"
    assert service.search(SearchRequest(text="red", image=image))["mode"] == "hybrid"


def test_more_like_this_excludes_the_product(service, demo_products):
    target = demo_products[3]
    response = service.search(SearchRequest(product_id=target.id, k=10))
    ids = [r["id"] for r in response["results"]]
    assert target.id not in ids and len(ids) == 10


def test_offset_pages_through_the_same_ranking(service):
    full = service.search(SearchRequest(text="blue", k=20))["results"]
    page = service.search(SearchRequest(text="blue", k=5, offset=10))["results"]
    assert [r["id"] for r in page] == [r["id"] for r in full[10:15]]
    assert [r["rank"] for r in page] == [11, 12, 13, 14, 15]


def test_min_score_and_filters(service, demo_products):
    image = image_of(demo_products[0])
    results = service.search(SearchRequest(image=image, k=40, min_score=0.999))["results"]
    assert [r["id"] for r in results] == [demo_products[0].id]
    filters = parse_filters({"category": "rug", "price": {"lte": 40}})
    results = service.search(SearchRequest(text="stripes", k=40, filters=filters))["results"]
    expected = {p.id for p in demo_products
                if p.attributes["category"] == "rug" and p.attributes["price"] <= 40}
    assert {r["id"] for r in results} == expected and expected


def test_text_plus_image_fuses_both(service, demo_products):
    image = image_of(demo_products[0])
    text_vec = service.encoder.encode_texts(["green"])[0]
    image_vec = service.encoder.encode_images([image])[0]
    fused = service.query_vector(SearchRequest(text="green", image=image,
                                               text_weight=0.3, image_weight=0.7))
    expected = 0.3 * text_vec + 0.7 * image_vec
    np.testing.assert_allclose(fused, expected / np.linalg.norm(expected), atol=1e-6)
    only_image = service.query_vector(SearchRequest(text="green", image=image,
                                                    text_weight=0, image_weight=1))
    np.testing.assert_allclose(only_image, image_vec, atol=1e-6)


def test_errors(service):
    with pytest.raises(NotFoundError, match="no product with id 'missing'"):
        service.search(SearchRequest(product_id="missing"))
    with pytest.raises(NotFoundError):
        service.product("missing")
    with pytest.raises(ValidationError, match="unknown filter field 'colour'") as info:
        service.search(SearchRequest(text="x", filters=parse_filters({"colour": "red"})))
    assert info.value.field == "filters.colour"
    with pytest.raises(ValidationError, match="range filter on 'color'"):
        service.search(SearchRequest(text="x", filters=parse_filters({"color": {"gt": 1}})))
    with pytest.raises(InvalidImageError):
        service.search(SearchRequest(image=b"GIF89a-but-not-really"))
    with pytest.raises(ValidationError, match="only supported on the AWS"):
        service.search(SearchRequest(image_s3_key="images/a.jpg"))


def test_ingest_reports_bad_images_and_keeps_the_rest(encoder, tmp_path, demo_products):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    products = [
        demo_products[0],
        Product("broken", "Broken", str(broken)),
        Product("missing", "Missing", str(tmp_path / "nope.png")),
        Product("noimage", "No image"),
        Product("extra", "Extra", images=(demo_products[1].image, str(tmp_path / "gone.png"))),
    ]
    service = SearchService(encoder, LocalIndex(tmp_path / "idx"))
    report = service.ingest(products)
    # The product without an image, by its title; "extra" without its missing photo.
    assert report.indexed == 3
    assert report.skipped == []
    assert [(pid, "gone.png" in why) for pid, why in report.left_out] == [("extra", True)]
    assert list(service.index.get_vectors(["extra"])["extra"]) == [
        f"image:{demo_products[1].image}", "title"]
    assert list(service.index.get_vectors(["noimage"])["noimage"]) == ["title"]
    failed = dict(report.failed)
    assert set(failed) == {"broken", "missing"}
    assert "not a readable image" in failed["broken"]
    assert "does not exist" in failed["missing"]
    # Re-ingesting is idempotent.
    assert service.ingest(products).indexed == 3 and service.index.count() == 3


def test_index_built_with_another_model_is_refused(encoder, tmp_path, demo_products):
    index = LocalIndex(tmp_path)
    SearchService(encoder, index).ingest(demo_products[:2])
    # The index itself refuses to be relabelled while it holds vectors (#18) ...
    with pytest.raises(ConfigurationError, match="holds vectors of model"):
        index.set_model("some/other-model")
    # ... so an index made by another model is simulated in the database.
    with sqlite3.connect(tmp_path / "products.sqlite3") as db:
        db.execute("UPDATE meta SET value='some/other-model' WHERE key='model'")
    with pytest.raises(ModelMismatchError, match="built with model 'some/other-model'") as caught:
        SearchService(encoder, index)
    assert caught.value.status == 503  # a model switch's window on AWS: retry, not a 500
