"""Run a query set against one target and turn the answers into an `EvalResult`.

Queries go one at a time, as a user's would, so the latency is per query and
comparable across targets. A query that fails (a 4xx, a backend that stays
down after retries) is recorded with its reason and left out of the metrics;
the CLI exits non-zero when any failed, so a partial run is never mistaken for
a full one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clipsearch.eval import metrics
from clipsearch.eval.queries import EvalQuery
from clipsearch.eval.targets import QueryFailed, Target, request_body

Progress = Callable[[int], Any]


@dataclass
class QueryOutcome:
    query: EvalQuery
    retrieved: list[str] = field(default_factory=list)
    images: list[str | None] = field(default_factory=list)  # result image refs, for reports
    latency_ms: float | None = None
    error: str | None = None

    @property
    def rank_of_first_relevant(self) -> int | None:
        return metrics.rank_of_first_relevant(self.retrieved, self.query.relevant)


@dataclass
class EvalResult:
    """Everything one configuration's run produced; `to_json` is the --json document."""

    name: str
    k: int
    options: dict[str, Any]
    outcomes: list[QueryOutcome]
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    latency_ms: dict[str, float]
    per_query: dict[str, dict[str, float]]  # metric -> query id -> value (answered only)
    recall_curve: list[float]  # recall@1..k
    target: Target | None = None

    @property
    def answered(self) -> list[QueryOutcome]:
        return [o for o in self.outcomes if o.error is None]

    @property
    def failed(self) -> list[QueryOutcome]:
        return [o for o in self.outcomes if o.error is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queries": len(self.answered),
            "k": self.k,
            "options": self.options,
            "metrics": {n: _round(v) for n, v in self.metrics.items()},
            "ci95": {n: [_round(lo), _round(hi)] for n, (lo, hi) in self.ci95.items()},
            "latency_ms": {n: _round(v) for n, v in self.latency_ms.items()},
            "failed": [{"id": o.query.id, "error": o.error} for o in self.failed],
            "per_query": [
                {"id": o.query.id, "rank_of_first_relevant": o.rank_of_first_relevant,
                 "retrieved": o.retrieved, "latency_ms": o.latency_ms}
                for o in self.answered
            ],
        }


def run_queries(queries: Sequence[EvalQuery], target: Target, k: int,
                options: Mapping[str, Any] | None = None,
                progress: Progress | None = None) -> list[QueryOutcome]:
    outcomes = []
    for query in queries:
        outcome = QueryOutcome(query)
        try:
            body = request_body(query, k, options)
            started = time.perf_counter()
            response = target.search(body)
            outcome.latency_ms = round((time.perf_counter() - started) * 1000, 3)
            results = response.get("results") or []
            outcome.retrieved = [str(r.get("id")) for r in results]
            outcome.images = [r.get("image") for r in results]
        except QueryFailed as exc:
            outcome.error = str(exc)
        outcomes.append(outcome)
        if progress is not None:
            progress(1)
    return outcomes


def score(outcomes: list[QueryOutcome], k: int, *, name: str = "default",
          options: Mapping[str, Any] | None = None, resamples: int | None = None,
          seed: int = 0, target: Target | None = None) -> EvalResult:
    """Metrics, bootstrap CIs and latency percentiles over the answered queries."""
    answered = [o for o in outcomes if o.error is None]
    qrels = {o.query.id: dict(o.query.relevant) for o in answered}
    retrieved = {o.query.id: o.retrieved for o in answered}
    values = metrics.per_query_metrics(qrels, retrieved, k, curve=True)
    names = [*metrics.metric_names(k), metrics.no_relevant_name(k)]
    per_query = {n: values[n] for n in names}
    resamples = resamples or metrics.DEFAULT_BOOTSTRAP_RESAMPLES
    return EvalResult(
        name=name, k=k, options=dict(options or {}), outcomes=outcomes,
        metrics={n: metrics.mean(per_query[n]) for n in names},
        ci95={n: metrics.bootstrap_ci(per_query[n], resamples=resamples, seed=seed)
              for n in names},
        latency_ms=metrics.latency_percentiles(
            [o.latency_ms for o in answered if o.latency_ms is not None]),
        per_query=per_query,
        recall_curve=[metrics.mean(values[f"recall@{c}"]) for c in range(1, k + 1)],
        target=target,
    )


def evaluate(queries: Sequence[EvalQuery], target: Target, k: int = 10, *,
             name: str = "default", options: Mapping[str, Any] | None = None,
             progress: Progress | None = None, resamples: int | None = None,
             seed: int = 0) -> EvalResult:
    outcomes = run_queries(queries, target, k, options, progress)
    return score(outcomes, k, name=name, options=options, resamples=resamples, seed=seed,
                 target=target)


def _round(value: float) -> float | None:
    value = metrics.finite_or_none(value)
    return None if value is None else round(value, 6)
