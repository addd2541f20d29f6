"""Late fusion of ranked lists: how `hybrid` search combines vectors and words.

Why in our code rather than in a backend: the embedded index has no hybrid
query at all, and the OpenSearch node we test on has no neural-search plugin.
Fusing here gives both backends the same ranking by construction.

Why each signal is cut at a fixed depth (`rank_window`) rather than at
`offset + k`: a product's fused score depends on its rank in every list, so
if page 3 read deeper lists than page 1 it could rank products differently,
and pages would overlap or skip. With one fixed depth every page slices the
same fused list, and pages 1..n concatenated are exactly the top n*k of one
big request.

Two methods:
- `rrf` (default): reciprocal rank fusion, sum of weight / (60 + rank). It
  needs no score calibration, which matters because cosine and BM25 live on
  unrelated scales. The sum is divided by its largest possible value, so 1.0
  means "first in every signal" and scores stay in [0, 1].
- `weighted`: each signal's scores min-max normalised over its window, then a
  weighted sum (weights sum to 1), in [0, 1]. It keeps score gaps that RRF
  throws away, at the price of depending on the window's spread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from clipsearch.catalog import Product
from clipsearch.index import Hit

RRF_CONSTANT = 60
METHODS = ("rrf", "weighted")


@dataclass(frozen=True)
class SignalRank:
    """Where one signal placed a product: 1-based rank and that signal's own score."""

    rank: int
    score: float


@dataclass
class Fused:
    product: Product
    score: float
    signals: dict[str, SignalRank] = field(default_factory=dict)


def fuse(
    signals: Mapping[str, Sequence[Hit]],
    *,
    method: str = "rrf",
    weights: Mapping[str, float] | None = None,
) -> list[Fused]:
    """Fuse per-signal hit lists (each best first) into one list of products, best first.

    Ties break by the product's best rank in any signal, then by id, so the
    order is total and every page request sees the same one.
    """
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}")
    names = [name for name in signals if (weights or {}).get(name, 1.0) > 0]
    total_weight = sum((weights or {}).get(name, 1.0) for name in names) or 1.0
    share = {name: (weights or {}).get(name, 1.0) / total_weight for name in names}
    fused: dict[str, Fused] = {}
    for name in names:
        hits = signals[name]
        normalised = _min_max([hit.score for hit in hits])
        for rank, (hit, norm) in enumerate(zip(hits, normalised, strict=True), start=1):
            entry = fused.setdefault(hit.product.id, Fused(hit.product, 0.0))
            entry.signals[name] = SignalRank(rank, hit.score)
            if method == "rrf":
                # share * (C + 1) / (C + rank): 1.0 in total for rank 1 everywhere.
                entry.score += share[name] * (RRF_CONSTANT + 1) / (RRF_CONSTANT + rank)
            else:
                entry.score += share[name] * norm
    return sorted(fused.values(), key=lambda f: (
        -f.score, min(s.rank for s in f.signals.values()), f.product.id))


def _min_max(scores: Sequence[float]) -> list[float]:
    """Scores mapped onto [0, 1] within their list; a list of equal scores is all 1."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if high - low <= 1e-12:
        return [1.0] * len(scores)
    return [(s - low) / (high - low) for s in scores]
