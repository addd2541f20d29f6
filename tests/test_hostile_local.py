"""Hostile and broken input through the local interfaces: CLI, service, HTTP API (issue #18).

Each test takes one class of bad input (tests/hostile.py builds several
members of each) through every local interface it reaches, and checks the
three promises: nothing crashes (a 4xx or a per-item failure, never a 500, a
traceback or a hang), one bad item fails alone, and what was good is indexed.
The AWS interfaces are in tests/test_hostile_aws.py, the server's transport
(timeouts, Host, symlinks) in tests/test_hostile_server.py, crashes and
concurrent writers in tests/test_crash_consistency.py.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipsearch import api, strict
from clipsearch.cli import main
from clipsearch.contract import parse_weights
from clipsearch.errors import ValidationError
from clipsearch.images import load_image
from clipsearch.server import create_app, local_image_url
from tests import hostile

GOOD = 4  # good products in every hostile catalog


def _catalog(directory: Path, bad_lines: list[bytes | str]) -> tuple[Path, int]:
    """GOOD good products, then the bad lines, then GOOD more good ones."""
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines: list[bytes] = []
    for i in range(2 * GOOD):
        path = images / f"good{i}.png"
        path.write_bytes(hostile.png(color=(30 * i, 255 - 30 * i, 90)))
        lines.append(json.dumps({"id": f"good{i}", "title": f"good product {i}",
                                 "image": f"images/good{i}.png",
                                 "attributes": {"price": i * 1.5, "brand": "acme"}}).encode())
    for bad in reversed(bad_lines):
        lines.insert(GOOD, bad.encode("utf-8", "surrogatepass") if isinstance(bad, str)
                     else bad)
    catalog = directory / "catalog.jsonl"
    catalog.write_bytes(b"\n".join(lines) + b"\n")
    return catalog, 2 * GOOD


def _ingest(capsys, tmp_path, tiny_clip_dir, catalog: Path) -> tuple[int, dict]:
    data = tmp_path / "data"
    code = main(["--data-dir", str(data), "--model", str(tiny_clip_dir), "ingest",
                 str(catalog), "--no-progress", "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, strict.loads(out)  # the report itself must be strict JSON


def _cli(capsys, tmp_path, tiny_clip_dir, *argv) -> tuple[int, str, str]:
    code = main(["--data-dir", str(tmp_path / "data"), "--model", str(tiny_clip_dir), *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "unexpected" not in err, err
    return code, out, err


def _assert_4xx(response: api.ApiResponse | object, status: int | None = None,
                error: str | None = None) -> dict:
    if isinstance(response, api.ApiResponse):
        code, raw = response.status, response.json_bytes()
    else:
        code, raw = response.status_code, response.content
    body = json.loads(raw)
    assert 400 <= code < 500, (code, body)
    if status is not None:
        assert code == status, body
    assert set(body) == {"error", "message", "field"}
    if error is not None:
        assert body["error"] == error, body
    raw.decode("utf-8")  # always well-formed UTF-8
    return body


@pytest.fixture(scope="module")
def client(demo_service):
    with TestClient(create_app(demo_service), base_url="http://127.0.0.1") as test_client:
        yield test_client


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------- 1, 2: undecodable and extreme images


def test_undecodable_images_fail_alone_in_a_cli_ingest(capsys, tmp_path, tiny_clip_dir):
    directory = tmp_path / "catalog"
    (directory / "images").mkdir(parents=True)
    bad_lines = []
    for name, make in hostile.UNDECODABLE.items():
        (directory / "images" / f"{name}.img").write_bytes(make())
        bad_lines.append(json.dumps({"id": f"bad-{name}", "title": name,
                                     "image": f"images/{name}.img"}))
    catalog, good = _catalog(directory, bad_lines)
    code, report = _ingest(capsys, tmp_path, tiny_clip_dir, catalog)
    assert code == 0 and report["indexed"] == good
    failed = {item["id"]: item["reason"] for item in report["failed_items"]}
    assert set(failed) == {f"bad-{name}" for name in hostile.UNDECODABLE}
    assert all("image" in reason for reason in failed.values())


@pytest.mark.parametrize("name", sorted(hostile.UNDECODABLE))
def test_undecodable_query_images_are_400_through_the_api(client, name):
    resp = client.post("/search", json={"image": _b64(hostile.UNDECODABLE[name]())})
    body = _assert_4xx(resp, 400, "invalid_image")
    assert body["field"] == "image"


def test_undecodable_query_images_are_a_clear_cli_error(capsys, tmp_path, tiny_clip_dir):
    for name in ("dds-unimplemented", "strip-20000x1", "eps"):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(hostile.UNDECODABLE[name]())
        code, _, err = _cli(capsys, tmp_path, tiny_clip_dir, "search", "--image", str(path))
        assert code == 2 and err.startswith("error: ") and "image" in err


# ------------------------------------------------------------------------- 3: lone surrogates


@pytest.mark.parametrize("text", hostile.JSON_LONE_SURROGATES)
def test_lone_surrogates_in_api_requests_are_400(client, demo_service, text):
    for body in (f'{{"text": {text}}}', f'{{"text": "red", "filters": {{{text}: "x"}}}}',
                 f'{{"text": "red", "filters": {{"color": {text}}}}}',
                 f'{{{text}: 1}}', f'{{"image_s3_key": {text}}}'):
        _assert_4xx(client.post("/search", content=body.encode("ascii")), 400)
    # What API Gateway may hand the router (already-decoded strings): the same answers.
    raw = json.loads(text)
    for query in ({"q": raw}, {"q": "red", "filters": json.dumps({raw: 1})},
                  {"q": "red", "filters": json.dumps({"color": raw})}, {raw: "1", "q": "x"}):
        _assert_4xx(api.handle(demo_service, "GET", "/search", query), 400)
    for path in (f"/products/{raw}", f"/products/{raw}/similar", f"/{raw}"):
        _assert_4xx(api.handle(demo_service, "GET", path))


def test_lone_surrogates_in_a_catalog_fail_their_line_only(capsys, tmp_path, tiny_clip_dir):
    bad = [f'{{"id": "s{i}", "title": {text}, "image": "images/good0.png"}}'
           for i, text in enumerate(hostile.JSON_LONE_SURROGATES)]
    bad += ['{"id": "s9", "title": "ok", "image": "images/\\ud800.png"}',
            '{"id": "s10", "title": "ok", "image": "images/good0.png", '
            '"attributes": {"brand": "\\udfff"}}',
            '{"id": "s11", "title": "ok", "description": "\\ud800"}',
            '{"id": "\\ud800", "title": "ok"}']
    catalog, good = _catalog(tmp_path / "catalog", bad)
    code, report = _ingest(capsys, tmp_path, tiny_clip_dir, catalog)
    assert code == 0 and report["indexed"] == good and report["failed"] == len(bad)
    assert all("well-formed Unicode" in item["reason"] or "id" in item["reason"]
               for item in report["failed_items"])


def test_lone_surrogates_on_the_command_line_are_a_clear_error(capsys, tmp_path,
                                                               tiny_clip_dir):
    # What Python makes of undecodable argv bytes (surrogateescape).
    for argv in (["search", "shoe \udcff"], ["search", "red", "--filter", "brand=\udcff"],
                 ["search", "--like", "x\udcff"], ["search", "--image", "/tmp/\udcff.png"],
                 ["delete", "\udcff"]):
        code, _, err = _cli(capsys, tmp_path, tiny_clip_dir, *argv)
        assert code == 2 and err.startswith("error: "), (argv, err)


# --------------------------------------------------------------------- 4: deeply nested JSON


@pytest.mark.parametrize("depth", [33, 1_000, 100_000])
def test_deep_json_is_400_through_the_api(client, demo_service, depth):
    for doc in (hostile.deep_json(depth), hostile.deep_json(depth, "{")):
        _assert_4xx(client.post("/search", content=doc.encode()), 400)
        _assert_4xx(client.post("/search", content=f'{{"text": "x", "filters": {doc}}}'.encode()),
                    400)
        _assert_4xx(api.handle(demo_service, "GET", "/search", {"q": "red", "filters": doc}),
                    400)


def test_deep_json_catalog_lines_fail_alone(capsys, tmp_path, tiny_clip_dir):
    bad = [hostile.deep_json(100_000), hostile.deep_json(50, "{"),
           '{"id": "d1", "title": "t", "attributes": ' + hostile.deep_json(40) + "}"]
    catalog, good = _catalog(tmp_path / "catalog", bad)
    code, report = _ingest(capsys, tmp_path, tiny_clip_dir, catalog)
    assert code == 0 and report["indexed"] == good and report["failed"] == len(bad)
    assert all("nested deeper" in item["reason"] for item in report["failed_items"])


# ----------------------------------------------------------- 5: non-finite and huge numbers


def test_non_finite_and_huge_catalog_numbers_fail_their_line_and_reads_stay_sound(
        capsys, tmp_path, tiny_clip_dir):
    bad = [f'{{"id": "n{i}", "title": "t", "image": "images/good0.png", '
           f'"attributes": {{"price": {number}}}}}' for i, number in enumerate(hostile.BAD_NUMBERS)]
    catalog, good = _catalog(tmp_path / "catalog", bad)
    code, report = _ingest(capsys, tmp_path, tiny_clip_dir, catalog)
    assert code == 0 and report["indexed"] == good and report["failed"] == len(bad)
    # Every read path answers strict JSON, and a numeric filter on the field works.
    code, out, _ = _cli(capsys, tmp_path, tiny_clip_dir, "search", "red", "--json",
                        "--filter", "price>=3", "--k", "20")
    results = strict.loads(out)["results"]
    assert code == 0 and results and all(r["attributes"]["price"] >= 3 for r in results)
    from clipsearch.index.local import LocalIndex
    from clipsearch.service import SearchService

    service = SearchService(_encoder(tiny_clip_dir), LocalIndex(tmp_path / "data" / "index"))
    for method, path, query in (("GET", "/facets", None), ("GET", "/products/good1", None),
                                ("GET", "/products/good1/similar", None),
                                ("GET", "/search", {"q": "x", "filters": '{"price": {"lt": 5}}'})):
        response = api.handle(service, method, path, query, image_url=local_image_url)
        assert response.status == 200, (path, response.body)
        strict.loads(response.json_bytes())


def _encoder(tiny_clip_dir):
    from clipsearch.encoders.clip import ClipEncoder

    return ClipEncoder(str(tiny_clip_dir))


@pytest.mark.parametrize("number", hostile.BAD_NUMBERS)
def test_non_finite_and_huge_numbers_in_requests_are_400(client, number):
    for body in (f'{{"text": "x", "k": {number}}}', f'{{"text": "x", "min_score": {number}}}',
                 f'{{"text": "x", "weights": {{"text": {number}}}}}',
                 f'{{"text": "x", "filters": {{"price": {{"gte": {number}}}}}}}',
                 f'{{"text": "x", "filters": {{"price": {number}}}}}'):
        _assert_4xx(client.post("/search", content=body.encode()), 400)


# ------------------------------------------------------------ 6: bad lines and bad image paths


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_bad_bytes_and_special_files_fail_alone_without_hanging(capsys, tmp_path,
                                                                tiny_clip_dir):
    directory = tmp_path / "catalog"
    (directory / "images").mkdir(parents=True)
    fifo = directory / "images" / "fifo.png"
    os.mkfifo(fifo)
    big = directory / "images" / "big.png"
    with big.open("wb") as handle:  # sparse: 10 MiB declared, nothing written
        handle.truncate(10 * 1024 * 1024)
    (directory / "images" / "link.png").symlink_to("/dev/zero")
    bad = [b'{"id": "u1", "title": "caf\xe9 latin-1", "image": "images/good0.png"}',
           b"\xff\xfe\x00garbage",
           json.dumps({"id": "p1", "title": "zero", "image": "/dev/zero"}).encode(),
           json.dumps({"id": "p2", "title": "fifo", "image": str(fifo)}).encode(),
           json.dumps({"id": "p3", "title": "dir", "image": "images"}).encode(),
           json.dumps({"id": "p4", "title": "big", "image": "images/big.png"}).encode(),
           json.dumps({"id": "p5", "title": "link", "image": "images/link.png"}).encode(),
           json.dumps({"id": "p6", "title": "gone", "image": "images/missing.png"}).encode(),
           json.dumps({"id": "p7", "title": "nul", "image": "images/a\u0000b.png"}).encode()]
    catalog, good = _catalog(directory, bad)
    code, report = _ingest(capsys, tmp_path, tiny_clip_dir, catalog)
    assert code == 0 and report["indexed"] == good
    reasons = {item["id"]: item["reason"] for item in report["failed_items"]}
    assert len(reasons) == len(bad)
    assert "not UTF-8" in reasons["line 5"] and "not UTF-8" in reasons["line 6"]
    for pid in ("p1", "p2", "p3", "p5"):
        assert "not a regular file" in reasons[pid], reasons[pid]
    assert "limit" in reasons["p4"] and "does not exist" in reasons["p6"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_a_special_file_as_catalog_or_query_image_is_refused(capsys, tmp_path, tiny_clip_dir):
    fifo = tmp_path / "catalog.jsonl"
    os.mkfifo(fifo)
    code, _, err = _cli(capsys, tmp_path, tiny_clip_dir, "ingest", str(fifo), "--no-progress")
    assert code == 2 and "not a regular file" in err
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        code, _, err = _cli(capsys, tmp_path, tiny_clip_dir, "search", "--image", path)
        assert code == 2 and "not a regular file" in err


# --------------------------------------------------------- 10: no internals in public answers


def test_public_answers_name_the_model_not_its_directory(client, demo_service, tiny_clip_dir):
    for resp in (client.get("/health"), client.get("/search", params={"q": "red"})):
        assert resp.status_code == 200
        assert str(tiny_clip_dir) not in resp.text and "/tmp" not in resp.text
        assert resp.json()["model"] == Path(tiny_clip_dir).name


@pytest.mark.parametrize("exc_factory", [
    lambda: __import__("clipsearch.errors", fromlist=["x"]).ServiceUnavailableError(
        "ConnectionError(urllib3 HTTPConnectionPool(host='10.1.2.3', port=9200)) at "
        "/products-v3/_search"),
    lambda: __import__("clipsearch.errors", fromlist=["x"]).ConfigurationError(
        "could not load CLIP model '/home/alice/models/clip': OSError"),
    lambda: __import__("clipsearch.encoders.sagemaker", fromlist=["x"]).EndpointModelError(
        "the model failed: CUDA out of memory at https://runtime.sagemaker.../endpoints/e1"),
])
def test_server_errors_publish_no_infrastructure(exc_factory, caplog):
    exc = exc_factory()

    class Broken:
        def search(self, *args, **kwargs):
            raise exc

    response = api.handle(Broken(), "POST", "/search", body=b'{"text": "x"}')
    assert response.status == exc.status >= 500
    text = response.json_bytes().decode()
    for secret in ("10.1.2.3", "9200", "/home/alice", "sagemaker", "CUDA", "urllib3",
                   "_search"):
        assert secret not in text
    assert json.loads(text)["message"] == type(exc).public_text
    assert any(exc.message in record.getMessage() for record in caplog.records)


def test_error_bodies_are_always_serialisable(demo_service):
    class Quoting:
        def search(self, *args, **kwargs):
            from clipsearch.errors import ValidationError

            raise ValidationError("bad \ud800 value", field="filters.\udfff")

    response = api.handle(Quoting(), "POST", "/search", body=b'{"text": "x"}')
    body = json.loads(response.json_bytes())
    assert response.status == 400 and "\ufffd" in body["message"] + body["field"]

    class NonFinite:
        def health(self):
            return {"status": "ok", "score": math.inf}

    response = api.handle(NonFinite(), "GET", "/health")
    assert response.status == 500 and json.loads(response.json_bytes())["error"] == \
        "internal_error"


# -------------------------------------------------------------------- 11: CLI weights as the API


@pytest.mark.parametrize("weights", [("nan", "0.5"), ("inf", "0.5"), ("-1", "0.5"),
                                     ("0", "0"), ("0.5", "-1e999"), ("0.0", "0e5")])
def test_cli_weights_are_validated_like_the_api(capsys, tmp_path, tiny_clip_dir, client,
                                                weights):
    text_w, image_w = weights
    image = tmp_path / "q.png"
    image.write_bytes(hostile.png())
    code, _, err = _cli(capsys, tmp_path, tiny_clip_dir, "search", "red", "--image", str(image),
                        f"--text-weight={text_w}", f"--image-weight={image_w}")
    weights = {"text": float(text_w), "image": float(image_w)}
    with pytest.raises(ValidationError) as info:  # the API's own validator
        parse_weights(weights)
    assert code == 2 and info.value.message in err
    if all(math.isfinite(w) for w in weights.values()):  # JSON cannot carry the others
        api_body = _assert_4xx(client.post("/search", content=json.dumps(
            {"text": "red", "image": _b64(hostile.png()), "weights": weights}).encode()), 400)
        assert api_body["message"] == info.value.message


def test_cli_and_api_agree_on_other_limits(capsys, tmp_path, tiny_clip_dir):
    for argv in (["search", "x", "--min-score", "nan"], ["search", "x", "--k", "0"],
                 ["search", "x" * 5000], ["search", "  "], ["search", "x", "--offset", "-1"]):
        code, _, err = _cli(capsys, tmp_path, tiny_clip_dir, *argv)
        assert code == 2 and err.startswith("error: "), argv


# ------------------------------------------------------------------------ 13: EXIF orientation


def test_exif_orientation_is_honoured_by_ingest_and_query(capsys, tmp_path, tiny_clip_dir,
                                                          client, demo_service):
    orientation = 6  # the decoder's own tests cover the others
    import io

    directory = tmp_path / "catalog"
    (directory / "images").mkdir(parents=True)
    sideways = hostile.oriented_jpeg(orientation, size=(64, 32))
    (directory / "images" / "phone.jpg").write_bytes(sideways)
    upright = io.BytesIO()
    load_image(sideways).save(upright, "PNG")  # what a viewer shows, stored plainly
    (directory / "images" / "upright.png").write_bytes(upright.getvalue())
    catalog, _ = _catalog(directory, [
        json.dumps({"id": "phone", "title": "phone photo", "image": "images/phone.jpg"})])
    code, report = _ingest(capsys, tmp_path, tiny_clip_dir, catalog)
    assert code == 0 and not report["failed"]
    code, out, _ = _cli(capsys, tmp_path, tiny_clip_dir, "search", "--image",
                        str(directory / "images" / "upright.png"), "--json", "--k", "1")
    top = json.loads(out)["results"][0]
    assert top["id"] == "phone" and top["score"] > 0.9999
    # Through the API: the sideways photo and its upright copy are the same query.
    scores = [client.post("/search", json={"image": _b64(data), "k": 5}).json()["results"]
              for data in (sideways, upright.getvalue())]
    assert [r["id"] for r in scores[0]] == [r["id"] for r in scores[1]]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(*scores, strict=True))
