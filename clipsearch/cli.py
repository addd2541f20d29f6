"""The `clipsearch` command line.

Every command prints a one-line `error: ...` and exits non-zero on bad input;
a traceback only appears with --debug, because users should see what to fix,
not where in our code it was noticed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from clipsearch import __version__, config
from clipsearch.errors import ClipsearchError, ConfigurationError, ValidationError

EXIT_USAGE = 2


def _settings_parser() -> argparse.ArgumentParser:
    settings = config.Settings()
    parser = argparse.ArgumentParser(
        prog="clipsearch",
        description="Multimodal product search with CLIP: index a catalog, search it by "
        "text or by photo.",
    )
    parser.add_argument("--version", action="version", version=f"clipsearch {__version__}")
    parser.add_argument("--model", default=settings.model,
                        help="CLIP, SigLIP or SigLIP 2 Hugging Face id or directory, or an "
                        "OpenCLIP hf-hub:ORG/REPO or directory with open_clip_config.json; "
                        "the family is read from the model's config "
                        f"(env CLIPSEARCH_MODEL; default {config.DEFAULT_MODEL})")
    parser.add_argument("--prompt-template", default=settings.prompt_template,
                        help="text-query template with {} for the query (env "
                        "CLIPSEARCH_PROMPT_TEMPLATE; default: the model family's own, "
                        f"{config.DEFAULT_PROMPT_TEMPLATE!r} for CLIP, the bare query "
                        "for SigLIP, SigLIP 2 and OpenCLIP)")
    parser.add_argument("--data-dir", type=Path, default=settings.data_dir,
                        help="where the local index lives (env CLIPSEARCH_DATA_DIR; "
                        f"default {config.DEFAULT_DATA_DIR})")
    parser.add_argument("--ann-threshold", type=int, default=settings.ann_threshold,
                        help="switch LocalIndex from exact search to HNSW at this many "
                        "vectors (env CLIPSEARCH_ANN_THRESHOLD)")
    parser.add_argument("--hnsw-ef-search", type=int, default=settings.hnsw_ef_search,
                        help="HNSW search breadth once the index is past --ann-threshold; "
                        "higher is slower and more exact (env CLIPSEARCH_HNSW_EF_SEARCH)")
    parser.add_argument("--opensearch", metavar="URL", default=settings.opensearch_url,
                        help="use an OpenSearch node or Amazon OpenSearch Service domain "
                        "instead of the local index (env CLIPSEARCH_OPENSEARCH_URL)")
    parser.add_argument("--aws-sigv4", action="store_true",
                        default=os.environ.get("CLIPSEARCH_OPENSEARCH_SIGV4") == "1",
                        help="sign OpenSearch requests with AWS SigV4 (Amazon OpenSearch "
                        "Service; env CLIPSEARCH_OPENSEARCH_SIGV4=1)")
    parser.add_argument("--alias", default=os.environ.get("CLIPSEARCH_OPENSEARCH_ALIAS",
                                                          "products"),
                        help="OpenSearch alias the products live behind (default products)")
    parser.add_argument("--threads", default=settings.threads, metavar="N|auto",
                        help="CPU threads per forward pass; 0 = one per core; auto = 1 for "
                        "torch, one per core for ONNX Runtime, measured best on a busy box "
                        "(env CLIPSEARCH_THREADS; default auto; see docs/benchmarks.md)")
    parser.add_argument("--runtime", choices=config.RUNTIMES, default=settings.runtime,
                        help="runs the model's towers: onnx (ONNX Runtime, faster on a CPU; "
                        "exported once, cached beside the model), torch, or auto = onnx when "
                        "installed and on a CPU (env CLIPSEARCH_RUNTIME; default auto)")
    parser.add_argument("--quantize", choices=config.QUANTIZATIONS, default=settings.quantize,
                        help="int8: dynamic int8 ONNX towers, refused where they stray from "
                        "fp32 (env CLIPSEARCH_QUANTIZE; default none)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = sub.add_parser("ingest", help="index a JSONL catalog or an ABO directory")
    ingest.add_argument("catalog", type=Path)
    ingest.add_argument("--batch-size", type=int, default=settings.batch_size)
    ingest.add_argument("--json", action="store_true", help="print the report as JSON")
    ingest.add_argument("--no-progress", action="store_true")

    search = sub.add_parser("search", help="search by text, image, both, or product id")
    search.add_argument("text", nargs="?", help="free-text query")
    search.add_argument("--image", type=Path, help="query image file")
    search.add_argument("--like", metavar="ID", help="more like this product")
    search.add_argument("--k", type=int, default=10, help="results to return (1-100)")
    search.add_argument("--offset", type=int, default=0)
    search.add_argument("--min-score", type=float)
    search.add_argument("--filter", action="append", default=[], metavar="EXPR",
                        help="key=value, key>=number, key<=number (repeatable)")
    search.add_argument("--text-weight", type=float, default=0.5)
    search.add_argument("--image-weight", type=float, default=0.5)
    search.add_argument("--mode", choices=config.SEARCH_MODES,
                        help="vector, lexical (words, BM25) or hybrid (both, fused); default "
                        "hybrid with text, vector for --image alone and --like")
    search.add_argument("--fusion", choices=config.FUSION_METHODS, default=config.DEFAULT_FUSION,
                        help="how hybrid fuses its signals (default %(default)s)")
    search.add_argument("--lexical-weight", type=float, default=config.DEFAULT_LEXICAL_WEIGHT,
                        help="share of the lexical signal in hybrid (0-1, default %(default)s)")
    search.add_argument("--explain", action="store_true",
                        help="show each signal's rank and score per result")
    search.add_argument("--json", action="store_true", help="print the API response JSON")

    sub.add_parser("info", help="show the index and model configuration")

    delete = sub.add_parser("delete", help="remove products by id")
    delete.add_argument("ids", nargs="+")

    reidx = sub.add_parser("reindex", help="re-embed the local index with another model; "
                           "searches keep being answered until it switches",
                           description="Re-embed every product of the local index with "
                           "--model into a new index version, then switch to it. The old "
                           "version answers searches until the switch and stays on disk. "
                           "An interrupted run resumes where it stopped.")
    reidx.add_argument("--model", dest="reindex_model", metavar="MODEL",
                       help="the new model (default: the global --model)")
    reidx.add_argument("--batch-size", type=int, default=settings.batch_size)
    reidx.add_argument("--drop-failed", action="store_true",
                       help="switch even if some products' images can no longer be read "
                       "(they leave the index)")
    reidx.add_argument("--json", action="store_true", help="print the report as JSON")
    reidx.add_argument("--no-progress", action="store_true")

    serve = sub.add_parser("serve", help="run the local HTTP API and search page")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--query-cache-entries", type=int, default=settings.query_cache_entries,
                       help="query vectors kept in the LRU cache; 0 turns it off "
                       "(env CLIPSEARCH_QUERY_CACHE_ENTRIES; default "
                       f"{config.DEFAULT_QUERY_CACHE_ENTRIES})")
    serve.add_argument("--query-cache-mb", type=float, default=settings.query_cache_mb,
                       help="memory bound of that cache in MiB (env CLIPSEARCH_QUERY_CACHE_MB; "
                       f"default {config.DEFAULT_QUERY_CACHE_MB})")
    serve.add_argument("--no-query-cache", action="store_true",
                       help="encode every query, even a repeated one")
    serve.add_argument("--max-batch", type=int, default=settings.max_batch,
                       help="most queries of one kind encoded in one forward pass "
                       f"(env CLIPSEARCH_MAX_BATCH; default {config.DEFAULT_MAX_BATCH})")
    serve.add_argument("--batch-wait-ms", type=float, default=settings.batch_wait_ms,
                       help="how long a query that finds the model idle waits for others to "
                       "share its forward pass (env CLIPSEARCH_BATCH_WAIT_MS; default "
                       f"{config.DEFAULT_BATCH_WAIT_MS})")
    serve.add_argument("--no-micro-batching", action="store_true",
                       help="one forward pass per query, in arrival order")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="a Host name the server answers besides localhost, 127.0.0.1 "
                       "and ::1 (repeatable; env CLIPSEARCH_ALLOWED_HOSTS; * for any)")

    demo = sub.add_parser("demo", help="build the offline demo catalog, index it, and search")
    demo.add_argument("--no-progress", action="store_true")

    model = sub.add_parser("model", help="model utilities")
    model_sub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    from clipsearch.random_models import PRESETS

    rnd = model_sub.add_parser("random", help="write a random-weight model of any family "
                               "(offline testing and benchmarks)")
    rnd.add_argument("directory", type=Path)
    rnd.add_argument("--family", default="clip", choices=list(PRESETS))
    rnd.add_argument("--preset", default="tiny",
                     help="; ".join(f"{fam}: {', '.join(p)}" for fam, p in PRESETS.items()))
    rnd.add_argument("--seed", type=int, default=0)
    msrv = model_sub.add_parser("serve", help="serve a packaged model.tar.gz as a local "
                                "SageMaker endpoint (container and runtime APIs)")
    msrv.add_argument("artifact", type=Path, help="model.tar.gz from scripts/package_model.py")
    msrv.add_argument("--port", type=int, default=8080)
    msrv.add_argument("--host", default="127.0.0.1")
    msrv.add_argument("--endpoint-name", default="clipsearch-clip",
                      help="name answered on POST /endpoints/NAME/invocations")

    from clipsearch.eval.cli import DESCRIPTION as EVAL_DESCRIPTION
    from clipsearch.eval.cli import add_arguments as add_eval_arguments

    evaluate = sub.add_parser("eval", help="measure search quality on a query set (recall, "
                              "MRR, nDCG, latency), compare configurations, gate regressions",
                              description=EVAL_DESCRIPTION)
    add_eval_arguments(evaluate)

    from clipsearch.bootstrap.cli import DESCRIPTION as BOOTSTRAP_DESCRIPTION
    from clipsearch.bootstrap.cli import add_arguments as add_bootstrap_arguments

    boot = sub.add_parser("bootstrap", help="load a catalog on AWS: S3 upload, SageMaker "
                          "batch transform, bulk index, alias swap",
                          description=BOOTSTRAP_DESCRIPTION)
    add_bootstrap_arguments(boot)
    return parser


# --------------------------------------------------------------------------- wiring


def _open_index(args: argparse.Namespace):
    if args.opensearch:
        from clipsearch.index.opensearch import OpenSearchIndex

        return OpenSearchIndex.from_url(args.opensearch, aws_sigv4=args.aws_sigv4,
                                        alias=args.alias)
    from clipsearch.index.versions import current_index_dir

    return _local_index(args, current_index_dir(args.data_dir))


def _local_index(args: argparse.Namespace, directory: Path):
    from clipsearch.index.local import LocalIndex

    return LocalIndex(directory, ann_threshold=args.ann_threshold,
                      ef_search=args.hnsw_ef_search)


def _index_location(args: argparse.Namespace) -> str:
    if args.opensearch:
        return f"alias {args.alias} at {args.opensearch}"
    from clipsearch.index.versions import current_index_dir

    return str(current_index_dir(args.data_dir))


def _open_encoder(args: argparse.Namespace, model: str):
    from clipsearch.encoders import load_encoder
    from clipsearch.encoders.onnx import with_runtime
    from clipsearch.encoders.threads import apply_torch_threads
    from clipsearch.models import model_availability

    problem = model_availability(model)
    if problem:
        raise ConfigurationError(f"cannot load model: {problem}. Pass --model with a local "
                                 "directory, or run `clipsearch model random DIR` for an "
                                 "offline stand-in")
    apply_torch_threads(args.threads)
    return with_runtime(load_encoder(model, prompt_template=args.prompt_template), args.runtime,
                        quantize=args.quantize, threads=args.threads)


def _service(args: argparse.Namespace, model: str | None = None, *, query_cache=None,
             wrap_encoder=None):
    from clipsearch.service import SearchService

    index = _open_index(args)
    encoder = _open_encoder(args, model or args.model)
    if wrap_encoder is not None:
        encoder = wrap_encoder(encoder)
    return SearchService(encoder, index, query_cache=query_cache)


def _progress(total: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="product", disable=disable, file=sys.stderr)


# --------------------------------------------------------------------------- commands


def cmd_ingest(args: argparse.Namespace) -> int:
    from clipsearch.catalog import read_catalog

    catalog = read_catalog(args.catalog)
    service = _service(args)
    with _progress(len(catalog.products), "indexing", args.no_progress) as bar:
        report = service.ingest(catalog.products, batch_size=args.batch_size,
                                progress=bar.update)
    failed = [(err.product_id or f"line {err.line}", str(err)) for err in catalog.errors]
    failed += report.failed
    # Every product of the catalog (its unreadable lines included) ends in exactly one of
    # indexed, skipped, failed: the three add up to `products`.
    total = len(catalog.products) + len(catalog.errors)
    if args.json:
        body = {"products": total, **report.to_dict()}
        body["failed"] = len(failed)
        body["failed_items"] = [{"id": i, "reason": r} for i, r in failed]
        print(json.dumps(body, indent=2))
    else:
        print(f"{total} products: indexed {report.indexed}, skipped {len(report.skipped)}, "
              f"failed {len(failed)} ({service.index.count()} products in "
              f"{_index_location(args)})")
        for pid, reason in report.skipped[:20]:
            print(f"  skipped {pid}: {reason}")
        for pid, reason in report.left_out[:20]:
            print(f"  indexed {pid} without one image: {reason}")
        for _, reason in failed[:50]:
            print(f"  failed  {reason}")
        if len(failed) > 50:
            print(f"  ... and {len(failed) - 50} more (use --json for all)")
    return 0 if report.indexed or not failed else 1


def cmd_search(args: argparse.Namespace) -> int:
    from clipsearch.catalog import validate_product_id
    from clipsearch.contract import (
        SearchRequest,
        parse_k,
        parse_lexical_weight,
        parse_min_score,
        parse_mode,
        parse_offset,
        parse_text,
        parse_weights,
    )
    from clipsearch.filters import parse_cli_filters, parse_filters

    queries = [q for q in (args.text, args.image, args.like) if q is not None]
    if not queries:
        raise ValidationError("give a TEXT query, --image PATH, or --like ID", field="query")
    if args.like and (args.text or args.image):
        raise ValidationError("--like cannot be combined with text or --image", field="like")
    image = None
    if args.image is not None:
        from clipsearch.service import read_local_image

        image = read_local_image(str(args.image))
    # The same checks as the API's, so the CLI accepts exactly what the API does.
    text = parse_text(args.text, field="text")
    like = validate_product_id(args.like, "like") if args.like is not None else None
    text_weight, image_weight = parse_weights({"text": args.text_weight,
                                               "image": args.image_weight})
    request = SearchRequest(
        text=text, image=image, product_id=like,
        k=parse_k(args.k), offset=parse_offset(args.offset),
        min_score=parse_min_score(args.min_score),
        filters=parse_filters(parse_cli_filters(args.filter)),
        text_weight=text_weight, image_weight=image_weight,
        mode=parse_mode(args.mode, has_text=text is not None, is_similar=args.like is not None),
        explain=args.explain, fusion=args.fusion,
        lexical_weight=parse_lexical_weight(args.lexical_weight),
    )
    service = _service(args)
    response = service.search(request)
    if args.json:
        print(json.dumps(response, indent=2))
    else:
        _print_results(response)
    return 0


def _print_results(response: dict[str, Any]) -> None:
    results = response["results"]
    if not results:
        print("no results")
        return
    width = max(len(r["id"]) for r in results)
    print(f"{'rank':>4}  {'score':>6}  {'id':<{width}}  title")
    for r in results:
        print(f"{r['rank']:>4}  {r['score']:>6.3f}  {r['id']:<{width}}  {r['title']}")
        if "explain" in r:
            print(f"{'':>14}{_explain_line(r['explain'])}")
    print(f"({len(results)} results in {response['took_ms']:.1f} ms, {response['mode']} mode, "
          f"model {response['model']})")


def _explain_line(explain: dict[str, Any]) -> str:
    """One line per result: `vector #3 0.412 (image 2)  lexical #1 7.10  title 0.38`."""
    parts = ["exact id match"] if explain["exact_id"] else []
    for name, signal in explain["signals"].items():
        if name == "exact_id":
            continue
        if signal.get("rank") is None and "rank" in signal:
            parts.append(f"{name} -")
            continue
        rank = f" #{signal['rank']}" if signal.get("rank") is not None else ""
        score = "-" if signal.get("score") is None else f"{signal['score']:.3f}"
        where = ""
        if signal.get("matched") == "image":
            where = f" (image {signal.get('image_index', 0) + 1})"
        elif signal.get("matched") == "title":
            where = " (title)"
        parts.append(f"{name}{rank} {score}{where}")
    fusion = f", {explain['fusion']}" if explain.get("fusion") else ""
    return "  ".join(parts) + f"  => {explain['score']:.4f}{fusion}"


def cmd_info(args: argparse.Namespace) -> int:
    index = _open_index(args)
    info = {"version": __version__, "model": args.model, "index": index.describe()}
    print(json.dumps(info, indent=2))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from clipsearch.catalog import validate_product_id

    ids = [validate_product_id(pid, "ids") for pid in args.ids]
    removed = _open_index(args).delete(ids)
    print(f"deleted {removed} of {len(args.ids)}")
    return 0 if removed == len(args.ids) else 1


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from clipsearch.server import serve
    except ImportError as exc:
        raise ConfigurationError(f"the server needs the `server` extra ({exc.name} is "
                                 "missing): pip install 'clipsearch[server]'") from None
    if not 0 <= args.port <= 65535:
        raise ValidationError(f"--port must be 0-65535, got {args.port}", field="port")
    from clipsearch.encoders.batching import MicroBatchingEncoder
    from clipsearch.query_cache import QueryCache

    if args.max_batch < 1 or args.batch_wait_ms < 0:
        raise ValidationError("--max-batch must be >= 1 and --batch-wait-ms >= 0",
                              field="max_batch")
    cache = None if args.no_query_cache else QueryCache.from_settings(
        args.query_cache_entries, args.query_cache_mb)
    wrap = encode_threads = None
    if not args.no_micro_batching:
        def wrap(encoder):
            return MicroBatchingEncoder(encoder, max_batch=args.max_batch,
                                        max_wait_ms=args.batch_wait_ms)

        # Request threads only wait on the batcher's queue (FIFO, so fair):
        # enough of them to fill a text batch and an image batch at once,
        # unless CLIPSEARCH_ENCODE_THREADS says otherwise.
        if not os.environ.get("CLIPSEARCH_ENCODE_THREADS"):
            encode_threads = 2 * args.max_batch
    # The index comes from _open_index, so another backend plugs in there.
    from clipsearch.server import allowed_hosts_from_env

    allowed = (*allowed_hosts_from_env(), *args.allowed_host)
    serve(_service(args, query_cache=cache, wrap_encoder=wrap), host=args.host, port=args.port,
          encode_threads=encode_threads, allowed_hosts=allowed)
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    if args.model_command == "serve":
        from clipsearch.sagemaker.emulator import serve

        serve(args.artifact, port=args.port, endpoint_name=args.endpoint_name, host=args.host)
        return 0
    from clipsearch.random_models import build_random_model

    try:
        path = build_random_model(args.directory, family=args.family, preset=args.preset,
                                  seed=args.seed)
    except ValueError as exc:
        raise ValidationError(str(exc), field="preset") from None
    print(f"wrote random-weight {args.family} ({args.preset}) to {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from clipsearch.eval.cli import run_from_args

    return run_from_args(args, lambda config: _eval_target(args, config))


def _eval_target(args: argparse.Namespace, config):
    """The target one eval configuration names; its keys override the global options."""
    from clipsearch.eval.targets import ApiTarget, ServiceTarget

    overrides = dict(config.target)
    picks_index = "opensearch" in overrides or "data_dir" in overrides
    api = overrides.get("api", None if picks_index else args.api)
    if api:
        key = args.api_key
        if "api_key_env" in overrides:
            key = os.environ.get(str(overrides["api_key_env"]))
            if not key:
                raise ConfigurationError(f"configuration {config.name!r}: environment variable "
                                         f"{overrides['api_key_env']} is not set")
        return ApiTarget(str(api), key, name=config.name)
    ns = argparse.Namespace(**vars(args))
    if "data_dir" in overrides and "opensearch" not in overrides:
        ns.opensearch = None
    for key in ("model", "opensearch", "alias", "ann_threshold", "hnsw_ef_search"):
        if key in overrides:
            setattr(ns, key, overrides[key])
    if "data_dir" in overrides:
        ns.data_dir = Path(str(overrides["data_dir"]))
    return ServiceTarget(_service(ns), name=config.name)


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from clipsearch.bootstrap.cli import run_from_args

    return run_from_args(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from clipsearch.catalog import read_catalog
    from clipsearch.demo import COLORS, write_demo_catalog
    from clipsearch.models import model_availability

    demo_dir = args.data_dir / "demo"
    catalog_path = write_demo_catalog(demo_dir)
    print(f"demo catalog: {catalog_path}")
    model = args.model
    problem = model_availability(model)
    if problem:
        from clipsearch.random_clip import build_random_clip

        stand_in = args.data_dir / "models" / "random-tiny"
        if not (stand_in / "config.json").exists():
            build_random_clip(stand_in)
        print(f"NOTE: {problem}.\n      Using a RANDOM-WEIGHT stand-in CLIP ({stand_in}): the "
              "pipeline is real, but text rankings are meaningless.\n      Re-run with network "
              "access (or --model DIR) for real CLIP results.")
        model = str(stand_in)
    args.data_dir = args.data_dir / "demo"  # the demo keeps its own index
    catalog = read_catalog(catalog_path)
    service = _service(args, model)
    with _progress(len(catalog.products), "indexing", args.no_progress) as bar:
        report = service.ingest(catalog.products, progress=bar.update)
    print(f"indexed {report.indexed} products, failed {len(report.failed)}")
    from clipsearch.contract import SearchRequest
    from clipsearch.service import read_local_image

    print('\n$ clipsearch search "red circle" --k 5')
    _print_results(service.search(SearchRequest(text="red circle", k=5)))
    query_image = catalog.products[len(COLORS)].image or ""
    print(f"\n$ clipsearch search --image {query_image} --k 5")
    _print_results(service.search(SearchRequest(image=read_local_image(query_image), k=5)))
    print(f"\nTry it yourself:  .venv/bin/clipsearch --data-dir {args.data_dir} --model {model} "
          'search "blue striped rug"')
    print(f"Search page:      .venv/bin/clipsearch --data-dir {args.data_dir} --model {model} "
          "serve   (then open http://127.0.0.1:8000)")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from clipsearch.index.versions import reindex

    if args.opensearch:
        raise ValidationError("reindex switches the local index; for OpenSearch deploy the new "
                              "model's endpoint and run `clipsearch bootstrap --new-index`",
                              field="opensearch")
    model = args.reindex_model or args.model
    encoder = _open_encoder(args, model)
    with _progress(0, f"re-embedding with {model}", args.no_progress) as bar:
        def set_total(total: int) -> None:
            bar.total = total
            bar.refresh()

        report = reindex(args.data_dir, encoder, batch_size=args.batch_size,
                         drop_failed=args.drop_failed, progress=bar.update, on_total=set_total,
                         open_index=lambda d: _local_index(args, d))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{report.total} products: {report.embedded} embedded, {report.resumed} already "
              f"done by an interrupted run, {len(report.failed)} failed")
        for pid, reason in report.failed[:50]:
            print(f"  failed  {pid}: {reason}")
    if not report.switched:
        print(f"NOT switched: {len(report.failed)} products could not be re-embedded; fix them "
              "and re-run (only they are retried), or re-run with --drop-failed. Searches still "
              f"use {report.source}.", file=sys.stderr)
        return 1
    print(f"switched the live index to {report.target} ({model}); the previous version stays "
          f"at {report.source} until you delete it. Restart `clipsearch serve` with --model "
          f"{model}.")
    return 0


COMMANDS = {
    "reindex": cmd_reindex,
    "ingest": cmd_ingest, "search": cmd_search, "info": cmd_info, "delete": cmd_delete,
    "serve": cmd_serve, "model": cmd_model, "demo": cmd_demo, "bootstrap": cmd_bootstrap,
    "eval": cmd_eval,
}


def main(argv: list[str] | None = None) -> int:
    parser = _settings_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return COMMANDS[args.command](args)
    except ClipsearchError as exc:
        if args.debug:
            raise
        where = f" [{exc.field}]" if exc.field else ""
        print(f"error: {exc.message}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (re-run with --debug for "
              "details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
