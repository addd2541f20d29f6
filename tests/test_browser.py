"""The search page in real headless Chromium (Debian's package) against the real server.

uvicorn serves `create_app` over the demo catalog indexed with the tiny CLIP;
Playwright drives /usr/bin/chromium. What the grid shows is checked against
what the API returns for the same query, so the page is tested for showing
the right things, not just for showing something. Screenshots go to
test-artifacts/ for people to look at.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clipsearch.server import create_app
from tests.conftest import live_server as _serve  # one uvicorn launcher for all tests

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGE_SIZE = 24  # clipsearch/web/config.js


@pytest.fixture(scope="module")
def base_url(demo_service) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a thread."""
    with _serve(create_app(demo_service)) as url:
        yield url


def _unavailable(reason: str) -> None:
    """Skip with the reason; CI sets CLIPSEARCH_REQUIRE_BROWSER=1 to make it a failure."""
    if os.environ.get("CLIPSEARCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser test required but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install "
                     "chromium, done by scripts/setup.sh) to run the browser test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def call(base_url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The API answer the page should be showing."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


def grid(page) -> list[dict[str, str]]:
    """What the result grid shows, card by card."""
    return page.eval_on_selector_all("#grid > li.card", """cards => cards.map(c => ({
        id: c.dataset.id,
        title: c.querySelector('.card-title').textContent,
        score: c.querySelector('.score-value').textContent,
        rank: c.querySelector('.rank').textContent,
        img: c.querySelector('img') ? c.querySelector('img').getAttribute('src') : null,
        button: c.querySelector('button.more-like').tagName,
    }))""")


def expected(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"id": r["id"], "title": r["title"], "score": f"score {r['score']:.3f}",
             "rank": f"#{r['rank']}", "img": r["image"], "button": "BUTTON"} for r in results]


