"""Arguments of `clipsearch bootstrap` and `scripts/bootstrap.py` (one definition for both).

Imports only the standard library at module level: `clipsearch --help`
builds every subparser, and must not pay for boto3 or torch to do it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from clipsearch.bootstrap.options import (
    CONTENT_TYPES,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_MAX_PAYLOAD_MB,
    DEFAULT_RECORDS_PER_FILE,
    DEFAULT_STACK,
    BootstrapOptions,
)

DESCRIPTION = """\
Load a catalog into a deployed clipsearch: upload images and catalog to S3,
embed the images with a SageMaker batch transform (or --local-transform),
bulk-load a new index version and swap the alias to it. Re-running skips
finished steps; with nothing changed it changes nothing."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bootstrap's options to `parser` (dests never clash with `clipsearch`'s)."""
    parser.add_argument("catalog", type=Path,
                        help="catalog.jsonl (images relative to it) or an ABO directory")
    where = parser.add_argument_group("deployment (stack outputs, or explicit names)")
    where.add_argument("--stack-name", help=f"CloudFormation stack to read outputs from "
                       f"(default {DEFAULT_STACK} unless --bucket, --opensearch-url and "
                       "--model-name are all given)")
    where.add_argument("--region", help="AWS region (default: the AWS CLI/boto3 default)")
    where.add_argument("--bucket", help="catalog bucket (output BucketName)")
    where.add_argument("--model-name", help="SageMaker model for the transform (output ModelName)")
    where.add_argument("--opensearch-url", help="OpenSearch URL (output OpenSearchUrl)")
    where.add_argument("--index-alias", help="index alias (output IndexAlias; default products)")
    where.add_argument("--index-replicas", type=int,
                       help="replicas of the new index version (output IndexReplicas; "
                       "default 0: one per shard is right for a multi-node domain)")
    where.add_argument("--sigv4", choices=["auto", "on", "off"], default="auto",
                       help="sign OpenSearch requests with SigV4 (auto: on for *.amazonaws.com)")
    job = parser.add_argument_group("batch transform")
    job.add_argument("--content-type", choices=CONTENT_TYPES, default="jsonlines",
                     help="jsonlines: MultiRecord base64 JSON Lines (fast, one bad image fails "
                     "alone); x-image: SingleRecord, one request per image")
    job.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE,
                     help=f"transform instance type (default {DEFAULT_INSTANCE_TYPE})")
    job.add_argument("--instance-count", type=int, default=1)
    job.add_argument("--max-payload-mb", type=int, default=DEFAULT_MAX_PAYLOAD_MB,
                     help="MaxPayloadInMB of one request (1-100, default 6)")
    job.add_argument("--max-concurrent-transforms", type=int,
                     help="parallel requests per instance (default: SageMaker's choice)")
    job.add_argument("--records-per-file", type=int, default=DEFAULT_RECORDS_PER_FILE,
                     help="products per transform input file (jsonlines)")
    job.add_argument("--local-transform", action="store_true",
                     help="run the packaged model on this machine instead of SageMaker, "
                     "reading and writing S3 exactly as the job would")
    job.add_argument("--model-artifact", type=Path,
                     help="with --local-transform: a local model.tar.gz instead of the "
                     "SageMaker model's artifact")
    job.add_argument("--poll-seconds", type=float, default=30.0,
                     help="how often to check the job (default 30)")
    job.add_argument("--transform-timeout", type=float, default=48 * 3600.0,
                     help="stop waiting after this many seconds (the job keeps running)")
    run = parser.add_argument_group("run")
    run.add_argument("--dry-run", action="store_true", help="show what would happen; write nothing")
    run.add_argument("--force", action="store_true",
                     help="ignore the state file (everything is re-checked against S3, "
                     "SageMaker and OpenSearch; unchanged work is still skipped)")
    run.add_argument("--new-index", action="store_true",
                     help="build and publish a new index version even if the live one matches")
    run.add_argument("--keep-old-index", action="store_true",
                     help="keep the previous version after the alias swap (for rollback)")
    run.add_argument("--max-failed-fraction", type=float, default=0.1,
                     help="refuse to publish when more products than this fail (default 0.1)")
    run.add_argument("--upload-workers", type=int, default=16)
    run.add_argument("--state-file", type=Path,
                     help="state file (default DATA_DIR/bootstrap/<stack>/state.json)")
    run.add_argument("--report", type=Path, dest="report_file",
                     help="JSON report (default next to the state file)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")


def options_from_args(args: argparse.Namespace) -> BootstrapOptions:
    """The parsed arguments as options; `clipsearch`'s global flags are fallbacks."""
    data_dir = Path(getattr(args, "data_dir", None) or ".clipsearch")
    sigv4 = {"on": True, "off": False}.get(args.sigv4)
    if sigv4 is None and getattr(args, "aws_sigv4", False):
        sigv4 = True
    return BootstrapOptions(
        catalog=args.catalog, stack_name=args.stack_name, region=args.region,
        bucket=args.bucket, model_name=args.model_name, opensearch_url=args.opensearch_url,
        index_alias=args.index_alias, index_replicas=args.index_replicas, aws_sigv4=sigv4,
        content_type=args.content_type,
        instance_type=args.instance_type, instance_count=args.instance_count,
        max_payload_mb=args.max_payload_mb,
        max_concurrent_transforms=args.max_concurrent_transforms,
        records_per_file=args.records_per_file, upload_workers=args.upload_workers,
        local_transform=args.local_transform, model_artifact=args.model_artifact,
        state_dir=data_dir / "bootstrap", state_file=args.state_file,
        report_file=args.report_file, dry_run=args.dry_run, force=args.force,
        new_index=args.new_index, keep_old_index=args.keep_old_index,
        max_failed_fraction=args.max_failed_fraction, poll_seconds=args.poll_seconds,
        transform_timeout_s=args.transform_timeout, progress=not args.no_progress,
        fallback_opensearch_url=getattr(args, "opensearch", None),
        fallback_alias=getattr(args, "alias", None),
    )


def run_from_args(args: argparse.Namespace) -> int:
    """`clipsearch bootstrap`: 0 when the catalog is published (or already live)."""
    from clipsearch.bootstrap.pipeline import run_bootstrap

    run_bootstrap(options_from_args(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`scripts/bootstrap.py`: the same command without the rest of the CLI."""
    import logging

    from clipsearch.errors import ClipsearchError

    parser = argparse.ArgumentParser(prog="bootstrap.py", description=DESCRIPTION)
    add_arguments(parser)
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("CLIPSEARCH_DATA_DIR") or ".clipsearch"),
                        help="where state and reports go (default .clipsearch)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_from_args(args)
    except ClipsearchError as exc:
        if args.debug:
            raise
        where = f" [{exc.field}]" if exc.field else ""
        print(f"error: {exc.message}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
