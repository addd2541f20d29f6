"""Request validation: every bad input is a 4xx-class error naming the problem."""

import base64
import json

import pytest

from clipsearch import config
from clipsearch.contract import (
    decode_json_body,
    parse_search_body,
    parse_search_query,
    parse_similar_query,
)
from clipsearch.errors import PayloadTooLargeError, ValidationError
from clipsearch.filters import Condition, bind_filters, parse_cli_filters, parse_filters
from tests.conftest import png_bytes


def test_a_full_body_parses():
    image = png_bytes()
    request = parse_search_body({
        "text": " red shoe ", "image": base64.b64encode(image).decode(), "k": 5, "offset": 10,
        "min_score": 0.2, "filters": {"brand": "Acme", "price": {"lte": 50}},
        "weights": {"text": 0.2, "image": 0.8}})
    assert request.text == "red shoe" and request.image == image
    assert (request.k, request.offset, request.min_score) == (5, 10, 0.2)
    assert request.filters == (Condition("brand", values=("Acme",)), Condition("price", lte=50))
    assert (request.text_weight, request.image_weight) == (0.2, 0.8)


@pytest.mark.parametrize("body, field, message", [
    ({"text": "x", "k": 0}, "k", "between 1 and 100"),
    ({"text": "x", "k": 1000}, "k", "between 1 and 100"),
    ({"text": "x", "k": "ten"}, "k", "integer"),
    ({"text": "x", "k": True}, "k", "integer"),
    ({"text": "x", "offset": -1}, "offset", "between 0"),
    ({"text": ""}, "text", "empty"),
    ({"text": "   "}, "text", "empty"),
    ({"text": "x" * (config.MAX_TEXT_CHARS + 1)}, "text", "limit is"),
    ({"text": 5}, "text", "string"),
    ({}, "text", "at least one of"),
    ({"text": "x", "colour": "red"}, "colour", "unknown field"),
    ({"image": "@@not base64@@"}, "image", "not valid base64"),
    ({"product_id": "a", "text": "x"}, "product_id", "cannot be combined"),
    ({"product_id": "bad id!"}, "product_id", "may only hold"),
    ({"text": "x", "min_score": 2}, "min_score", "between -1 and 1"),
    ({"text": "x", "filters": ["red"]}, "filters", "must be an object"),
    ({"text": "x", "filters": {"price": {"between": [1, 2]}}}, "filters.price", "range filter"),
    ({"text": "x", "filters": {"color": {"a": 1}}}, "filters.color", "range filter"),
    ({"text": "x", "filters": {"color": []}}, "filters.color", "1 to 100"),
    ({"text": "x", "filters": {"color": {"x": 1}}}, "filters.color", "gt, gte"),
    ({"text": "x", "filters": {"tags": {"k": "v"}}}, "filters.tags", "range"),
    ({"text": "x", "filters": {"c": None}}, "filters.c", "string, number or boolean"),
    ({"text": "x", "weights": {"text": -1}}, "weights.text", ">= 0"),
    ({"text": "x", "weights": {"text": 0, "image": 0}}, "weights", "both be zero"),
    ({"text": "x", "mode": "semantic"}, "mode", "one of vector, lexical, hybrid"),
    ({"text": "x", "mode": 1}, "mode", "one of"),
    ({"image": base64.b64encode(png_bytes()).decode(), "mode": "hybrid"}, "mode",
     "has none; use mode vector"),
    ({"product_id": "a", "mode": "lexical"}, "mode", "more like this has none"),
    ({"text": "x", "explain": "yes"}, "explain", "true or false"),
    ({"text": "x", "fusion": "max"}, "fusion", "one of rrf, weighted"),
    ({"text": "x", "lexical_weight": 1.5}, "lexical_weight", "between 0 and 1"),
    ({"text": "x", "lexical_weight": "a"}, "lexical_weight", "between 0 and 1"),
])
def test_bad_bodies(body, field, message):
    with pytest.raises(ValidationError, match=message) as info:
        parse_search_body(body)
    assert info.value.field == field
    assert info.value.status == 400


