"""The product model and the catalog readers (JSON Lines and Amazon Berkeley Objects).

Readers never stop at the first bad record: a catalog of thousands of lines
with one typo should still load, and the typo should be reported with its
line number so the user can fix it.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch import config
from clipsearch.errors import ValidationError

AttributeValue = str | int | float | bool
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]*$")
_ATTR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Names the product model owns; an attribute may not shadow them.
RESERVED_FIELDS = frozenset({"id", "title", "image", "attributes", "vector", "embedding"})


@dataclass(frozen=True)
class Product:
    """One catalog entry. `image` is a local path, an s3:// URI, or None."""

    id: str
    title: str
    image: str | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "image": self.image,
            "attributes": dict(self.attributes),
        }


def validate_product_id(value: Any, field_name: str = "id") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("product id must be a non-empty string", field=field_name)
    value = value.strip()
    if len(value) > config.MAX_ID_CHARS:
        raise ValidationError(
            f"product id is longer than {config.MAX_ID_CHARS} characters", field=field_name
        )
    if not _ID_RE.match(value):
        raise ValidationError(
            f"product id {value!r} may only hold letters, digits and . _ : @ + = -",
            field=field_name,
        )
    return value


def _validate_attributes(raw: Any) -> dict[str, AttributeValue]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValidationError("attributes must be an object", field="attributes")
    if len(raw) > config.MAX_ATTRIBUTES:
        raise ValidationError(
            f"at most {config.MAX_ATTRIBUTES} attributes are allowed", field="attributes"
        )
    out: dict[str, AttributeValue] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _ATTR_RE.match(key):
            raise ValidationError(
                f"attribute name {key!r} must match [A-Za-z_][A-Za-z0-9_]* (max 64 chars)",
                field="attributes",
            )
        if key in RESERVED_FIELDS:
            raise ValidationError(f"attribute name {key!r} is reserved", field="attributes")
        if value is None:
            continue
        if isinstance(value, float) and value != value:  # NaN cannot be filtered or ranked
            raise ValidationError(f"attribute {key!r} is NaN", field=f"attributes.{key}")
        if not isinstance(value, str | int | float | bool):
            raise ValidationError(
                f"attribute {key!r} must be a string, number or boolean, "
                f"got {type(value).__name__}",
                field=f"attributes.{key}",
            )
        out[key] = value
    return out


def product_from_dict(raw: Any, base_dir: Path | None = None) -> Product:
    """Validate one catalog record; relative image paths resolve against base_dir."""
    if not isinstance(raw, Mapping):
        raise ValidationError("a product must be a JSON object")
    unknown = set(raw) - {"id", "title", "image", "attributes"}
    if unknown:
        raise ValidationError(f"unknown product field(s): {', '.join(sorted(unknown))}")
    product_id = validate_product_id(raw.get("id"))
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValidationError("title must be a non-empty string", field="title")
    if len(title) > config.MAX_TITLE_CHARS:
        raise ValidationError(
            f"title is longer than {config.MAX_TITLE_CHARS} characters", field="title"
        )
    image = raw.get("image")
    if image is not None:
        if not isinstance(image, str) or not image.strip():
            raise ValidationError("image must be a non-empty string", field="image")
        image = resolve_image_ref(image.strip(), base_dir)
    return Product(
        id=product_id,
        title=title.strip(),
        image=image,
        attributes=_validate_attributes(raw.get("attributes")),
    )


def resolve_image_ref(image: str, base_dir: Path | None) -> str:
    """Keep URIs as they are; make relative file paths absolute."""
    if "://" in image:
        return image
    path = Path(image)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path.resolve()) if base_dir is not None else str(path)


@dataclass(frozen=True)
class RecordError:
    """A catalog record that could not be read, and why."""

    source: str
    line: int | None
    message: str
    product_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        who = f" ({self.product_id})" if self.product_id else ""
        return f"{where}{who}: {self.message}"


@dataclass
class CatalogReadResult:
    products: list[Product]
    errors: list[RecordError]


