"""The OpenAPI 3 document of the clipsearch API, built from the same limits the code enforces.

Why generated rather than hand-edited: the limits (k, offset, text length,
payload size) live in `clipsearch.config`, and a hand-written copy would
drift from them. The document is committed as `docs/openapi.json`, because
the CDK stack builds its API Gateway models from it; a test fails when the
committed file and this builder disagree. Regenerate with

    python -m clipsearch.openapi > docs/openapi.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

from clipsearch import __version__, config
from clipsearch.api import ROUTES

ERROR_CODES = (
    "invalid_request", "invalid_image", "unknown_filter_field", "not_found",
    "method_not_allowed", "payload_too_large", "service_unavailable", "configuration_error",
    "internal_error",
)
PRODUCT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]*$"


SCORE_DOC = (
    "What the ranking used, by mode. vector: cosine similarity of the product's best "
    "vector (an image's or the title's) to the query, in [-1, 1]. lexical: BM25 relative "
    "to the best match, in (0, 1]. hybrid: the fused score in [0, 1] (rrf: weighted "
    "reciprocal ranks scaled so first in every signal is 1; weighted: weighted sum of "
    "min-max normalised signal scores). An exact id match scores 1. min_score applies "
    "to this score."
)
MODE_DOC = (
    "vector, lexical or hybrid. Default: hybrid when the query has text, vector for "
    "image-only queries and more like this. hybrid reads each signal "
    f"{config.RANK_WINDOW} deep and fuses them, so pages of one query never overlap."
)


def _hybrid_properties() -> dict[str, Any]:
    return {
        "mode": {"type": "string", "enum": list(config.SEARCH_MODES), "description": MODE_DOC},
        "explain": {"type": "boolean", "default": False,
                    "description": "Add an explain object to each result."},
        "fusion": {"type": "string", "enum": list(config.FUSION_METHODS),
                   "default": config.DEFAULT_FUSION,
                   "description": "How hybrid combines its signals."},
        "lexical_weight": {"type": "number", "minimum": 0, "maximum": 1,
                           "default": config.DEFAULT_LEXICAL_WEIGHT,
                           "description": "Share of the lexical signal in hybrid fusion; "
                           "the vector signal gets the rest."},
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _schemas() -> dict[str, Any]:
    scalar = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
    attributes = {
        "type": "object",
        "description": "Catalog attributes: strings, numbers or booleans.",
        "additionalProperties": scalar,
    }
    image_url = {"type": "string", "nullable": True,
                 "description": "URL a browser can load the product's main image from (a "
                 "path on the local server, a presigned S3 URL on AWS), or null when there "
                 "is none."}
    images = {"type": "array", "items": {"type": "string", "nullable": True},
              "description": "Every image of the product, main first, as URLs like image "
              "(null for one a browser cannot load); explain's image_index counts in this "
              "list. On AWS only the images in S3 are listed."}
    description = {"type": "string", "nullable": True,
                   "description": "The catalog's description, searched by lexical and "
                   "hybrid modes."}
    return {
        "Filters": {
            "type": "object",
            "description": "Field -> value (term), list of values (any of), or range "
            "object. Field names must be filterable fields of the index (see /facets).",
            "maxProperties": config.MAX_FILTER_CLAUSES,
            "additionalProperties": {"anyOf": [
                scalar,
                {"type": "array", "items": scalar, "minItems": 1, "maxItems": 100},
                {"type": "object", "minProperties": 1, "additionalProperties": False,
                 "properties": {op: {"type": "number"} for op in ("gt", "gte", "lt", "lte")}},
            ]},
        },
        "SearchRequest": {
            "type": "object",
            "description": "Exactly one kind of query: product_id, or text and/or an image "
            "(image or image_s3_key).",
            "additionalProperties": False,
            "properties": {
                "text": {"type": "string", "minLength": 1, "maxLength": config.MAX_TEXT_CHARS},
                "image": {"type": "string", "description": "Base64 image bytes, or a data: "
                          f"URL; at most {config.MAX_IMAGE_BYTES} bytes once decoded."},
                "image_s3_key": {"type": "string", "minLength": 1, "maxLength": 1024,
                                 "description": "AWS deployment only."},
                "product_id": {"type": "string", "maxLength": config.MAX_ID_CHARS,
                               "pattern": PRODUCT_ID_PATTERN,
                               "description": "More like this product (it is excluded)."},
                "k": {"type": "integer", "minimum": config.K_MIN, "maximum": config.K_MAX,
                      "default": 10},
                "offset": {"type": "integer", "minimum": 0, "maximum": config.OFFSET_MAX,
                           "default": 0},
                "min_score": {"type": "number", "minimum": -1, "maximum": 1},
                "filters": _ref("Filters"),
                "weights": {
                    "type": "object", "additionalProperties": False,
                    "description": "Mix of a text plus image query; the default is 0.5/0.5.",
                    "properties": {"text": {"type": "number", "minimum": 0},
                                   "image": {"type": "number", "minimum": 0}},
                },
                **_hybrid_properties(),
            },
        },
        "Explain": {
            "type": "object",
            "required": ["mode", "fusion", "exact_id", "signals", "score"],
            "description": "Why a result ranks where it does (sent with explain=true).",
            "properties": {
                "mode": {"type": "string", "enum": list(config.SEARCH_MODES)},
                "fusion": {"type": "string", "nullable": True,
                           "enum": list(config.FUSION_METHODS)},
                "exact_id": {"type": "boolean",
                             "description": "The query is exactly this product's id."},
                "signals": {
                    "type": "object",
                    "description": "vector: rank and cosine of the product's best vector "
                    "(matched: image or title; image_index: which image). lexical: rank "
                    "and BM25 score. image / title: cosine of the best image vector and "
                    "of the title vector. rank and score are null where the product was "
                    "not in that signal's list.",
                    "additionalProperties": {"type": "object", "properties": {
                        "rank": {"type": "integer", "nullable": True, "minimum": 1},
                        "score": {"type": "number", "nullable": True},
                        "matched": {"type": "string", "enum": ["image", "title"]},
                        "image_index": {"type": "integer", "minimum": 0},
                        "vectors": {"type": "integer", "minimum": 0},
                    }},
                },
                "score": {"type": "number", "description": "The result's score."},
            },
        },
        "Result": {
            "type": "object",
            "required": ["rank", "id", "title", "score", "image", "attributes", "images",
                         "description"],
            "properties": {
                "rank": {"type": "integer", "minimum": 1},
                "id": {"type": "string"},
                "title": {"type": "string"},
                "score": {"type": "number", "minimum": -1, "maximum": 1,
                          "description": SCORE_DOC},
                "image": image_url,
                "attributes": attributes,
                "images": images,
                "description": description,
                "explain": _ref("Explain"),
            },
        },
        "SearchResponse": {
            "type": "object",
            "required": ["results", "k", "offset", "took_ms", "model", "mode"],
            "properties": {
                "results": {"type": "array", "items": _ref("Result")},
                "k": {"type": "integer"},
                "offset": {"type": "integer"},
                "took_ms": {"type": "number"},
                "model": {"type": "string"},
                "mode": {"type": "string", "enum": list(config.SEARCH_MODES),
                         "description": "The mode the search ran in."},
            },
        },
        "Product": {
            "type": "object",
            "required": ["id", "title", "image", "attributes", "images", "description"],
            "properties": {"id": {"type": "string"}, "title": {"type": "string"},
                           "image": image_url, "attributes": attributes, "images": images,
                           "description": description},
        },
        "Health": {
            "type": "object",
            "required": ["status", "model", "products"],
            "properties": {"status": {"type": "string", "enum": ["ok"]},
                           "model": {"type": "string"},
                           "products": {"type": "integer", "minimum": 0},
                           "query_cache": {
                               "type": "object", "nullable": True,
                               "description": "Query-vector cache counters since start "
                               "(per process or Lambda container); null when the cache is off.",
                               "required": ["hits", "misses", "entries", "bytes",
                                            "max_entries", "max_bytes"],
                               "properties": {name: {"type": "integer", "minimum": 0}
                                              for name in ("hits", "misses", "entries",
                                                           "bytes", "max_entries",
                                                           "max_bytes")}}},
        },
        "FacetField": {
            "type": "object",
            "required": ["type"],
            "description": "keyword and boolean fields list their most common values; "
            "number fields give their range.",
            "properties": {
                "type": {"type": "string", "enum": ["keyword", "number", "boolean"]},
                "values": {"type": "array", "items": {
                    "type": "object", "required": ["value", "count"],
                    "properties": {"value": scalar, "count": {"type": "integer"}}}},
                "truncated": {"type": "boolean"},
                "min": {"type": "number", "nullable": True},
                "max": {"type": "number", "nullable": True},
            },
        },
        "Facets": {
            "type": "object",
            "required": ["fields", "products", "complete"],
            "properties": {
                "fields": {"type": "object", "additionalProperties": _ref("FacetField")},
                "products": {"type": "integer", "minimum": 0},
                "complete": {"type": "boolean",
                             "description": "false when values come from a sample of a "
                             "large catalog"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error", "message", "field"],
            "additionalProperties": False,
            "description": "Every error, from every route and runtime. Never a stack trace.",
            "properties": {
                "error": {"type": "string", "description": "Stable machine-readable code: "
                          + ", ".join(ERROR_CODES) + "."},
                "message": {"type": "string", "description": "What went wrong, for people."},
                "field": {"type": "string", "nullable": True,
                          "description": "The request field at fault (e.g. k, text, "
                          "filters.color, body), or null."},
            },
        },
    }


def _responses() -> dict[str, Any]:
    def error(description: str, **extra: Any) -> dict[str, Any]:
        return {"description": description, "content": _json(_ref("Error")), **extra}

    return {
        "BadRequest": error("Validation failed; `field` names the culprit."),
        "NotFound": error("No product with that id."),
        "MethodNotAllowed": error("Wrong method for this route; see the Allow header.",
                                  headers={"Allow": {"schema": {"type": "string"}}}),
        "PayloadTooLarge": error(f"The body is over {config.MAX_REQUEST_BYTES} bytes or the "
                                 f"image over {config.MAX_IMAGE_BYTES} bytes."),
        "InternalError": error("A bug on our side; the body never holds internals."),
        "ServiceUnavailable": error(
            "The model endpoint or index is cold or throttled; retry after the given seconds.",
            headers={"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        ),
    }


def _param(name: str, where: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema,
            "description": description}


def _paging_params() -> list[dict[str, Any]]:
    return [
        _param("k", "query", {"type": "integer", "minimum": config.K_MIN,
                              "maximum": config.K_MAX, "default": 10}, "results per page"),
        _param("offset", "query", {"type": "integer", "minimum": 0,
                                   "maximum": config.OFFSET_MAX, "default": 0},
               "results to skip (pagination)"),
        _param("min_score", "query", {"type": "number", "minimum": -1, "maximum": 1},
               "drop results scoring below this (see Result.score)"),
        _param("filters", "query", {"type": "string"},
               "a Filters object as JSON, e.g. {\"color\":\"red\"}"),
        *(_param(name, "query", schema, schema["description"])
          for name, schema in _hybrid_properties().items()),
    ]


def _operation(summary: str, ok: dict[str, Any], errors: list[str], **extra: Any
               ) -> dict[str, Any]:
    status_of = {"BadRequest": "400", "NotFound": "404", "MethodNotAllowed": "405",
                 "PayloadTooLarge": "413", "InternalError": "500", "ServiceUnavailable": "503"}
    responses: dict[str, Any] = {"200": ok}
    for name in [*errors, "MethodNotAllowed", "InternalError", "ServiceUnavailable"]:
        responses[status_of[name]] = {"$ref": f"#/components/responses/{name}"}
    return {"summary": summary, **extra, "responses": dict(sorted(responses.items()))}


def build_openapi() -> dict[str, Any]:
    """The whole document, deterministic so it can be compared byte for byte."""
    id_param = _param("id", "path", {"type": "string", "maxLength": config.MAX_ID_CHARS,
                                     "pattern": PRODUCT_ID_PATTERN}, "product id", True)
    search_ok = {"description": "Ranked results, best first.",
                 "content": _json(_ref("SearchResponse"))}
    paths: dict[str, Any] = {
        "/search": {
            "get": _operation(
                "Text search", search_ok, ["BadRequest"], operationId="searchGet",
                parameters=[_param("q", "query", {"type": "string", "minLength": 1,
                                                  "maxLength": config.MAX_TEXT_CHARS},
                                   "query text", True), *_paging_params()],
            ),
            "post": _operation(
                "Search by text, image, text plus image, or product", search_ok,
                ["BadRequest", "NotFound", "PayloadTooLarge"], operationId="searchPost",
                requestBody={"required": True, "content": _json(_ref("SearchRequest"))},
            ),
        },
        "/products/{id}": {
            "get": _operation("One product", {"description": "The product.",
                                              "content": _json(_ref("Product"))},
                              ["BadRequest", "NotFound"], operationId="getProduct",
                              parameters=[id_param]),
        },
        "/products/{id}/similar": {
            "get": _operation("More like this product (the product itself is excluded)",
                              search_ok, ["BadRequest", "NotFound"],
                              operationId="similarProducts",
                              parameters=[id_param, *_paging_params()]),
        },
        "/facets": {
            "get": _operation("Filterable fields and their values", {
                "description": "Fields by name.", "content": _json(_ref("Facets"))},
                ["BadRequest"], operationId="getFacets"),
        },
        "/health": {
            "get": _operation("Liveness and catalog size", {
                "description": "The service is up.", "content": _json(_ref("Health"))},
                ["BadRequest"], operationId="getHealth"),
        },
    }
    missing = {t for t, _ in ROUTES} ^ set(paths)
    if missing:  # a route added to the router must be documented here too
        raise RuntimeError(f"OpenAPI paths and api.ROUTES differ: {sorted(missing)}")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "clipsearch",
            "version": __version__,
            "description": "Multimodal product search with CLIP. The local server "
            "(`clipsearch serve`) and the AWS query Lambda serve this same API.",
        },
        "paths": paths,
        "components": {"schemas": _schemas(), "responses": _responses()},
    }


def dumps(document: dict[str, Any]) -> str:
    """The committed file's exact formatting."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(build_openapi()))
