"""Routes and request models for API Gateway, read from the API's OpenAPI document.

`docs/openapi.json` is generated from clipsearch's own limits
(`python -m clipsearch.openapi`) and is the contract the local server and
the query Lambda follow. Building the gateway from it means the edge
validates exactly what the contract says, and a new route or limit reaches
AWS without touching stacks/.

API Gateway models are JSON Schema draft 4 without references to other
documents, so each request schema is made self-contained here: `$ref`s to
`#/components/schemas/...` are inlined, OpenAPI-only keywords are dropped
(`nullable` becomes a type union), and every string in a request body gets a
`maxLength` of the contract's request cap if it has none: that is the
gateway's payload limit (the image field is the one it matters for).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipsearch import config as core
from stacks.config import REPO_ROOT, ConfigError

OPENAPI_PATH = REPO_ROOT / "docs" / "openapi.json"
DRAFT4 = "http://json-schema.org/draft-04/schema#"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")

# Draft-4 validation and annotation keywords; anything else is OpenAPI-only.
_DRAFT4_KEYWORDS = frozenset({
    "$schema", "id", "title", "description", "default", "type", "properties",
    "additionalProperties", "required", "items", "additionalItems", "maxItems", "minItems",
    "uniqueItems", "maxLength", "minLength", "pattern", "maximum", "minimum",
    "exclusiveMaximum", "exclusiveMinimum", "multipleOf", "maxProperties", "minProperties",
    "patternProperties", "enum", "allOf", "anyOf", "oneOf", "not", "format", "dependencies",
})


@dataclass(frozen=True)
class Route:
    """One operation of the contract, as API Gateway needs it."""

    path: str
    method: str
    operation_id: str
    required_query: tuple[str, ...]
    path_params: tuple[str, ...]
    body_schema: dict[str, Any] | None


def load_openapi(path: Path = OPENAPI_PATH) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path} is missing; it is the API contract the gateway is built "
                          "from. Generate it with: python -m clipsearch.openapi > "
                          "docs/openapi.json")
    return json.loads(path.read_text())


def routes(document: dict[str, Any]) -> list[Route]:
    """Every (path, method) in the document, in document order."""
    components = document.get("components", {}).get("schemas", {})
    result = []
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method in HTTP_METHODS:
            if method not in item:
                continue
            operation = item[method]
            parameters = [*shared, *operation.get("parameters", [])]
            body = None
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                body = to_draft4(content["application/json"]["schema"], components)
            result.append(Route(
                path=path,
                method=method.upper(),
                operation_id=operation.get("operationId", f"{method}{path}"),
                required_query=tuple(p["name"] for p in parameters
                                     if p.get("in") == "query" and p.get("required")),
                path_params=tuple(p["name"] for p in parameters if p.get("in") == "path"),
                body_schema=body,
            ))
    return result


def to_draft4(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A self-contained draft-4 schema with the payload limit on every string."""
    resolved = _convert(copy.deepcopy(schema), components, seen=())
    resolved["$schema"] = DRAFT4
    return resolved


def _convert(node: Any, components: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_convert(item, components, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if not node["$ref"].startswith("#/components/schemas/") or name not in components:
            raise ConfigError(f"docs/openapi.json: cannot resolve {node['$ref']}")
        if name in seen:
            raise ConfigError(f"docs/openapi.json: recursive schema {name} cannot be inlined")
        return _convert(copy.deepcopy(components[name]), components, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _DRAFT4_KEYWORDS:
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: _convert(sub, components, seen) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf",
                     "additionalItems"):
            out[key] = _convert(value, components, seen)
        else:
            out[key] = value
    if node.get("nullable") and "type" in out:
        out["type"] = [*(_as_list(out["type"])), "null"]
    if "string" in _as_list(out.get("type")) and "maxLength" not in out:
        out["maxLength"] = core.MAX_REQUEST_BYTES
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
