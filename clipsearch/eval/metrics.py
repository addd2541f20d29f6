"""Retrieval metrics, their bootstrap confidence intervals, and latency percentiles.

The definitions come from ir-measures (which runs trec_eval through
pytrec_eval), the reference implementations IR papers report, so our numbers
mean what readers expect: recall@k = share of a query's relevant products in
the top k; MRR@k = 1/rank of the first relevant product (0 if none in the top
k); nDCG@k with trec_eval's linear gain (grade / log2(rank + 1)).

Two details keep them faithful to what the user saw:
- trec_eval re-sorts a run by score and breaks ties by document id, which
  would reorder results that tie; we hand it scores derived from our ranks.
- trec_eval drops queries that retrieved nothing; we score those 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RECALL_CUTOFFS = (1, 5, 10)
CI_LEVEL = 0.95
DEFAULT_BOOTSTRAP_RESAMPLES = 1000


def metric_names(k: int) -> list[str]:
    """recall@1/5/10 (those <= k, plus k), mrr@k, ndcg@k; the order reports use."""
    cutoffs = sorted({c for c in RECALL_CUTOFFS if c <= k} | {k})
    return [f"recall@{c}" for c in cutoffs] + [f"mrr@{k}", f"ndcg@{k}"]


def no_relevant_name(k: int) -> str:
    return f"no_relevant@{k}"


def _measures(k: int, curve: bool) -> dict[str, Any]:
    from ir_measures import RR, R, Success, nDCG

    cutoffs = range(1, k + 1) if curve else sorted({c for c in RECALL_CUTOFFS if c <= k} | {k})
    measures: dict[str, Any] = {f"recall@{c}": R @ c for c in cutoffs}
    measures[f"mrr@{k}"] = RR @ k
    measures[f"ndcg@{k}"] = nDCG @ k
    measures[f"success@{k}"] = Success @ k
    return measures


def per_query_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    retrieved: Mapping[str, Sequence[str]],
    k: int,
    *,
    curve: bool = False,
) -> dict[str, dict[str, float]]:
    """metric name -> {query id -> value}, for every query in `qrels`.

    With `curve`, recall at every cutoff 1..k is included (for recall@k charts).
    """
    import ir_measures

    measures = _measures(k, curve)
    if not qrels:
        return {name: {} for name in [*measures, no_relevant_name(k)] if name != f"success@{k}"}
    by_measure = {measure: name for name, measure in measures.items()}
    run = {}
    for qid, ids in retrieved.items():
        top = list(dict.fromkeys(ids))[:k]
        if top:
            run[qid] = {doc: float(len(top) - rank) for rank, doc in enumerate(top)}
    values: dict[str, dict[str, float]] = {name: dict.fromkeys(qrels, 0.0) for name in measures}
    judged = {qid: dict(grades) for qid, grades in qrels.items()}
    for metric in ir_measures.iter_calc(list(measures.values()), judged, run):
        values[by_measure[metric.measure]][metric.query_id] = float(metric.value)
    success = values.pop(f"success@{k}")
    values[no_relevant_name(k)] = {qid: 1.0 - v for qid, v in success.items()}
    return values


def rank_of_first_relevant(ids: Sequence[str], grades: Mapping[str, int]) -> int | None:
    for rank, doc in enumerate(ids, start=1):
        if grades.get(doc, 0) > 0:
            return rank
    return None


def mean(values: Mapping[str, float]) -> float:
    return float(np.mean(list(values.values()))) if values else math.nan


def bootstrap_ci(values: Mapping[str, float], *, resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean, resampling queries (scipy)."""
    data = np.asarray(list(values.values()), dtype=float)
    if data.size == 0:
        return (math.nan, math.nan)
    if data.size == 1 or np.all(data == data[0]):
        return (float(data[0]), float(data[0]))  # no spread to resample
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bootstrap((data,), np.mean, n_resamples=resamples, confidence_level=CI_LEVEL,
                           method="percentile", rng=np.random.default_rng(seed),
                           vectorized=True)
    low, high = result.confidence_interval
    return (float(low), float(high))


def latency_percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    if not latencies_ms:
        return {"p50": math.nan, "p95": math.nan}
    p50, p95 = np.percentile(np.asarray(latencies_ms, dtype=float), [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined figure (no answered query) is null."""
    return None if value is None or math.isnan(value) else value
