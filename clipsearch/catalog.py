"""The product model and the catalog readers (JSON Lines and Amazon Berkeley Objects).

Readers never stop at the first bad record: a catalog of thousands of lines
with one typo should still load, and the typo should be reported with its
line number so the user can fix it. That holds for every kind of bad line:
bytes that are not UTF-8, JSON nested too deep or holding non-finite or huge
numbers (`clipsearch.strict`), strings that are not well-formed Unicode,
and any unexpected failure while validating one record.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import logging
import math
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clipsearch import config, strict
from clipsearch.errors import ValidationError

log = logging.getLogger(__name__)

AttributeValue = str | int | float | bool
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]*$")
_ATTR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Names the product model owns; an attribute may not shadow them.
RESERVED_FIELDS = frozenset(
    {"id", "title", "image", "images", "description", "attributes", "vector", "embedding"}
)
PRODUCT_FIELDS = frozenset({"id", "title", "image", "images", "description", "attributes"})


@dataclass(frozen=True)
class Product:
    """One catalog entry.

    `images` are local paths or s3:// / http(s) URIs, the main image first;
    `image` is always the main image (or None), so code that only knows one
    image per product keeps working. Either may be given: `images` alone sets
    `image`; `image` alone sets `images`; an `image` that differs from
    `images[0]` replaces the main image, which keeps `dataclasses.replace(p,
    image=...)` meaningful. To replace the whole list use `with_images`
    (`replace(p, images=...)` would keep the old main image, since `image`
    wins). Catalog lines are stricter: `product_from_dict` rejects an `image`
    that contradicts `images`.
    """

    id: str
    title: str
    image: str | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    images: tuple[str, ...] = ()
    description: str | None = None

    def __post_init__(self) -> None:
        images = tuple(self.images)
        if self.image is not None and (not images or images[0] != self.image):
            images = (self.image, *(i for i in images[1:] if i != self.image))
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "image", images[0] if images else None)

    def with_images(self, images: Sequence[str]) -> Product:
        """A copy whose images (main first) are exactly `images`."""
        return replace(self, image=None, images=tuple(images))

    def to_dict(self) -> dict[str, Any]:
        """The catalog-line form. `images` and `description` appear only when they
        carry something, so single-image records serialise exactly as before."""
        record: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "image": self.image,
            "attributes": dict(self.attributes),
        }
        if len(self.images) > 1:
            record["images"] = list(self.images)
        if self.description is not None:
            record["description"] = self.description
        return record


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
        where = f"attributes.{key}"
        if not isinstance(value, str | int | float | bool):
            raise ValidationError(
                f"attribute {key!r} must be a string, number or boolean, "
                f"got {type(value).__name__}",
                field=where,
            )
        out[key] = _check_attribute_value(key, value, where)
    return out


def _check_attribute_value(key: str, value: AttributeValue, where: str) -> AttributeValue:
    """Numbers must survive every backend (finite, exact in a float64); text must encode."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        # NaN and infinity cannot be filtered, ranked or written as JSON.
        raise ValidationError(f"attribute {key!r} is {value}; numbers must be finite",
                              field=where)
    if isinstance(value, int) and abs(value) > config.JSON_MAX_INT:
        raise ValidationError(f"attribute {key!r} is outside +-{config.JSON_MAX_INT:,} "
                              "(2**53-1)", field=where)
    if isinstance(value, str):
        strict.check_text(value, where, f"attribute {key!r}")
        if len(value) > config.MAX_TITLE_CHARS:
            raise ValidationError(f"attribute {key!r} is longer than "
                                  f"{config.MAX_TITLE_CHARS} characters", field=where)
    return value


def product_from_dict(raw: Any, base_dir: Path | None = None) -> Product:
    """Validate one catalog record; relative image paths resolve against base_dir."""
    if not isinstance(raw, Mapping):
        raise ValidationError("a product must be a JSON object")
    unknown = set(raw) - PRODUCT_FIELDS
    if unknown:
        raise ValidationError(f"unknown product field(s): {', '.join(sorted(unknown))}")
    product_id = validate_product_id(raw.get("id"))
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValidationError("title must be a non-empty string", field="title")
    strict.check_text(title, "title", "title")
    if len(title) > config.MAX_TITLE_CHARS:
        raise ValidationError(
            f"title is longer than {config.MAX_TITLE_CHARS} characters", field="title"
        )
    return Product(
        id=product_id,
        title=title.strip(),
        images=_validate_images(raw.get("image"), raw.get("images"), base_dir),
        attributes=_validate_attributes(raw.get("attributes")),
        description=_validate_description(raw.get("description")),
    )


