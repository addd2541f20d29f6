"""Strict parsing of untrusted text and JSON: what every entry point accepts.

Why not plain `json.loads`: it accepts input that breaks us later, far from
where it came in.

- Nesting depth is unbounded: `[` x 100,000 raises RecursionError, which no
  caller expects (a 500, an aborted ingest, a failed SQS batch).
- `NaN`, `Infinity` and `1e999` (parsed as infinity) are accepted, then make
  invalid JSON on the way out, break numeric filters and are refused by
  OpenSearch.
- Integers of any length are accepted; beyond 2**53 they no longer survive a
  float64 (our numeric columns, OpenSearch `double`, JavaScript).
- `"\\ud800"` decodes to a lone surrogate: a `str` that cannot be encoded as
  UTF-8, so the tokenizer, boto3, SQLite or the response serialiser fail on it.

`loads` rejects all four with a `json.JSONDecodeError` subclass (so existing
handlers keep working) whose message says which rule was broken; the limits
are in `clipsearch.config` and docs/security.md. `check_text` applies the
Unicode rule to text that does not come through JSON (query parameters,
command-line arguments, S3 keys).
"""

from __future__ import annotations

import json
import re
from typing import Any

from clipsearch import config
from clipsearch.errors import ValidationError

# A JSON string (escapes included) or a bracket; strings are skipped whole,
# so brackets inside them do not count towards the depth.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")


class StrictJSONError(json.JSONDecodeError):
    """Input that is JSON, or almost, but outside what clipsearch accepts.

    `str()` is the message alone unless `located`: a position only helps when
    it points at the problem.
    """

    def __init__(self, msg: str, doc: str = "", pos: int = 0, *, located: bool = False):
        super().__init__(msg, doc, pos)
        if not located:
            self.args = (msg,)


def loads(data: str | bytes | bytearray, *, max_depth: int | None = None) -> Any:
    """`json.loads` with bounded depth, finite numbers, bounded integers, valid Unicode."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StrictJSONError(f"not UTF-8 (byte {exc.start})", "", 0) from None
    else:
        text = data
    limit = config.JSON_MAX_DEPTH if max_depth is None else max_depth
    _check_depth(text, limit)
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float,
                           parse_int=_int)
    except json.JSONDecodeError:
        raise
    except _Rejected as exc:
        raise StrictJSONError(str(exc), text, 0) from None
    except RecursionError:  # defence in depth: _check_depth should have stopped it
        raise StrictJSONError(f"nested deeper than {limit} levels", text, 0) from None
    _check_strings(value, text)
    return value


class _Rejected(ValueError):
    pass


def _check_depth(text: str, limit: int) -> None:
    # Fewer openers than the limit cannot nest deeper: skips the scan for almost
    # every real document (a 4 MiB base64 body: 2 ms of counting instead of ~90).
    if text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                raise StrictJSONError(f"nested deeper than {limit} levels", text,
                                      match.start(), located=True)
        elif token in "]}":
            depth -= 1


def _constant(name: str) -> Any:
    raise _Rejected(f"{name} is not a JSON number; numbers must be finite")


def _float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise _Rejected(f"number {literal[:40]} is too large; numbers must be finite")
    return value


def _int(literal: str) -> int:
    # Length first: int() of a 100,000-digit string is itself a CPU sink.
    digits = len(literal.lstrip("-"))
    value = int(literal) if digits <= 20 else None
    if value is None or abs(value) > config.JSON_MAX_INT:
        raise _Rejected(f"integer {literal[:40]}{'...' if len(literal) > 40 else ''} is "
                        f"outside +-{config.JSON_MAX_INT:,} (2**53-1)")
    return value


def _check_strings(value: Any, text: str) -> None:
    """Walk the parsed document (iteratively: its depth is bounded but need not be small)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                raise StrictJSONError(
                    f"string {_preview(item)} is not well-formed Unicode (lone surrogate)",
                    text, 0)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def is_well_formed(text: str) -> bool:
    """False when `text` holds a lone surrogate (it could not be encoded as UTF-8)."""
    return text.isascii() or not _SURROGATE.search(text)


def check_text(value: str, field: str | None, what: str = "text") -> str:
    """`value`, or a ValidationError naming `field` when it is not well-formed Unicode."""
    if not is_well_formed(value):
        raise ValidationError(f"{what} is not well-formed Unicode (it holds a lone "
                              "surrogate such as \\ud800)", field=field)
    return value


def scrub(value: Any) -> Any:
    """A copy of a JSON-ready value whose strings can always be encoded (U+FFFD for
    lone surrogates). Error messages quote input; this keeps them serialisable."""
    if isinstance(value, str):
        return value if is_well_formed(value) else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def _preview(text: str) -> str:
    return ascii(text[:40]) + ("..." if len(text) > 40 else "")