def wait_for_results(page, status: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#grid")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#status")).to_contain_text(status)


def test_search_page_end_to_end(browser, base_url, demo_products, tmp_path):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and "status of 400" not in msg.text
            and problems.append(f"console: {msg.text}"))
    # Playwright turns on file-chooser interception without waiting for it; a
    # listener from the start means it is on before the keyboard test below.
    page.on("filechooser", lambda chooser: None)
    page.goto(base_url + "/")

    # Filters come from /facets: one checkbox per colour, with its count.
    expect(page.get_by_role("checkbox", name="red 5")).to_be_visible()
    expect(page.locator("#catalog-info")).to_contain_text(f"{len(demo_products)} products")

    # 1. Type a query, press Enter.
    box = page.get_by_label("Search products by text")
    box.fill("red circle")
    box.press("Enter")
    wait_for_results(page, "Results 1–24")
    api = call(base_url, "/search", {"text": "red circle", "k": PAGE_SIZE})
    assert grid(page) == expected(api["results"])
    assert page.locator("#grid img").first.evaluate("img => img.complete && img.naturalWidth") > 0

    # Pagination: the second page is the rest of the same ranking.
    page.get_by_role("button", name="Next").click()
    wait_for_results(page, "Results 25–40")
    page2 = call(base_url, "/search", {"text": "red circle", "k": PAGE_SIZE, "offset": 24})
    assert grid(page) == expected(page2["results"])
    expect(page.get_by_role("button", name="Next")).to_be_disabled()
    page.get_by_role("button", name="Previous").click()
    wait_for_results(page, "Results 1–24")

    # The mode selector: exact words only, then hybrid with "why this result" on demand.
    mode = page.get_by_label("Match", exact=True)
    with page.expect_response(lambda r: r.url.endswith("/search")):
        mode.select_option("lexical")
    wait_for_results(page, "for “red circle”")
    lexical = call(base_url, "/search", {"text": "red circle", "k": PAGE_SIZE,
                                         "mode": "lexical"})
    assert grid(page) == expected(lexical["results"])
    explain_requests: list[str] = []
    page.on("request", lambda r: r.url.endswith("/search") and '"explain":true' in (
        r.post_data or "") and explain_requests.append(r.post_data))
    with page.expect_response(lambda r: r.url.endswith("/search")):
        mode.select_option("hybrid")
    wait_for_results(page, "for “red circle”")
    hybrid = call(base_url, "/search", {"text": "red circle", "k": PAGE_SIZE,
                                        "mode": "hybrid", "explain": True})
    assert grid(page) == expected(hybrid["results"])
    assert explain_requests == []  # nothing asked for yet
    cards = page.locator("#grid > li.card")
    for n in (0, 2):
        cards.nth(n).get_by_text("Why this result?").click()
        why = cards.nth(n).locator(".why dl")
        explain = hybrid["results"][n]["explain"]
        expect(why).to_contain_text(f"Fused (rrf){explain['score']:.3f}")
        for name, label in (("vector", "Meaning"), ("lexical", "Words")):
            signal = explain["signals"][name]
            text = (f"rank {signal['rank']}, score {signal['score']:.3f}"
                    if signal["rank"] is not None else "not among this signal")
            expect(why).to_contain_text(f"{label}{text}")
        image = explain["signals"]["image"]
        expect(why).to_contain_text(
            f"Best imagecosine {image['score']:.3f} (best of {image['vectors']})")
    assert len(explain_requests) == 1  # one request explains the whole page
    page.screenshot(path=str(ARTIFACTS / "why-this-result.png"), full_page=False)
    with page.expect_response(lambda r: r.url.endswith("/search")):
        mode.select_option("")  # back to the API's default
    wait_for_results(page, "Results 1–24")
    assert grid(page) == expected(api["results"])

    # 2. Upload an image (file picker): by itself it finds its own product first.
    target = demo_products[17]
    box.fill("")
    page.set_input_files("#image-input", target.image)
    expect(page.locator("#image-chip")).to_be_visible()
    wait_for_results(page, "for your image")
    shown = grid(page)
    assert shown[0]["id"] == target.id and shown[0]["score"] == "score 1.000"

    # Text plus image: both go into one query, mixed by the slider (50/50).
    box.fill("striped")
    expect(page.get_by_label("Balance")).to_be_visible()
    box.press("Enter")
    wait_for_results(page, "for “striped” + image")
    import base64

    image_b64 = base64.b64encode(Path(target.image).read_bytes()).decode()
    both = call(base_url, "/search", {"text": "striped", "image": image_b64, "k": PAGE_SIZE,
                                      "weights": {"text": 0.5, "image": 0.5}})
    assert grid(page) == expected(both["results"])
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "search-page.png"), full_page=False)

    # 3. "More like this" on the first result.
    first = grid(page)[0]
    page.locator("#grid > li.card").first.get_by_role("button", name="More like this").click()
    wait_for_results(page, f"similar to “{first['title']}”")
    expect(page.locator("#similar-bar")).to_contain_text(first["title"])
    similar = call(base_url, f"/products/{first['id']}/similar?k={PAGE_SIZE}")
    assert grid(page) == expected(similar["results"])
    assert first["id"] not in [card["id"] for card in grid(page)]
    assert page.evaluate("document.activeElement.id") == "results"  # focus follows

    # A filter narrows the same "more like this" query.
    filtered = call(base_url, f"/products/{first['id']}/similar?k={PAGE_SIZE}&filters="
                    + urllib.request.quote(json.dumps({"color": "red"})))
    page.get_by_role("checkbox", name="red 5").check()
    wait_for_results(page, f"Results 1–{len(filtered['results'])} similar to")
    assert grid(page) == expected(filtered["results"])
    assert {r["attributes"]["color"] for r in filtered["results"]} == {"red"}
    page.screenshot(path=str(ARTIFACTS / "more-like-this.png"), full_page=False)
    page.get_by_role("button", name="Clear filters").click()
    page.get_by_role("button", name="Back to my search").click()
    wait_for_results(page, "for “striped” + image")
    page.get_by_role("button", name="Remove the query image").click()

    # Drag and drop, then paste: both feed the image search.
    box.fill("")
    for event, other in (("drop", demo_products[30]), ("paste", demo_products[2])):
        page.evaluate("""async ([url, kind]) => {
            const blob = await (await fetch(url)).blob();
            const data = new DataTransfer();
            data.items.add(new File([blob], 'query.png', {type: 'image/png'}));
            const ev = kind === 'drop'
                ? new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true})
                : new ClipboardEvent('paste', {clipboardData: data, bubbles: true,
                                               cancelable: true});
            document.body.dispatchEvent(ev);
        }""", [f"/images/{other.id}", event])
        expect(page.locator("#grid > li.card").first).to_have_attribute("data-id", other.id)
        wait_for_results(page, "for your image")
        assert grid(page)[0]["score"] == "score 1.000", event
        page.get_by_role("button", name="Remove the query image").click()

    # A file that is not an image: the server's 400 becomes a readable message.
    fake = tmp_path / "holiday.png"
    fake.write_bytes(b"these bytes are not a picture")
    page.set_input_files("#image-input", str(fake))
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("That image did not work.")
    expect(alert).to_contain_text("not a readable image")
    page.screenshot(path=str(ARTIFACTS / "error.png"), full_page=False)

    # Keyboard: the photo button is a real button reached by Tab; Enter opens the picker.
    box.focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "image-remove"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "image-button"
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert not chooser.value.is_multiple()
    page.close()
    assert problems == []


