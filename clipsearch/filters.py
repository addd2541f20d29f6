"""Attribute filters: one parsed form that every index backend translates.

The API accepts
    {"brand": "Acme"}                      term
    {"color": ["red", "blue"]}             any of
    {"price": {"gte": 10, "lt": 100}}      numeric range
and the CLI accepts `key=value`, `key>=n`, `key<=n`, `key>n`, `key<n`.
Both become a tuple of `Condition`s, validated against the fields the index
actually holds, so a typo in a field name is a 400 rather than zero results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clipsearch import config, strict
from clipsearch.errors import ValidationError

RANGE_OPS = ("gt", "gte", "lt", "lte")
FieldType = str  # "keyword" | "number" | "boolean"


@dataclass(frozen=True)
class Condition:
    """`field` equals one of `values`, or lies within the range bounds."""

    field: str
    values: tuple[Any, ...] = ()
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @property
    def is_range(self) -> bool:
        return not self.values

    def bounds(self) -> dict[str, float]:
        return {op: getattr(self, op) for op in RANGE_OPS if getattr(self, op) is not None}


Filters = tuple[Condition, ...]


def field_type_of(value: Any) -> FieldType:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "keyword"


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"range bound must be a finite number, got {value!r}", field=where)
    return float(value)


def parse_filters(raw: Any) -> Filters:
    """Parse the API's JSON filter object (structure only, not field names)."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ValidationError("filters must be an object of field -> value", field="filters")
    if len(raw) > config.MAX_FILTER_CLAUSES:
        raise ValidationError(
            f"at most {config.MAX_FILTER_CLAUSES} filter fields are allowed", field="filters"
        )
    conditions = []
    for name, spec in raw.items():
        if not isinstance(name, str) or not name:
            raise ValidationError("filter field names must be non-empty strings", field="filters")
        strict.check_text(name, "filters", "a filter field name")
        where = f"filters.{name}"
        if isinstance(spec, Mapping):
            unknown = set(spec) - set(RANGE_OPS)
            if unknown or not spec:
                raise ValidationError(
                    f"range filter takes gt, gte, lt, lte; got {sorted(map(str, spec)) or 'none'}",
                    field=where,
                )
            bounds = {op: _number(v, where) for op, v in spec.items()}
            conditions.append(Condition(name, **bounds))
        elif isinstance(spec, list):
            if not spec or len(spec) > 100:
                raise ValidationError("a list filter needs 1 to 100 values", field=where)
            for v in spec:
                _check_scalar(v, where)
            conditions.append(Condition(name, values=tuple(spec)))
        else:
            _check_scalar(spec, where)
            conditions.append(Condition(name, values=(spec,)))
    return tuple(conditions)


def _check_scalar(value: Any, where: str) -> None:
    if not isinstance(value, str | int | float | bool) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise ValidationError(
            f"filter value must be a string, number or boolean, got {value!r}", field=where
        )
    if isinstance(value, str):
        strict.check_text(value, where, "a filter value")


_CLI_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<|=)\s*(.*?)\s*$")
_CLI_OPS = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}


def parse_cli_filters(items: list[str]) -> dict[str, Any]:
    """Turn `key=value` / `key>=n` strings into the API's JSON filter object."""
    out: dict[str, Any] = {}
    for item in items:
        match = _CLI_RE.match(item)
        if not match or not match.group(3):
            raise ValidationError(
                f"cannot parse filter {item!r}; use key=value, key>=number or key<=number",
                field="filters",
            )
        name, op, value = match.groups()
        if op == "=":
            out.setdefault(name, [])
            if not isinstance(out[name], list):
                raise ValidationError(f"filter {name!r} mixes a range and a value", field="filters")
            out[name].append(value)
        else:
            try:
                number = float(value)
            except ValueError:
                raise ValidationError(
                    f"filter {item!r}: {value!r} is not a number", field="filters"
                ) from None
            bucket = out.setdefault(name, {})
            if not isinstance(bucket, dict):
                raise ValidationError(f"filter {name!r} mixes a range and a value", field="filters")
            bucket[_CLI_OPS[op]] = number
    return {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in out.items()}


def bind_filters(filters: Filters, fields: Mapping[str, FieldType]) -> Filters:
    """Check field names and types against the index, coercing CLI strings.

    Values typed on a command line are strings; `price=10` must still match a
    numeric field, and `in_stock=true` a boolean one.
    """
    bound = []
    for cond in filters:
        where = f"filters.{cond.field}"
        ftype = fields.get(cond.field)
        if ftype is None:
            known = ", ".join(sorted(fields)) or "none yet"
            raise ValidationError(
                f"unknown filter field {cond.field!r}; filterable fields: {known}",
                field=where, code="unknown_filter_field",
            )
        if cond.is_range:
            if ftype != "number":
                raise ValidationError(
                    f"range filter on {cond.field!r}, which is a {ftype} field", field=where
                )
            bound.append(cond)
            continue
        values = tuple(_coerce(v, ftype, where) for v in cond.values)
        bound.append(Condition(cond.field, values=values))
    return tuple(bound)


def _coerce(value: Any, ftype: FieldType, where: str) -> Any:
    if ftype == "keyword":
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    if ftype == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValidationError(f"{value!r} is not a boolean (true/false)", field=where)
    if isinstance(value, bool):
        raise ValidationError(f"{value!r} is not a number", field=where)
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{value!r} is not a number", field=where) from None


def matches(attributes: Mapping[str, Any], filters: Filters) -> bool:
    """Whether one product passes bound filters, evaluated in Python.

    The indexes filter inside their searches; this is for the one product the
    service looks up directly (an exact id match), which must obey the same
    filters as everything else on the page.
    """
    for cond in filters:
        value = attributes.get(cond.field)
        if value is None:
            return False
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if cond.is_range:
            if not numeric:
                return False
            if not all(_in_bound(float(value), op, bound)
                       for op, bound in cond.bounds().items()):
                return False
        elif not any(_same(value, wanted, numeric) for wanted in cond.values):
            return False
    return True


def _in_bound(value: float, op: str, bound: float) -> bool:
    return {"gt": value > bound, "gte": value >= bound,
            "lt": value < bound, "lte": value <= bound}[op]


def _same(value: Any, wanted: Any, numeric: bool) -> bool:
    if isinstance(value, bool) or isinstance(wanted, bool):
        return isinstance(value, bool) and isinstance(wanted, bool) and value == wanted
    if numeric:
        return isinstance(wanted, int | float) and float(value) == float(wanted)
    return str(value) == wanted
