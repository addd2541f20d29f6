"""Several configurations side by side, per-query wins and losses, and the regression gate.

A configuration file (`--compare CONFIGS.json`) is a JSON list of objects:

    [{"name": "exact"},
     {"name": "ef64", "hnsw_ef_search": 64},
     {"name": "text-heavy", "request": {"weights": {"text": 0.8, "image": 0.2}}},
     {"name": "big-model", "model": "models/clip-l", "data_dir": ".clipsearch-l"},
     {"name": "prod", "api": "https://.../prod", "api_key_env": "PROD_KEY"}]

Target settings (model, data_dir, opensearch, alias, api, ...) override the
command line's for that configuration; `request` is passed through into every
POST /search body untouched, so new search options (a `mode`, fusion weights)
work here as soon as the API accepts them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.errors import ValidationError
from clipsearch.eval import metrics
from clipsearch.eval.runner import EvalResult

# Keys that choose the target, each overriding the global option of the same name.
TARGET_KEYS = frozenset({"model", "data_dir", "opensearch", "alias", "api", "api_key_env",
                         "ann_threshold", "hnsw_ef_search"})
CONFIG_KEYS = TARGET_KEYS | {"name", "request"}
WIN_METRIC = "ndcg"  # per-query wins and losses compare nDCG@k (graded, rank-aware)


@dataclass(frozen=True)
class Config:
    name: str
    target: Mapping[str, Any] = field(default_factory=dict)
    request: Mapping[str, Any] = field(default_factory=dict)


def read_configs(path: Path) -> list[Config]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError(f"{path} does not exist", field="compare") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path} is not valid JSON: {exc}", field="compare") from None
    if not isinstance(raw, list) or not raw:
        raise ValidationError(f"{path} must hold a non-empty JSON list of configurations",
                              field="compare")
    configs: list[Config] = []
    for number, entry in enumerate(raw, start=1):
        where = f"{path}: configuration {number}"
        if not isinstance(entry, Mapping):
            raise ValidationError(f"{where} is not an object", field="compare")
        unknown = set(entry) - CONFIG_KEYS
        if unknown:
            raise ValidationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                                  f"allowed: {', '.join(sorted(CONFIG_KEYS))}", field="compare")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(f"{where}: name must be a non-empty string", field="compare")
        if name in {c.name for c in configs}:
            raise ValidationError(f"{where}: name {name!r} is used twice", field="compare")
        request = entry.get("request") or {}
        if not isinstance(request, Mapping):
            raise ValidationError(f"{where}: request must be an object of POST /search "
                                  "fields", field="compare")
        configs.append(Config(name.strip(), {k: v for k, v in entry.items() if k in TARGET_KEYS},
                              dict(request)))
    return configs


@dataclass(frozen=True)
class PairComparison:
    a: str
    b: str
    wins: int  # queries where a scores higher than b
    losses: int
    ties: int
    metric: str


def pairwise(results: Sequence[EvalResult]) -> list[PairComparison]:
    """For each pair, on the queries both answered: where the first did better, worse, same."""
    pairs = []
    for i, first in enumerate(results):
        for second in results[i + 1:]:
            name = f"{WIN_METRIC}@{first.k}"
            a, b = first.per_query.get(name, {}), second.per_query.get(name, {})
            common = [q for q in a if q in b]
            wins = sum(a[q] > b[q] + 1e-12 for q in common)
            losses = sum(b[q] > a[q] + 1e-12 for q in common)
            pairs.append(PairComparison(first.name, second.name, wins, losses,
                                        len(common) - wins - losses, name))
    return pairs


def regressions(current: Mapping[str, Any], baseline: Mapping[str, Any],
                max_drop: float) -> list[str]:
    """Each metric that fell by more than `max_drop` against `baseline`, in words.

    Both are `--json` documents. A metric where lower is better (the share of
    queries with no relevant result) fails when it *rises* by more than that.
    """
    if max_drop < 0 or math.isnan(max_drop):
        raise ValidationError("--max-drop must be >= 0", field="max_drop")
    base_metrics = baseline.get("metrics")
    if not isinstance(base_metrics, Mapping):
        raise ValidationError("the baseline has no \"metrics\" object: is it a "
                              "`clipsearch eval --json` output?", field="baseline")
    if baseline.get("k") != current.get("k"):
        raise ValidationError(f"the baseline was run with k={baseline.get('k')}, this run with "
                              f"k={current.get('k')}; their metrics do not compare",
                              field="baseline")
    problems = []
    for name, now in current["metrics"].items():
        before = base_metrics.get(name)
        if not isinstance(before, int | float) or now is None:
            continue
        lower_is_better = name.startswith("no_relevant@")
        change = (now - before) if lower_is_better else (before - now)
        if change > max_drop + 1e-12:
            direction = "rose" if lower_is_better else "fell"
            problems.append(f"{name} {direction} from {before:.4f} to {now:.4f} "
                            f"({change:+.4f} worse, allowed {max_drop:.4f})")
    if baseline.get("queries") != current.get("queries"):
        problems.append(f"the baseline answered {baseline.get('queries')} queries, this run "
                        f"{current.get('queries')}: the query sets differ")
    return problems


def metric_table(results: Sequence[EvalResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one column per configuration, value with its 95% CI."""
    names = [*metrics.metric_names(results[0].k), metrics.no_relevant_name(results[0].k)]
    header = ["metric", *(r.name for r in results)]
    rows = []
    for name in names:
        row = [name]
        for result in results:
            value = result.metrics.get(name, math.nan)
            low, high = result.ci95.get(name, (math.nan, math.nan))
            row.append(f"{value:.3f} [{low:.3f}, {high:.3f}]")
        rows.append(row)
    for pct in ("p50", "p95"):
        rows.append([f"latency {pct} ms", *(f"{r.latency_ms[pct]:.1f}" for r in results)])
    rows.append(["queries answered", *(f"{len(r.answered)}/{len(r.outcomes)}" for r in results)])
    return header, rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
              for row in rows]
    return "\n".join(lines)
