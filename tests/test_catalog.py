import csv
import gzip
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from clipsearch.catalog import Product, product_from_dict, read_abo, read_catalog, read_jsonl
from clipsearch.errors import ValidationError


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_resolves_relative_images_and_keeps_attributes(tmp_path):
    catalog = write_lines(tmp_path / "c.jsonl", [json.dumps({
        "id": "B07X", "title": "Leather ankle boot", "image": "images/b07x.jpg",
        "attributes": {"brand": "Acme", "category": "shoes", "price": 59.9}})])
    result = read_jsonl(catalog)
    assert result.errors == []
    (product,) = result.products
    assert product == Product("B07X", "Leather ankle boot",
                              str((tmp_path / "images/b07x.jpg").resolve()),
                              {"brand": "Acme", "category": "shoes", "price": 59.9})


def test_s3_and_absolute_images_are_kept(tmp_path):
    p = product_from_dict({"id": "a", "title": "t", "image": "s3://bucket/images/a.jpg"},
                          tmp_path)
    assert p.image == "s3://bucket/images/a.jpg"
    p = product_from_dict({"id": "a", "title": "t", "image": "/abs/a.jpg"}, tmp_path)
    assert p.image == "/abs/a.jpg"


def test_bad_lines_are_reported_with_line_numbers_and_the_rest_loads(tmp_path):
    good = {"id": "ok1", "title": "fine"}
    catalog = write_lines(tmp_path / "c.jsonl", [
        json.dumps(good),
        "{not json",
        json.dumps({"id": "", "title": "no id"}),
        "",
        json.dumps({"id": "x2", "title": "  "}),
        json.dumps({"id": "x3", "title": "t", "attributes": {"bad key": 1}}),
        json.dumps({"id": "x4", "title": "t", "attributes": {"nested": {"a": 1}}}),
        json.dumps({"id": "x5", "title": "t", "colour": "red"}),
        json.dumps({"id": "ok2", "title": "also fine", "attributes": {"n": None}}),
    ])
    result = read_jsonl(catalog)
    assert [p.id for p in result.products] == ["ok1", "ok2"]
    assert [e.line for e in result.errors] == [2, 3, 5, 6, 7, 8]
    messages = [str(e) for e in result.errors]
    assert "malformed JSON" in messages[0] and ":2" in messages[0]
    assert "product id must be a non-empty string" in messages[1]
    assert "title" in messages[2] and "(x2)" in messages[2]
    assert "bad key" in messages[3]
    assert "must be a string, number or boolean" in messages[4]
    assert "unknown product field(s): colour" in messages[5]
    assert result.products[1].attributes == {}


def test_duplicate_ids_last_one_wins(tmp_path):
    catalog = write_lines(tmp_path / "c.jsonl", [
        json.dumps({"id": "a", "title": "first"}), json.dumps({"id": "a", "title": "second"})])
    assert [p.title for p in read_jsonl(catalog).products] == ["second"]


