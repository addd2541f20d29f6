"""`clipsearch eval`: arguments and the run, wired into clipsearch.cli.

clipsearch.cli owns how a target is opened (it already knows the global
options: --model, --data-dir, --opensearch ...), and hands a factory in, so
eval opens the local index or an OpenSearch node exactly as `search` does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipsearch.errors import ConfigurationError, ValidationError
from clipsearch.eval.compare import Config, pairwise, read_configs, regressions
from clipsearch.eval.queries import TASKS, EvalQuery, generate, read_queries, write_queries
from clipsearch.eval.runner import EvalResult, evaluate
from clipsearch.eval.targets import Target

EXIT_FAILED = 1
TargetFactory = Callable[[Config], Target]

DESCRIPTION = """Measure search quality on a query set: recall@1/5/10, MRR@10, nDCG@10,
the share of queries with no relevant result, latency, with 95% bootstrap intervals.
Query sets are JSON Lines files, or generated from a catalog without labels
(--generate title2product|image2product --from-catalog CATALOG)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queries", nargs="?", type=Path,
                        help="query set (JSON Lines: id, text and/or image, relevant)")
    gen = parser.add_argument_group("generating a query set from a catalog")
    gen.add_argument("--generate", choices=TASKS, metavar="TASK",
                     help=f"known-item queries from a catalog: {', '.join(TASKS)}")
    gen.add_argument("--from-catalog", type=Path, metavar="CATALOG",
                     help="JSONL catalog or ABO directory to generate from")
    gen.add_argument("--sample", type=int, help="draw this many products (default: all)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    gen.add_argument("--field", default="title",
                     help="title2product: the product field used as query text (title, "
                     "description or an attribute; default title)")
    gen.add_argument("--write", type=Path, metavar="QUERIES.jsonl",
                     help="save the generated set here and stop (run it with `eval FILE`)")
    run = parser.add_argument_group("running")
    run.add_argument("--k", type=int, default=10, help="results per query (1-100, default 10)")
    run.add_argument("--api", metavar="URL",
                     help="evaluate an HTTP API (clipsearch serve, or the deployed API) "
                     "instead of the local index / --opensearch")
    run.add_argument("--api-key", default=os.environ.get("CLIPSEARCH_API_KEY"),
                     help="x-api-key for --api (env CLIPSEARCH_API_KEY)")
    run.add_argument("--request", metavar="JSON", type=_json_object,
                     help='extra POST /search fields for every query, e.g. \'{"weights": '
                     '{"text": 0.7, "image": 0.3}}\'')
    run.add_argument("--compare", type=Path, metavar="CONFIGS.json",
                     help="run several configurations and compare them (see "
                     "docs/evaluation.md)")
    run.add_argument("--json", action="store_true", help="print the result as one JSON object")
    run.add_argument("--report", type=Path, metavar="DIR",
                     help="write report.md, results.json and PNG charts into DIR")
    run.add_argument("--worst", type=int, default=10,
                     help="how many worst queries the report shows (default 10)")
    run.add_argument("--bootstrap", type=int, default=1000,
                     help="bootstrap resamples for the 95%% intervals (default 1000)")
    run.add_argument("--no-progress", action="store_true")
    gate = parser.add_argument_group("regression gate")
    gate.add_argument("--baseline", type=Path, metavar="OLD.json",
                      help="a previous `eval --json` output to compare against")
    gate.add_argument("--max-drop", type=float, default=0.01,
                      help="largest allowed fall of any metric vs --baseline (default 0.01)")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _queries(args: argparse.Namespace) -> list[EvalQuery] | None:
    """The query set to run, or None when the command only wrote a generated set."""
    if args.generate:
        if args.queries is not None:
            raise ValidationError("give a QUERIES file or --generate, not both",
                                  field="generate")
        if args.from_catalog is None:
            raise ValidationError("--generate needs --from-catalog CATALOG",
                                  field="from_catalog")
        from clipsearch.catalog import read_catalog

        catalog = read_catalog(args.from_catalog)
        if catalog.errors:
            print(f"note: {len(catalog.errors)} catalog record(s) could not be read and are "
                  f"left out (first: {catalog.errors[0]})", file=sys.stderr)
        queries = generate(args.generate, catalog.products, sample=args.sample,
                           seed=args.seed, text_field=args.field)
        if args.write is not None:
            count = write_queries(queries, args.write)
            print(f"wrote {count} {args.generate} queries to {args.write}")
            return None
        return queries
    if args.write is not None or args.from_catalog is not None:
        raise ValidationError("--write and --from-catalog go with --generate", field="generate")
    if args.queries is None:
        raise ValidationError("give a QUERIES.jsonl file, or --generate TASK --from-catalog "
                              "CATALOG", field="queries")
    return read_queries(args.queries)