def test_search_page_on_a_phone(browser, base_url):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True, device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(base_url + "/")
    expect(page.locator("#filters-details")).not_to_have_attribute("open", re.compile(".*"))
    box = page.get_by_label("Search products by text")
    box.fill("blue striped rug")
    box.press("Enter")
    wait_for_results(page, "Results 1–24")
    # Two columns, nothing wider than the screen.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    columns = page.evaluate("getComputedStyle(document.getElementById('grid'))"
                            ".gridTemplateColumns.split(' ').length")
    assert columns == 2
    button = page.get_by_role("button", name="Add photo")
    assert button.bounding_box()["height"] >= 40  # a finger-sized target
    page.screenshot(path=str(ARTIFACTS / "search-phone.png"), full_page=False)
    context.close()


# ----------------------------------------------------------------------------- as on CloudFront


class CloudFrontStandIn:
    """What the distribution does, as one ASGI app in front of the local API.

    `/api/*` loses its prefix (the CloudFront Function) and goes to the API;
    everything else is a file of the deployed page (the S3 origin, `/` being
    the default root object; a missing key is S3's 403). Every response gets
    the response headers policy's headers, replacing the origin's.
    """

    def __init__(self, api_app: Any, files: dict[str, bytes], headers: dict[str, str]) -> None:
        self.api_app, self.files = api_app, files
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.api_requests: list[dict[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.api_app(scope, receive, send)  # lifespan
            return
        names = {name for name, _ in self.headers}

        async def send_with_policy(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + self.headers}
            await send(message)

        path = scope["path"]
        if path.startswith(f"{API_PREFIX}/"):
            self.api_requests.append({k.decode(): v.decode() for k, v in scope["headers"]})
            inner = {**scope, "path": path[len(API_PREFIX):],
                     "raw_path": scope.get("raw_path", b"")[len(API_PREFIX):]}
            await self.api_app(inner, receive, send_with_policy)
            return
        name = "index.html" if path == "/" else path.lstrip("/")
        body = self.files.get(name)
        status = 200 if body is not None else 403
        kind = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
                ".svg": "image/svg+xml", ".json": "application/json"}.get(
                    Path(name).suffix, "application/xml") if body is not None else "application/xml"
        body = body if body is not None else b"<Error><Code>AccessDenied</Code></Error>"
        await send_with_policy({"type": "http.response.start", "status": status,
                                "headers": [(b"content-type", kind.encode()),
                                            (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": body})


API_PREFIX = "/api"


@pytest.fixture(scope="module")
def cloudfront(demo_service) -> Iterator[tuple[str, CloudFrontStandIn]]:
    """The deployed page's files (as the stack uploads them) and the API under /api."""
    from clipsearch.page import page_files
    from stacks.web import API_PATH, response_headers

    assert API_PATH == API_PREFIX
    app = CloudFrontStandIn(create_app(demo_service), page_files(API_PATH), response_headers())
    with _serve(app) as url:
        yield url, app


# Collects every CSP violation the page reports, from the first script on.
_CSP_WATCH = """window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
    (e) => window.__cspViolations.push(`${e.effectiveDirective} ${e.blockedURI}`));"""


def test_deployed_page_behind_cloudfront_with_its_csp(browser, cloudfront, demo_products):
    """The files the stack deploys, the CSP enforced, a text and a photo search, no errors."""
    from playwright.sync_api import expect

    from clipsearch.page import PAGE_CSP

    url, stand_in = cloudfront
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(
        f"console: {msg.text}"))
    outside: list[str] = []
    page.on("request", lambda req: req.url.startswith((url, "data:", "blob:"))
            or outside.append(req.url))
    page.add_init_script(_CSP_WATCH)
    response = page.goto(url + "/")
    assert response.headers["content-security-policy"] == PAGE_CSP
    assert response.headers["x-frame-options"] == "DENY"
    assert page.evaluate("window.CLIPSEARCH_CONFIG.apiBase") == API_PREFIX
    expect(page.locator("#catalog-info")).to_contain_text(f"{len(demo_products)} products")
    expect(page.get_by_role("checkbox", name="red 5")).to_be_visible()

    # A text search: the grid shows what the API (through the same prefix) answers.
    box = page.get_by_label("Search products by text")
    box.fill("red circle")
    box.press("Enter")
    wait_for_results(page, "Results 1–24")
    api = call(url, f"{API_PREFIX}/search", {"text": "red circle", "k": PAGE_SIZE})
    want = [{**card, "img": API_PREFIX + card["img"]} for card in expected(api["results"])]
    assert grid(page) == want
    assert page.locator("#grid img").first.evaluate("img => img.complete && img.naturalWidth") > 0

    # A photo search: the product's own photo comes first with a perfect score.
    target = demo_products[11]
    box.fill("")
    page.set_input_files("#image-input", target.image)
    wait_for_results(page, "for your image")
    shown = grid(page)
    assert shown[0]["id"] == target.id and shown[0]["score"] == "score 1.000"
    assert page.locator("#image-preview").evaluate("img => img.src").startswith("blob:")

    # The footer's API link is the static openapi.json beside the page.
    link = page.get_by_role("link", name="API (OpenAPI)")
    assert link.get_attribute("href") == "openapi.json"
    assert page.request.get(f"{url}/openapi.json").json()["openapi"].startswith("3.")
    page.screenshot(path=str(ARTIFACTS / "cloudfront-page.png"), full_page=False)

    assert problems == []
    assert page.evaluate("window.__cspViolations") == []
    assert outside == [], "everything comes from the page's own origin"
    # The page never holds the API key: its API calls carry none (CloudFront adds it).
    assert stand_in.api_requests and all("x-api-key" not in h for h in stand_in.api_requests)

    # The policy is really enforced here: an injected inline script is blocked and reported.
    ran = page.evaluate("""() => { const s = document.createElement('script');
        s.textContent = 'window.__injected = true'; document.body.append(s);
        return window.__injected === true; }""")
    assert ran is False
    page.wait_for_function("window.__cspViolations.length > 0")
    assert page.evaluate("window.__cspViolations")[0].startswith("script-src")
    page.close()