def iter_jsonl(
    lines: Iterator[str], source: str, base_dir: Path | None
) -> Iterator[Product | RecordError]:
    """Parse JSON Lines, yielding a Product or a RecordError for each non-blank line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            yield RecordError(source, number, f"malformed JSON: {exc.msg} (column {exc.colno})")
            continue
        try:
            yield product_from_dict(raw, base_dir)
        except ValidationError as exc:
            pid = raw.get("id") if isinstance(raw, dict) else None
            pid = pid if isinstance(pid, str) else None
            field_note = f" [{exc.field}]" if exc.field else ""
            yield RecordError(source, number, exc.message + field_note, pid)


def read_jsonl(path: Path) -> CatalogReadResult:
    base_dir = path.resolve().parent
    with path.open(encoding="utf-8") as handle:
        return _collect(iter_jsonl(handle, str(path), base_dir))


def _collect(items: Iterator[Product | RecordError]) -> CatalogReadResult:
    result = CatalogReadResult([], [])
    seen: dict[str, int] = {}
    for item in items:
        if isinstance(item, RecordError):
            result.errors.append(item)
            continue
        if item.id in seen:
            # Last one wins, like an upsert; the earlier record is replaced.
            result.products[seen[item.id]] = item
            continue
        seen[item.id] = len(result.products)
        result.products.append(item)
    return result


# ----------------------------------------------------------------------------
# Amazon Berkeley Objects (https://amazon-berkeley-objects.s3.amazonaws.com)
# ----------------------------------------------------------------------------

ABO_LISTINGS_GLOB = "listings/metadata/listings_*.json.gz"
ABO_IMAGES_CSV = "images/metadata/images.csv.gz"
ABO_IMAGES_DIR = "images/small"


def is_abo_dir(path: Path) -> bool:
    return path.is_dir() and any(path.glob(ABO_LISTINGS_GLOB))


def _abo_value(entries: Any, language: str | None = "en_US") -> str | None:
    """ABO stores most fields as [{"language_tag": ..., "value": ...}]."""
    if not isinstance(entries, list):
        return None
    fallback = None
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
            continue
        tag = entry.get("language_tag")
        if language is None or tag == language:
            return entry["value"].strip() or None
        if tag is None and fallback is None:
            fallback = entry["value"].strip() or None
    return fallback


def read_abo_images(path: Path) -> dict[str, str]:
    """image_id -> relative path under images/small, from images.csv.gz."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"image_id", "path"} - set(reader.fieldnames or [])
        if missing:
            raise ValidationError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return {row["image_id"]: row["path"] for row in reader}


def abo_record_to_product(raw: Any, images: Mapping[str, str], images_root: Path) -> Product:
    if not isinstance(raw, dict):
        raise ValidationError("listing is not a JSON object")
    title = _abo_value(raw.get("item_name"))
    if title is None:
        raise ValidationError("no en_US item_name")
    image_id = raw.get("main_image_id")
    image = None
    if isinstance(image_id, str):
        rel = images.get(image_id)
        if rel is None:
            raise ValidationError(f"main_image_id {image_id} is not in images.csv.gz")
        image = str((images_root / rel).resolve())
    attributes: dict[str, Any] = {
        "brand": _abo_value(raw.get("brand")),
        "product_type": _abo_value(raw.get("product_type"), language=None),
        "color": _abo_value(raw.get("color")),
    }
    return product_from_dict(
        {"id": raw.get("item_id"), "title": title, "image": image, "attributes": attributes}
    )


def read_abo(root: Path, *, require_image: bool = True) -> CatalogReadResult:
    """Read an ABO directory (listings + image metadata) into products."""
    images_csv = root / ABO_IMAGES_CSV
    if not images_csv.exists():
        raise ValidationError(f"{images_csv} not found: is {root} an ABO directory?")
    images = read_abo_images(images_csv)
    images_root = root / ABO_IMAGES_DIR

    def items() -> Iterator[Product | RecordError]:
        for listing in sorted(root.glob(ABO_LISTINGS_GLOB)):
            with gzip.open(listing, "rt", encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    raw = None
                    if not line.strip():
                        continue
                    try:
                        raw = json.loads(line)
                        product = abo_record_to_product(raw, images, images_root)
                        if require_image and product.image is None:
                            raise ValidationError("no main_image_id")
                        yield product
                    except json.JSONDecodeError as exc:
                        yield RecordError(str(listing), number, f"malformed JSON: {exc.msg}")
                    except ValidationError as exc:
                        pid = raw.get("item_id") if isinstance(raw, dict) else None
                        yield RecordError(str(listing), number, exc.message, pid)

    return _collect(items())


def read_catalog(path: Path) -> CatalogReadResult:
    """Read a JSONL file or an ABO directory, whichever `path` is."""
    if not path.exists():
        raise ValidationError(f"catalog {path} does not exist", field="catalog")
    if path.is_dir():
        if is_abo_dir(path):
            return read_abo(path)
        candidates = sorted(path.glob("*.jsonl"))
        if len(candidates) == 1:
            return read_jsonl(candidates[0])
        raise ValidationError(
            f"{path} is a directory but neither an ABO layout ({ABO_LISTINGS_GLOB}) "
            "nor a folder with exactly one .jsonl file",
            field="catalog",
        )
    return read_jsonl(path)


def write_jsonl(products: list[Product], path: Path, base_dir: Path | None = None) -> None:
    """Write products as JSONL; image paths become relative to base_dir when possible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for product in products:
            record = product.to_dict()
            image = record["image"]
            if image and base_dir is not None and "://" not in image:
                with contextlib.suppress(ValueError):
                    record["image"] = str(Path(image).resolve().relative_to(base_dir.resolve()))
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
