"""The index contract, continued: hybrid search and multi-vector products, on both backends.

Multi-image products with titles are ingested once per backend through the
real service and the tiny random-weight CLIP, into LocalIndex and a real
OpenSearch node. Random weights mean the vector signal is noise as far as
meaning goes: what these cases check is what must hold whatever the model
(exact words and ids, exact images, paging, filters, explanations).

The catalog is module-scoped (ingesting it per test would cost minutes of CI),
so the OpenSearch handle has its own client and alias: the function-scoped
`opensearch_client` fixture wipes every index after each test that uses it.
"""

import uuid
from pathlib import Path

import numpy as np
import pytest

from clipsearch.catalog import Product
from clipsearch.contract import SearchRequest
from clipsearch.filters import Condition
from clipsearch.index import IndexRecord
from clipsearch.index.local import LocalIndex
from clipsearch.service import SearchService

WORDS = ["mug", "lamp", "chair", "rug", "vase", "poster", "table", "shelf", "clock", "pillow"]
HYBRID_COLORS = ["red", "blue", "green"]
RARE_WORD, SKU = "kilner", "B07X4ZQ"


def _noise_png(rng, path):
    from PIL import Image

    pixels = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return str(path)


@pytest.fixture(scope="module", params=["local", "opensearch"])
def hybrid(request, encoder, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp(f"hybrid-{request.param}")
    if request.param == "local":
        index = LocalIndex(tmp_path / "index")
    else:
        from clipsearch.index.opensearch import OpenSearchIndex, make_client

        client = make_client(request.getfixturevalue("opensearch_url"))
        index = OpenSearchIndex(client, alias=f"hybrid-{uuid.uuid4().hex[:8]}",
                                refresh_on_write=True)
    rng = np.random.default_rng(14)
    products = []
    for i in range(60):
        color = HYBRID_COLORS[i % 3]
        title = f"{color.title()} {WORDS[i % len(WORDS)]} number {i}"
        if i == 17:
            title = f"Glass {RARE_WORD} jar {SKU}"
        images = tuple(_noise_png(rng, tmp_path / f"h{i}-{j}.png") for j in range(2))
        products.append(Product(f"h{i}", title, attributes={"color": color, "price": float(i)},
                                images=images, description=f"a {WORDS[(i + 3) % 10]} for home"))
    service = SearchService(encoder, index)
    report = service.ingest(products, batch_size=16)
    assert report.indexed == 60 and not report.failed and not report.skipped
    yield service, products
    if request.param == "opensearch":
        client.indices.delete(index=f"{index.alias}-v*", ignore_unavailable=True)


def ids_of(response):
    return [r["id"] for r in response["results"]]


@pytest.mark.parametrize("mode", ["hybrid", "lexical"])
@pytest.mark.parametrize("query", [RARE_WORD, SKU.lower(), f"{SKU} please"])
def test_a_word_in_one_title_ranks_that_product_first(hybrid, mode, query):
    service, _ = hybrid
    ids = ids_of(service.search(SearchRequest(text=query, k=10, mode=mode)))
    assert ids[0] == "h17"
    if mode == "lexical":
        assert ids == ["h17"]  # no other product holds the word


@pytest.mark.parametrize("mode", ["hybrid", "lexical"])
def test_an_exact_id_ranks_that_product_first_unless_filtered_out(hybrid, mode):
    service, _ = hybrid
    response = service.search(SearchRequest(text="h39", k=5, mode=mode, explain=True))
    assert ids_of(response)[0] == "h39" and response["results"][0]["score"] == 1.0
    assert response["results"][0]["explain"]["exact_id"] is True
    assert ids_of(response).count("h39") == 1
    blue_only = service.search(SearchRequest(text="h39", k=5, mode=mode,
                                             filters=(Condition("color", values=("blue",)),)))
    assert "h39" not in ids_of(blue_only)  # h39 is red: the filter wins


def test_a_products_second_image_finds_it_first_once(hybrid):
    service, products = hybrid
    for target in (products[5], products[33]):
        second = Path(target.images[1]).read_bytes()
        response = service.search(SearchRequest(image=second, k=60, explain=True))
        ids = ids_of(response)
        assert ids[0] == target.id and ids.count(target.id) == 1
        assert len(ids) == len(set(ids)) == 60  # each product once
        top = response["results"][0]
        assert top["score"] == pytest.approx(1.0, abs=1e-4)
        assert top["explain"]["signals"]["vector"]["matched"] == "image"
        assert top["explain"]["signals"]["vector"]["image_index"] == 1


@pytest.mark.parametrize("mode", ["vector", "lexical", "hybrid"])
@pytest.mark.parametrize("fusion", ["rrf", "weighted"])
def test_pages_concatenate_to_one_big_request(hybrid, mode, fusion):
    service, _ = hybrid
    query = dict(text="red mug lamp home", mode=mode, fusion=fusion)
    whole = ids_of(service.search(SearchRequest(k=50, **query)))
    pages = [r for p in range(5)
             for r in ids_of(service.search(SearchRequest(k=10, offset=10 * p, **query)))]
    assert pages == whole
    assert len(whole) == len(set(whole))
    assert len(whole) == 50 or mode == "lexical"


@pytest.mark.parametrize("mode", ["vector", "lexical", "hybrid"])
def test_filters_hold_in_every_mode(hybrid, mode):
    service, products = hybrid
    conds = (Condition("color", values=("blue",)), Condition("price", lte=40))
    response = service.search(SearchRequest(text="blue chair kilner h17 h1", k=100, mode=mode,
                                            filters=conds))
    allowed = {p.id for p in products if p.attributes["color"] == "blue"
               and p.attributes["price"] <= 40}
    assert set(ids_of(response)) <= allowed
    if mode != "lexical":
        assert set(ids_of(response)) == allowed  # every matching product has a vector


def test_explain_carries_every_signal(hybrid):
    service, _ = hybrid
    response = service.search(SearchRequest(text=RARE_WORD, k=5, explain=True))
    assert response["mode"] == "hybrid"
    for result in response["results"]:
        explain = result["explain"]
        assert explain["mode"] == "hybrid" and explain["fusion"] == "rrf"
        assert explain["score"] == pytest.approx(result["score"], abs=1e-6)
        signals = explain["signals"]
        assert set(signals) == {"vector", "lexical", "image", "title"}
        assert signals["vector"]["rank"] >= 1 and -1 <= signals["vector"]["score"] <= 1
        assert signals["image"]["vectors"] == 2 and signals["title"]["score"] is not None
        # The ranked vector score is the better of the image and title cosines.
        assert signals["vector"]["score"] == pytest.approx(
            max(signals["image"]["score"], signals["title"]["score"]), abs=1e-4)
    lexical = [r["explain"]["signals"]["lexical"] for r in response["results"]]
    assert lexical[0]["rank"] == 1 and lexical[0]["score"] > 0
    # Only one product holds the word: the others were ranked by vectors alone.
    assert all(s == {"rank": None, "score": None} for s in lexical[1:])
    plain = service.search(SearchRequest(text=RARE_WORD, k=5))
    assert all("explain" not in r for r in plain["results"])
    assert ids_of(plain) == ids_of(response)


def test_scores_per_mode(hybrid):
    service, _ = hybrid
    for mode, low in (("lexical", 0.0), ("hybrid", 0.0), ("vector", -1.0)):
        for fusion in ("rrf", "weighted"):
            scores = [r["score"] for r in service.search(
                SearchRequest(text="red lamp", k=30, mode=mode, fusion=fusion))["results"]]
            assert scores == sorted(scores, reverse=True)
            assert all(low <= s <= 1.0 for s in scores)
    lexical = service.search(SearchRequest(text="red lamp", k=30, mode="lexical"))["results"]
    assert lexical[0]["score"] == 1.0  # relative to the best match


def test_removing_one_image_keeps_the_others(hybrid):
    """What the ingest Lambda does when an image is deleted from S3: the product's
    other vectors are re-upserted as they are, without re-encoding."""
    service, products = hybrid
    target = products[8]
    vectors = service.index.get_vectors([target.id])[target.id]
    assert set(vectors) == {f"image:{ref}" for ref in target.images} | {"title"}
    kept = {k: v for k, v in vectors.items() if k != f"image:{target.images[0]}"}
    try:
        service.index.upsert([IndexRecord(target.with_images(target.images[1:]), kept)])
        service.index.flush()
        assert set(service.index.get_vectors([target.id])[target.id]) == set(kept)
        assert service.index.get(target.id).images == target.images[1:]
        first = Path(target.images[0]).read_bytes()
        assert ids_of(service.search(SearchRequest(image=first, k=1)))[0] != target.id
        second = Path(target.images[1]).read_bytes()
        assert ids_of(service.search(SearchRequest(image=second, k=1))) == [target.id]
    finally:  # the catalog is shared by the module
        service.index.upsert([IndexRecord(target, vectors)])
        service.index.flush()
