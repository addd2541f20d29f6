"""The search page's files and the headers they are served with, for every host.

Two hosts serve the same page: `clipsearch serve` (page and API on one
origin) and CloudFront on AWS (page from S3, API under `/api/` on the same
origin). What differs between them is only where the API is, and that is one
line of generated configuration (`config_js`). The content security policy is
defined here once, so the local server's header and the CloudFront response
headers policy cannot drift apart, and the browser tests enforce this string.
"""

from __future__ import annotations

import json
from pathlib import Path

from clipsearch.openapi import build_openapi, dumps

WEB_DIR = Path(__file__).parent / "web"
CONFIG_FILE = "config.js"
OPENAPI_FILE = "openapi.json"

# The page loads everything from its own origin; images may also come from
# https URLs (presigned S3 URLs on AWS, catalog images hosted elsewhere) and
# blob: (upload previews). The API is always same-origin (locally the server
# itself, on AWS CloudFront's /api/ behaviour), so connect-src is 'self'.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob: https:; connect-src 'self'; "
            "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")


def config_js(api_base: str) -> str:
    """config.js for a host whose API is at `api_base` (a path such as "/api").

    The shipped config.js (defaults: API on this origin) is kept as it is and
    one assignment is appended, so defaults added to that file later carry
    over to every host. The OpenAPI document is a static file beside the page
    on such a host (the API does not serve it), hence `openapiUrl`.
    """
    if not api_base.startswith("/") or api_base.endswith("/"):
        raise ValueError(f"api_base must be a path like /api; got {api_base!r}")
    override = json.dumps({"apiBase": api_base, "openapiUrl": OPENAPI_FILE})
    defaults = (WEB_DIR / CONFIG_FILE).read_text(encoding="utf-8")
    return (f"{defaults.rstrip()}\n// Generated for a host that serves the API under "
            f"{api_base}/.\nObject.assign(window.CLIPSEARCH_CONFIG, {override});\n")


def page_files(api_base: str) -> dict[str, bytes]:
    """Name -> bytes of every file a static host serves: the page, its config, the API document.

    The page's files are the ones `clipsearch serve` serves (every visible
    file in clipsearch/web/); config.js is regenerated for `api_base`.
    """
    files = {p.name: p.read_bytes() for p in sorted(WEB_DIR.iterdir())
             if p.is_file() and not p.name.startswith(".")}
    files[CONFIG_FILE] = config_js(api_base).encode("utf-8")
    files[OPENAPI_FILE] = dumps(build_openapi()).encode("utf-8")
    return files
