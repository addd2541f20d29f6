#!/usr/bin/env python3
"""The search page's WAF web ACL, for a stack outside us-east-1.

    scripts/web_acl.py --name clipsearch-prod-web [--rate-limit 2000]           # print it
    scripts/web_acl.py --name clipsearch-prod-web --create                      # create it
    npx cdk deploy -c profile=prod -c web_acl_arn=<the ARN it printed>

CloudFront only takes a web ACL made in us-east-1 with CLOUDFRONT scope, which
a stack in another region cannot create (docs/aws.md, "WAF for the page").
This makes that ACL with the rules the stack would have used (stacks/waf.py):
without `--create` it prints the `aws wafv2 create-web-acl --cli-input-json`
document; with it, it creates the ACL in us-east-1 (your AWS credentials) and
prints only its ARN, so it can go straight into `-c web_acl_arn=...`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")

from stacks.config import ConfigError, DeploymentConfig

CLOUDFRONT_REGION = "us-east-1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True,
                        help="name of the web ACL (letters, digits, - and _)")
    parser.add_argument("--rate-limit", type=int,
                        default=DeploymentConfig.waf_rate_limit_per_5min,
                        help="requests per 5 minutes per IP before blocking (default %(default)s,"
                        " the stack's waf_rate_limit_per_5min)")
    parser.add_argument("--create", action="store_true",
                        help=f"create it in {CLOUDFRONT_REGION} and print its ARN")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from stacks.waf import create_web_acl_input

    try:
        config = DeploymentConfig(waf_rate_limit_per_5min=args.rate_limit).validate()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    document = create_web_acl_input(config, args.name)
    if not args.create:
        print(json.dumps(document, indent=2))
        return 0

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        created = boto3.client("wafv2", region_name=CLOUDFRONT_REGION).create_web_acl(**document)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"error: could not create web ACL {args.name!r} in {CLOUDFRONT_REGION}: "
              f"{error.get('Code')}: {error.get('Message')}", file=sys.stderr)
        return 1
    except BotoCoreError as exc:
        print(f"error: could not reach WAF in {CLOUDFRONT_REGION}: {exc}", file=sys.stderr)
        return 1
    print(created["Summary"]["ARN"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