def test_missing_catalog_is_a_clear_error(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        read_catalog(tmp_path / "nope.jsonl")


def test_reserved_attribute_names_are_rejected():
    with pytest.raises(ValidationError, match="reserved"):
        product_from_dict({"id": "a", "title": "t", "attributes": {"title": "x"}})


def _gz_lines(path: Path, records: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")


def make_abo(root: Path) -> None:
    _gz_lines(root / "listings/metadata/listings_0.json.gz", [
        {"item_id": "B000A", "main_image_id": "img1",
         # img1 repeats the main image, "nope" is not in images.csv.gz: both skipped.
         "other_image_id": ["img3", "img1", "nope", "img5"],
         "product_description": [{"language_tag": "en_US", "value": " Full-grain leather. "}],
         "item_name": [{"language_tag": "de_DE", "value": "Stiefel"},
                       {"language_tag": "en_US", "value": "Leather boot"}],
         "brand": [{"language_tag": "en_US", "value": "Acme"}],
         "product_type": [{"value": "SHOES"}],
         "color": [{"language_tag": "en_US", "value": "Black", "standardized_values": ["Black"]}]},
        {"item_id": "B000B", "main_image_id": "img2",
         "item_name": [{"language_tag": "fr_FR", "value": "Chaise"}]},
        {"item_id": "B000C", "main_image_id": "missing",
         "item_name": [{"language_tag": "en_US", "value": "Lamp"}]},
        "{broken",
    ])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image_id", "height", "width", "path"])
    writer.writerow(["img1", "256", "256", "ab/img1.jpg"])
    writer.writerow(["img2", "256", "256", "cd/img2.jpg"])
    writer.writerow(["img3", "256", "256", "ef/img3.jpg"])
    writer.writerow(["img5", "256", "256", "ef/img5.jpg"])
    csv_path = root / "images/metadata/images.csv.gz"
    csv_path.parent.mkdir(parents=True)
    with gzip.open(csv_path, "wt", encoding="utf-8") as handle:
        handle.write(buffer.getvalue())


def test_abo_reader_takes_en_us_titles_and_reports_the_rest(tmp_path):
    make_abo(tmp_path)
    result = read_abo(tmp_path)
    (product,) = result.products
    assert product.id == "B000A"
    assert product.title == "Leather boot"
    small = (tmp_path / "images/small").resolve()
    assert product.image == str(small / "ab/img1.jpg")
    assert product.images == (str(small / "ab/img1.jpg"), str(small / "ef/img3.jpg"),
                              str(small / "ef/img5.jpg"))
    assert product.description == "Full-grain leather."
    assert product.attributes == {"brand": "Acme", "product_type": "SHOES", "color": "Black"}
    reasons = {e.product_id: e.message for e in result.errors}
    assert reasons["B000B"] == "no en_US item_name"
    assert "not in images.csv.gz" in reasons["B000C"]
    assert any("malformed JSON" in e.message and e.line == 4 for e in result.errors)
    # read_catalog recognises the layout from the directory alone.
    assert [p.id for p in read_catalog(tmp_path).products] == ["B000A"]


def test_images_list_main_first_and_image_must_agree(tmp_path):
    p = product_from_dict({"id": "a", "title": "t", "images": ["m.jpg", "s3://b/o.jpg"]},
                          tmp_path)
    assert p.image == str((tmp_path / "m.jpg").resolve())
    assert p.images == (p.image, "s3://b/o.jpg")
    same = product_from_dict({"id": "a", "title": "t", "image": "m.jpg",
                              "images": ["m.jpg", "s3://b/o.jpg"]}, tmp_path)
    assert same == p
    assert product_from_dict({"id": "a", "title": "t", "image": "m.jpg"}, tmp_path).images == (
        p.image,)
    assert product_from_dict({"id": "a", "title": "t"}).images == ()


def test_bad_images_and_descriptions_are_reported_per_line(tmp_path):
    catalog = write_lines(tmp_path / "c.jsonl", [
        json.dumps({"id": "a1", "title": "t", "image": "x.jpg", "images": ["y.jpg", "x.jpg"]}),
        json.dumps({"id": "a2", "title": "t", "images": "x.jpg"}),
        json.dumps({"id": "a3", "title": "t", "images": ["x.jpg", ""]}),
        json.dumps({"id": "a4", "title": "t", "images": ["x.jpg", "x.jpg"]}),
        json.dumps({"id": "a5", "title": "t", "images": [f"{i}.jpg" for i in range(33)]}),
        json.dumps({"id": "a6", "title": "t", "description": 5}),
        json.dumps({"id": "a7", "title": "t", "description": "x" * 10_001}),
        json.dumps({"id": "ok", "title": "t", "images": [], "description": "  "}),
    ])
    result = read_jsonl(catalog)
    assert [(p.id, p.images, p.description) for p in result.products] == [("ok", (), None)]
    messages = {e.product_id: (e.line, e.message) for e in result.errors}
    assert messages == {
        "a1": (1, "image and images disagree: image is the main image and must be images[0]"
                  " [images]"),
        "a2": (2, "images must be a list of strings [images]"),
        "a3": (3, "image must be a non-empty string [images[1]]"),
        "a4": (4, "images lists the same image twice [images]"),
        "a5": (5, "at most 32 images are allowed [images]"),
        "a6": (6, "description must be a string [description]"),
        "a7": (7, "description is longer than 10000 characters [description]"),
    }


def test_product_keeps_image_and_images_consistent():
    p = Product("a", "t", images=("m", "o1", "o2"))
    assert p.image == "m"
    # replace(image=...) swaps the main image and keeps the others.
    moved = replace(p, image="new")
    assert moved.images == ("new", "o1", "o2") and moved.image == "new"
    assert p.with_images(["o2"]).images == ("o2",) and p.with_images([]).image is None
    assert Product("a", "t", "m").images == ("m",)
    # Single-image products serialise exactly as before the images field existed.
    assert Product("a", "t", "m").to_dict() == {"id": "a", "title": "t", "image": "m",
                                                "attributes": {}}
    assert Product("a", "t", images=("m", "o"), description="d").to_dict() == {
        "id": "a", "title": "t", "image": "m", "attributes": {}, "images": ["m", "o"],
        "description": "d"}


def test_written_catalog_reads_back_with_relative_images(tmp_path):
    from clipsearch.catalog import write_jsonl
    products = [Product("a", "t", images=(str(tmp_path / "i/m.jpg"), str(tmp_path / "i/o.jpg"),
                                          "s3://b/x.jpg"), description="d")]
    write_jsonl(products, tmp_path / "out/c.jsonl", base_dir=tmp_path)
    raw = json.loads((tmp_path / "out/c.jsonl").read_text())
    assert raw["images"] == ["i/m.jpg", "i/o.jpg", "s3://b/x.jpg"] and raw["image"] == "i/m.jpg"
