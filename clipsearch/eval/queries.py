"""Evaluation query sets: read and write JSON Lines, or generate them from a catalog.

A query set is the ground truth every number of `clipsearch eval` rests on,
so reading one is strict: every bad line is reported with its line number and
the run does not start, rather than quietly evaluating a smaller set.

Generated sets need no hand-made labels: a product's own title (title2product)
or one of its non-main photos (image2product) is the query, and that product is
the one right answer. They measure whether search finds a known item, which is
what a shopper typing a product name or photographing a product expects.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch import config
from clipsearch.catalog import Product, validate_product_id
from clipsearch.errors import ValidationError
from clipsearch.filters import parse_filters

QUERY_FIELDS = frozenset({"id", "text", "image", "relevant", "filters"})
TASKS = ("title2product", "image2product")
MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True)
class EvalQuery:
    """One query and its judged products (id -> grade; grade > 0 means relevant)."""

    id: str
    relevant: Mapping[str, int]
    text: str | None = None
    image: str | None = None  # a local file path, absolute once read
    filters: Mapping[str, Any] | None = field(default=None)

    def to_dict(self, base_dir: Path | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {"id": self.id}
        if self.text is not None:
            record["text"] = self.text
        if self.image is not None:
            record["image"] = _relative(self.image, base_dir)
        grades = set(self.relevant.values())
        record["relevant"] = (sorted(self.relevant) if grades == {1}
                              else dict(sorted(self.relevant.items())))
        if self.filters:
            record["filters"] = dict(self.filters)
        return record


def _relative(path: str, base_dir: Path | None) -> str:
    """Relative to the query file (even via ..), so the file and the images can move together."""
    if base_dir is not None:
        with contextlib.suppress(ValueError):  # e.g. another drive on Windows
            return os.path.relpath(Path(path).resolve(), base_dir.resolve())
    return path


def _parse_relevant(raw: Any) -> dict[str, int]:
    if isinstance(raw, list):
        grades = {validate_product_id(pid, "relevant"): 1 for pid in raw}
    elif isinstance(raw, Mapping):
        grades = {}
        for pid, grade in raw.items():
            if isinstance(grade, bool) or not isinstance(grade, int) or grade < 0:
                raise ValidationError(f"grade of {pid!r} must be an integer >= 0",
                                      field="relevant")
            grades[validate_product_id(pid, "relevant")] = grade
    else:
        raise ValidationError('relevant must be a list of ids or {"id": grade, ...}',
                              field="relevant")
    if not any(grade > 0 for grade in grades.values()):
        raise ValidationError("relevant names no product with a grade above 0",
                              field="relevant")
    return grades


def query_from_dict(raw: Any, base_dir: Path | None = None) -> EvalQuery:
    """Validate one query line; a relative image path resolves against base_dir."""
    if not isinstance(raw, Mapping):
        raise ValidationError("a query must be a JSON object")
    unknown = set(raw) - QUERY_FIELDS
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(sorted(unknown))}; allowed: "
                              f"{', '.join(sorted(QUERY_FIELDS))}")
    qid = raw.get("id")
    if not isinstance(qid, str) or not qid.strip():
        raise ValidationError("id must be a non-empty string", field="id")
    text = raw.get("text")
    if text is not None and (not isinstance(text, str) or not text.strip()
                             or len(text) > config.MAX_TEXT_CHARS):
        raise ValidationError(f"text must be a non-empty string of at most "
                              f"{config.MAX_TEXT_CHARS} characters", field="text")
    image = raw.get("image")
    if image is not None:
        if not isinstance(image, str) or not image.strip():
            raise ValidationError("image must be a file path", field="image")
        path = Path(image.strip())
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ValidationError(f"image file {path} does not exist", field="image")
        image = str(path.resolve())
    if text is None and image is None:
        raise ValidationError("a query needs text, image or both", field="text")
    filters = raw.get("filters")
    if filters is not None:
        parse_filters(filters)  # the API's own rules, so a bad filter fails here, by line
    return EvalQuery(id=qid.strip(), relevant=_parse_relevant(raw.get("relevant")),
                     text=text.strip() if text else None, image=image, filters=filters or None)


def read_queries(path: Path) -> list[EvalQuery]:
    """Read a JSON Lines query set, or raise one error that lists every bad line."""
    if not path.is_file():
        raise ValidationError(f"query file {path} does not exist", field="queries")
    base_dir = path.resolve().parent
    queries: list[EvalQuery] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                query = query_from_dict(json.loads(line), base_dir)
            except json.JSONDecodeError as exc:
                errors.append(f"line {number}: malformed JSON: {exc.msg} (column {exc.colno})")
                continue
            except ValidationError as exc:
                where = f" [{exc.field}]" if exc.field else ""
                errors.append(f"line {number}: {exc.message}{where}")
                continue
            if query.id in seen:
                errors.append(f"line {number}: id {query.id!r} repeats line {seen[query.id]}")
                continue
            seen[query.id] = number
            queries.append(query)
    if errors:
        shown = errors[:MAX_REPORTED_ERRORS]
        more = len(errors) - len(shown)
        raise ValidationError(
            f"{path}: {len(errors)} bad line(s):\n  " + "\n  ".join(shown)
            + (f"\n  ... and {more} more" if more else ""), field="queries")
    if not queries:
        raise ValidationError(f"{path} holds no queries", field="queries")
    return queries


def write_queries(queries: Iterable[EvalQuery], path: Path) -> int:
    """Write a query set; image paths become relative to the file so the folder can move."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for query in queries:
            handle.write(json.dumps(query.to_dict(path.resolve().parent),
                                    ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


# ----------------------------------------------------------------------------- generators


def _field_text(product: Product, name: str) -> str | None:
    if name == "title":
        value: Any = product.title
    elif name == "description":
        value = product.description
    else:
        value = product.attributes.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    # The API caps query text; a long description is cut, as a shopper would type less.
    return value.strip()[: config.MAX_TEXT_CHARS].strip()


def generate(task: str, products: Sequence[Product], *, sample: int | None = None,
             seed: int = 0, text_field: str = "title") -> list[EvalQuery]:
    """Known-item queries from a catalog: each query's one relevant product is its source.

    `sample` draws that many products (seeded, so a set is reproducible)
    among those the task can use; None takes them all, in catalog order.
    """
    if task not in TASKS:
        raise ValidationError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}",
                              field="generate")
    rng = random.Random(seed)
    if task == "title2product":
        eligible = [p for p in products if _field_text(p, text_field) is not None]
        if not eligible:
            raise ValidationError(f"no product has a {text_field!r} to use as a query",
                                  field="field")
    else:
        eligible = [p for p in products
                    if len(p.images) > 1 and any("://" not in i for i in p.images[1:])]
        if not eligible:
            raise ValidationError("image2product needs products with more than one local "
                                  'image ("images": [main, other, ...] in the catalog)',
                                  field="generate")
    if sample is not None:
        if sample < 1:
            raise ValidationError("--sample must be at least 1", field="sample")
        eligible = rng.sample(eligible, min(sample, len(eligible)))
    queries = []
    for product in eligible:
        if task == "title2product":
            queries.append(EvalQuery(id=f"{task}:{product.id}", relevant={product.id: 1},
                                     text=_field_text(product, text_field)))
        else:
            others = [i for i in product.images[1:] if "://" not in i]
            queries.append(EvalQuery(id=f"{task}:{product.id}", relevant={product.id: 1},
                                     image=rng.choice(others)))
    return queries