def _configs(args: argparse.Namespace) -> list[Config]:
    base = dict(args.request or {})
    if args.compare is None:
        return [Config("default", {}, base)]
    return [Config(c.name, c.target, {**base, **c.request}) for c in read_configs(args.compare)]


def _require_eval_extra() -> None:
    import importlib.util

    missing = [m for m in ("ir_measures", "scipy", "matplotlib")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigurationError(f"clipsearch eval needs the `eval` extra ({', '.join(missing)} "
                                 "missing): pip install 'clipsearch[eval]'")


def run_from_args(args: argparse.Namespace, make_target: TargetFactory) -> int:
    from clipsearch.contract import parse_k

    _require_eval_extra()
    k = parse_k(args.k)
    if args.baseline is not None and args.compare is not None:
        raise ValidationError("--baseline gates a single configuration; drop --compare",
                              field="baseline")
    if args.max_drop < 0 or math.isnan(args.max_drop):
        raise ValidationError("--max-drop must be >= 0", field="max_drop")
    if args.bootstrap < 100:
        raise ValidationError("--bootstrap needs at least 100 resamples", field="bootstrap")
    baseline = _read_baseline(args.baseline) if args.baseline is not None else None
    queries = _queries(args)
    if queries is None:
        return 0
    configs = _configs(args)
    results = [_run_one(config, queries, k, make_target, args) for config in configs]
    pairs = pairwise(results) if len(results) > 1 else []
    if len(results) == 1:
        document = results[0].to_json()
    else:
        document = {
            "queries": len(queries), "k": k,
            "configs": [r.to_json() for r in results],
            "pairs": [{"a": p.a, "b": p.b, "metric": p.metric, "a_better": p.wins,
                       "b_better": p.losses, "same": p.ties} for p in pairs],
        }
    problems = regressions(document, baseline, args.max_drop) if baseline is not None else []
    if problems:
        document["regressions"] = problems
    if args.report is not None:
        from clipsearch.eval.report import write_report

        write_report(args.report, results, document, pairs, worst=args.worst)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        from clipsearch.eval.report import print_summary

        print(print_summary(results, pairs))
        if args.report is not None:
            print(f"\nreport: {args.report / 'report.md'}")
    failed = [(r.name, o) for r in results for o in r.failed]
    for name, outcome in failed[:20]:
        print(f"failed query {outcome.query.id} ({name}): {outcome.error}", file=sys.stderr)
    if len(failed) > 20:
        print(f"... and {len(failed) - 20} more failed queries", file=sys.stderr)
    for problem in problems:
        print(f"regression: {problem}", file=sys.stderr)
    return EXIT_FAILED if problems or failed else 0


def _read_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError(f"baseline {path} does not exist", field="baseline") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"baseline {path} is not valid JSON: {exc}",
                              field="baseline") from None
    if not isinstance(data, dict):
        raise ValidationError(f"baseline {path} is not a JSON object", field="baseline")
    return data


def _run_one(config: Config, queries: list[EvalQuery], k: int, make_target: TargetFactory,
             args: argparse.Namespace) -> EvalResult:
    from tqdm import tqdm

    target = make_target(config)
    try:
        with tqdm(total=len(queries), desc=f"eval {config.name}", unit="query",
                  disable=args.no_progress, file=sys.stderr) as bar:
            return evaluate(queries, target, k, name=config.name, options=config.request,
                            progress=bar.update, resamples=args.bootstrap)
    finally:
        target.close()