def test_modes_default_by_query_kind_and_parse_from_both_forms():
    assert parse_search_body({"text": "x"}).effective_mode == "hybrid"
    image = base64.b64encode(png_bytes()).decode()
    assert parse_search_body({"image": image}).effective_mode == "vector"
    assert parse_search_body({"text": "x", "image": image}).effective_mode == "hybrid"
    assert parse_search_body({"product_id": "a"}).effective_mode == "vector"
    body = parse_search_body({"text": "x", "mode": "lexical", "explain": True,
                              "fusion": "weighted", "lexical_weight": 0.25})
    query = parse_search_query({"q": "x", "mode": "lexical", "explain": "true",
                                "fusion": "weighted", "lexical_weight": "0.25"})
    assert body == query
    assert (body.mode, body.explain, body.fusion, body.lexical_weight) == (
        "lexical", True, "weighted", 0.25)
    similar = parse_similar_query("B07X", {"mode": "vector", "explain": "1"})
    assert similar.effective_mode == "vector" and similar.explain
    with pytest.raises(ValidationError, match="more like this has none"):
        parse_similar_query("B07X", {"mode": "hybrid"})


def test_oversize_image_is_413():
    big = base64.b64encode(b"\0" * (config.MAX_IMAGE_BYTES + 10)).decode()
    with pytest.raises(PayloadTooLargeError) as info:
        parse_search_body({"image": big})
    assert info.value.status == 413


@pytest.mark.parametrize("raw, message", [
    (b"", "empty"), (b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_bad_json(raw, message):
    with pytest.raises(ValidationError, match=message):
        decode_json_body(raw)


def test_huge_body_is_413():
    with pytest.raises(PayloadTooLargeError):
        decode_json_body(json.dumps({"text": "x" * (config.MAX_REQUEST_BYTES + 1)}))


def test_query_string_forms():
    request = parse_search_query({"q": "boots", "k": "3", "offset": "2",
                                  "filters": '{"brand": "Acme"}'})
    assert (request.text, request.k, request.offset) == ("boots", 3, 2)
    assert request.filters == (Condition("brand", values=("Acme",)),)
    with pytest.raises(ValidationError, match="q is required"):
        parse_search_query({"k": "3"})
    with pytest.raises(ValidationError, match="unknown query parameter 'kk'"):
        parse_search_query({"q": "x", "kk": "3"})
    with pytest.raises(ValidationError, match="JSON object"):
        parse_search_query({"q": "x", "filters": "{brand"})
    similar = parse_similar_query("B07X", {"k": "4"})
    assert (similar.product_id, similar.k, similar.text) == ("B07X", 4, None)
    with pytest.raises(ValidationError, match="unknown query parameter 'q'") as info:
        parse_similar_query("B07X", {"q": "boots"})
    assert info.value.field == "q"


def test_cli_filters_and_binding():
    raw = parse_cli_filters(["brand=Acme", "price>=10", "price<20", "color=red", "color=blue",
                             "in_stock=true"])
    assert raw == {"brand": "Acme", "price": {"gte": 10.0, "lt": 20.0},
                   "color": ["red", "blue"], "in_stock": "true"}
    fields = {"brand": "keyword", "price": "number", "color": "keyword", "in_stock": "boolean"}
    bound = bind_filters(parse_filters(raw), fields)
    assert Condition("in_stock", values=(True,)) in bound
    assert bind_filters(parse_filters({"price": "12"}), fields) == (
        Condition("price", values=(12.0,)),)
    for bad in (["price>=cheap"], ["=x"], ["brand"]):
        with pytest.raises(ValidationError):
            parse_cli_filters(bad)
    with pytest.raises(ValidationError, match="not a number"):
        bind_filters(parse_filters({"price": "cheap"}), fields)
    with pytest.raises(ValidationError, match="not a boolean"):
        bind_filters(parse_filters({"in_stock": "maybe"}), fields)
