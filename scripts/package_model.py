#!/usr/bin/env python3
"""Package a model for SageMaker: `model.tar.gz` with weights, handler and vendored clipsearch.

    scripts/package_model.py --model openai/clip-vit-base-patch32 --output build/model.tar.gz \
        [--s3-uri s3://bucket/models/] [--model-id NAME] [--prompt-template "a photo of {}"]

`--model` is a Hugging Face id (downloaded here, on your machine, into the
usual cache), `hf-hub:ORG/REPO` for OpenCLIP, or a local directory (saved with
`save_pretrained`, or OpenCLIP's hub layout) of any supported family: CLIP,
SigLIP, SigLIP 2 or OpenCLIP (open_clip is vendored into the artifact). The
output is
deterministic: the same inputs give the same bytes, so the printed sha256
tells whether a re-deploy is needed. `--s3-uri` uploads it (a URI ending in
`/` gets the output's file name) with the sha256 as object metadata.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from clipsearch import config
from clipsearch.errors import ClipsearchError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="any supported family (CLIP, SigLIP, SigLIP 2, OpenCLIP; read from "
                        "the model's own config): a Hugging Face id, hf-hub:ORG/REPO for "
                        "OpenCLIP, or a local directory")
    parser.add_argument("--output", required=True, type=Path, help="where to write model.tar.gz")
    parser.add_argument("--s3-uri", help="upload the artifact to this s3:// URI")
    parser.add_argument("--model-id", help="id the endpoint reports (default: --model as given); "
                        "it must match the model id your index was built with")
    parser.add_argument("--prompt-template", default=None,
                        help="template applied to text queries by the handler (default: the "
                        f"model family's own, {config.DEFAULT_PROMPT_TEMPLATE!r} for CLIP, the "
                        "bare query for SigLIP, SigLIP 2 and OpenCLIP)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from clipsearch.sagemaker.package import build_artifact, upload_artifact

    try:
        if args.prompt_template is not None and "{}" not in args.prompt_template:
            raise ClipsearchError(f"--prompt-template {args.prompt_template!r} needs '{{}}'")
        artifact = build_artifact(args.model, args.output, model_id=args.model_id,
                                  prompt_template=args.prompt_template)
        print(f"wrote {artifact.path} ({artifact.size:,} bytes, "
              f"{artifact.size / (1024 * 1024):.1f} MiB)")
        print(f"model {artifact.model_id} ({artifact.family}), dimension {artifact.dimension}")
        print(f"sha256 {artifact.sha256}")
        if args.s3_uri:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                uri = upload_artifact(artifact, args.s3_uri)
            except (BotoCoreError, ClientError) as exc:
                raise ClipsearchError(f"upload to {args.s3_uri} failed: {exc}") from exc
            print(f"uploaded {uri}")
    except ClipsearchError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