def _validate_image_ref(value: Any, field_name: str, base_dir: Path | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("image must be a non-empty string", field=field_name)
    strict.check_text(value, field_name, "image")
    if "\x00" in value or len(value) > config.MAX_IMAGE_REF_CHARS:
        raise ValidationError(f"image is not a usable path or URI (a NUL character, or "
                              f"longer than {config.MAX_IMAGE_REF_CHARS})", field=field_name)
    return resolve_image_ref(value.strip(), base_dir)


def _validate_images(image: Any, images: Any, base_dir: Path | None) -> tuple[str, ...]:
    """`image` (the main one), `images` (all, main first), or both if they agree."""
    main = None if image is None else _validate_image_ref(image, "image", base_dir)
    if images is None:
        return (main,) if main is not None else ()
    if not isinstance(images, list):
        raise ValidationError("images must be a list of strings", field="images")
    if len(images) > config.MAX_IMAGES:
        raise ValidationError(f"at most {config.MAX_IMAGES} images are allowed", field="images")
    refs = [_validate_image_ref(v, f"images[{i}]", base_dir) for i, v in enumerate(images)]
    if len(set(refs)) != len(refs):
        raise ValidationError("images lists the same image twice", field="images")
    if main is not None and (not refs or refs[0] != main):
        raise ValidationError(
            "image and images disagree: image is the main image and must be images[0]",
            field="images",
        )
    return tuple(refs)


def _validate_description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("description must be a string", field="description")
    strict.check_text(value, "description", "description")
    value = value.strip()
    if len(value) > config.MAX_DESCRIPTION_CHARS:
        raise ValidationError(
            f"description is longer than {config.MAX_DESCRIPTION_CHARS} characters",
            field="description",
        )
    return value or None


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
    lines: Iterable[str | bytes], source: str, base_dir: Path | None
) -> Iterator[Product | RecordError]:
    """Parse JSON Lines, yielding a Product or a RecordError for each non-blank line.

    Lines may be bytes: one that is not UTF-8 is then that line's error, not
    the file's.
    """
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes | bytearray):
            try:
                line = bytes(line).decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RecordError(source, number, f"line is not UTF-8 (byte {exc.start + 1} "
                                  "of the line)")
                continue
        if not line.strip():
            continue
        yield _parse_line(line, number, source, base_dir)


def _parse_line(line: str, number: int, source: str,
                base_dir: Path | None) -> Product | RecordError:
    raw: Any = None
    try:
        raw = strict.loads(line)
        return product_from_dict(raw, base_dir)
    except json.JSONDecodeError as exc:
        where = f" (column {exc.colno})" if exc.pos else ""
        return RecordError(source, number, f"malformed JSON: {exc.msg}{where}")
    except ValidationError as exc:
        field_note = f" [{exc.field}]" if exc.field else ""
        return RecordError(source, number, exc.message + field_note, _record_id(raw))
    except Exception as exc:  # one record must never stop the catalog
        log.warning("%s:%d: unexpected %s while reading the record", source, number,
                    type(exc).__name__, exc_info=True)
        return RecordError(source, number, f"unreadable record ({type(exc).__name__})",
                           _record_id(raw))


def _record_id(raw: Any, key: str = "id") -> str | None:
    pid = raw.get(key) if isinstance(raw, dict) else None
    return pid if isinstance(pid, str) and strict.is_well_formed(pid) else None


def read_jsonl(path: Path) -> CatalogReadResult:
    """A JSON Lines file, read as bytes so each line's encoding is checked alone."""
    base_dir = path.resolve().parent
    _require_regular_file(path)
    with path.open("rb") as handle:
        return _collect(iter_jsonl(handle, str(path), base_dir))


