"""Step 4a: read transform output back into vectors, one verdict per product.

Transform output is data from another system, so nothing in it is trusted:
a file can be missing (the job never wrote it), a line can be cut or
garbled, a vector can have the wrong length, NaNs, or be all zeros. Every
such problem becomes a failure for the product it belongs to, with the
reason, and every other product is still indexed.

Attribution. MultiRecord output lines carry the record's id, which is the
product id, so a good line is matched by id whatever its position. A line
that does not parse carries no id: if the file has exactly as many lines as
the input had records (AssembleWith=Line keeps them in order), the bad line
is attributed by position; otherwise the products left without a line are
reported as missing, naming how many lines of that file were unreadable.
Blank lines are ignored: SageMaker may add one after a response that
already ended with a newline.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipsearch.bootstrap.prepare import Failure

STEP = "transform"


@dataclass
class ParsedOutput:
    """Vectors by product id, and the products this output failed."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


def check_vector(value: Any, dimension: int | None) -> np.ndarray | str:
    """A float32 unit-length-able vector, or the reason it is unusable."""
    if not isinstance(value, list) or not value:
        return "embedding is not a non-empty list of numbers"
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in value):
        return "embedding holds something other than numbers"
    if dimension is not None and len(value) != dimension:
        return f"embedding has {len(value)} dimensions; the model makes {dimension}"
    if not all(math.isfinite(v) for v in value):
        return "embedding holds NaN or infinity"
    vector = np.asarray(value, dtype=np.float32)
    if not float(np.linalg.norm(vector)) > 0.0:
        return "embedding is all zeros"
    return vector


def _lines(body: bytes) -> list[str]:
    return [line for line in body.decode("utf-8", "replace").splitlines() if line.strip()]


def _model_error(doc: dict[str, Any]) -> str:
    error = doc.get("error")
    if isinstance(error, dict):
        code = error.get("error") or "error"
        where = f" [{error['field']}]" if error.get("field") else ""
        return f"the model rejected the record: {code}: {error.get('message')}{where}"
    return f"the model rejected the record: {error}"


def parse_multirecord(body: bytes | None, ids: Sequence[str], key: str,
                      dimension: int | None) -> ParsedOutput:
    """One `<part>.jsonl.out` file against the ids of its input file, in order."""
    out = ParsedOutput()
    if body is None:
        out.failures = [Failure(pid, STEP, f"no transform output {key}: the job wrote none for "
                                "this input file") for pid in ids]
        return out
    expected = set(ids)
    decided: set[str] = set()
    unreadable: list[tuple[int, str]] = []
    lines = _lines(body)
    for position, line in enumerate(lines):
        try:
            doc = json.loads(line)
        except ValueError as exc:
            unreadable.append((position, f"malformed transform output line {position + 1} of "
                                         f"{key}: {exc}"))
            continue
        pid = doc.get("id") if isinstance(doc, dict) else None
        if not isinstance(pid, str) or pid not in expected:
            unreadable.append((position, f"transform output line {position + 1} of {key} has "
                                         f"no known id ({str(pid)[:60]!r})"))
            continue
        if pid in decided:
            continue  # a duplicate line; the first answer stands
        decided.add(pid)
        if "error" in doc:
            out.failures.append(Failure(pid, STEP, _model_error(doc)))
            continue
        checked = check_vector(doc.get("embedding"), dimension)
        if isinstance(checked, str):
            out.failures.append(Failure(pid, STEP, f"{checked} ({key} line {position + 1})"))
        else:
            out.vectors[pid] = checked
    missing = [pid for pid in ids if pid not in decided]
    if unreadable and len(lines) == len(ids):
        for position, reason in unreadable:
            pid = ids[position]
            if pid in missing:
                missing.remove(pid)
                out.failures.append(Failure(pid, STEP, reason))
    note = f" ({len(unreadable)} unreadable line(s) in that file)" if unreadable else ""
    out.failures += [Failure(pid, STEP, f"missing from transform output {key}{note}")
                     for pid in missing]
    return out


def parse_single(body: bytes | None, ids: Sequence[str], key: str,
                 dimension: int | None) -> ParsedOutput:
    """One SingleRecord `<image>.out`: a JSON line `{"model", "dimension", "embedding"}`."""
    out = ParsedOutput()
    reason: str | None = None
    vector: np.ndarray | None = None
    if body is None:
        reason = f"no transform output {key}: the job wrote none for this image"
    else:
        lines = _lines(body)
        try:
            doc = json.loads(lines[0]) if len(lines) == 1 else None
        except ValueError as exc:
            doc, reason = None, f"malformed transform output {key}: {exc}"
        if doc is None and reason is None:
            reason = f"transform output {key} has {len(lines)} lines; expected 1"
        elif isinstance(doc, dict) and "error" in doc:
            reason = _model_error(doc)
        elif doc is not None:
            checked = check_vector(doc.get("embedding") if isinstance(doc, dict) else None,
                                   dimension)
            reason, vector = ((f"{checked} ({key})", None) if isinstance(checked, str)
                              else (None, checked))
    for pid in ids:
        if vector is not None:
            out.vectors[pid] = vector
        else:
            out.failures.append(Failure(pid, STEP, reason or "unusable output"))
    return out


def majority_dimension(body: bytes) -> int | None:
    """The commonest embedding length in an output file, when the model does not say."""
    counts: Counter[int] = Counter()
    for line in _lines(body):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("embedding"), list):
            counts[len(doc["embedding"])] += 1
    return counts.most_common(1)[0][0] if counts else None