def _require_regular_file(path: Path) -> None:
    """A FIFO or device as a catalog would hang or never end: only regular files."""
    if not path.is_file():
        raise ValidationError(f"catalog {path} is not a regular file", field="catalog")


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
    # A stray non-UTF-8 byte only spoils its own row's path (that image is then
    # reported missing); a corrupt archive is one clear error.
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"image_id", "path"} - set(reader.fieldnames or [])
            if missing:
                raise ValidationError(
                    f"{path}: missing column(s) {', '.join(sorted(missing))}")
            return {row["image_id"]: row["path"] for row in reader
                    if row.get("image_id") and row.get("path")}
    except (OSError, EOFError, zlib.error, csv.Error) as exc:
        raise ValidationError(f"{path} cannot be read: {exc}", field="catalog") from None


def abo_record_to_product(raw: Any, images: Mapping[str, str], images_root: Path) -> Product:
    """One ABO listing: en_US title, main image then `other_image_id`s, description.

    A missing main image is an error (the listing's search image would be
    wrong); an `other_image_id` absent from images.csv.gz is skipped, since
    the product is still searchable without it.
    """
    if not isinstance(raw, dict):
        raise ValidationError("listing is not a JSON object")
    title = _abo_value(raw.get("item_name"))
    if title is None:
        raise ValidationError("no en_US item_name")
    paths: list[str] = []
    image_id = raw.get("main_image_id")
    if isinstance(image_id, str):
        rel = images.get(image_id)
        if rel is None:
            raise ValidationError(f"main_image_id {image_id} is not in images.csv.gz")
        paths.append(str((images_root / rel).resolve()))
        others = raw.get("other_image_id")
        for other in others if isinstance(others, list) else []:
            rel = images.get(other) if isinstance(other, str) else None
            path = str((images_root / rel).resolve()) if rel is not None else None
            if path is not None and path not in paths and len(paths) < config.MAX_IMAGES:
                paths.append(path)
    description = _abo_value(raw.get("product_description"))
    attributes: dict[str, Any] = {
        "brand": _abo_value(raw.get("brand")),
        "product_type": _abo_value(raw.get("product_type"), language=None),
        "color": _abo_value(raw.get("color")),
    }
    record: dict[str, Any] = {"id": raw.get("item_id"), "title": title, "images": paths,
                              "attributes": attributes}
    if description is not None:
        record["description"] = description[: config.MAX_DESCRIPTION_CHARS]
    return product_from_dict(record)


def read_abo(root: Path, *, require_image: bool = True) -> CatalogReadResult:
    """Read an ABO directory (listings + image metadata) into products."""
    images_csv = root / ABO_IMAGES_CSV
    if not images_csv.exists():
        raise ValidationError(f"{images_csv} not found: is {root} an ABO directory?")
    images = read_abo_images(images_csv)
    images_root = root / ABO_IMAGES_DIR

    def record(line: bytes, listing: Path, number: int) -> Product | RecordError:
        raw: Any = None
        try:
            raw = strict.loads(line)
            product = abo_record_to_product(raw, images, images_root)
            if require_image and product.image is None:
                raise ValidationError("no main_image_id")
            return product
        except json.JSONDecodeError as exc:
            return RecordError(str(listing), number, f"malformed JSON: {exc.msg}")
        except ValidationError as exc:
            return RecordError(str(listing), number, exc.message, _record_id(raw, "item_id"))
        except Exception as exc:  # one listing must never stop the catalog
            log.warning("%s:%d: unexpected %s", listing, number, type(exc).__name__,
                        exc_info=True)
            return RecordError(str(listing), number,
                               f"unreadable record ({type(exc).__name__})",
                               _record_id(raw, "item_id"))

    def items() -> Iterator[Product | RecordError]:
        for listing in sorted(root.glob(ABO_LISTINGS_GLOB)):
            number = 0
            try:
                with gzip.open(listing, "rb") as handle:
                    for number, line in enumerate(handle, 1):
                        if line.strip():
                            yield record(line, listing, number)
            except (OSError, EOFError, zlib.error) as exc:  # a corrupt or truncated .gz
                yield RecordError(str(listing), number + 1 if number else None,
                                  f"cannot read the rest of the file: {exc}")

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
            if base_dir is not None:
                record["image"] = _relative_ref(record["image"], base_dir)
                if "images" in record:
                    record["images"] = [_relative_ref(i, base_dir) for i in record["images"]]
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _relative_ref(image: str | None, base_dir: Path) -> str | None:
    """A local path relative to base_dir where it lies under it, so the folder can move."""
    if image and "://" not in image:
        with contextlib.suppress(ValueError):
            return str(Path(image).resolve().relative_to(base_dir.resolve()))
    return image
