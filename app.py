#!/usr/bin/env python3
"""CDK entry point: `npx cdk synth`, `npx cdk deploy` or plain `python app.py`.

Everything is built in stacks.app_factory; configuration knobs are in
stacks/config.py and docs/aws.md. Runs with no Docker and no AWS credentials.
"""

from __future__ import annotations

import sys

from stacks.app_factory import build_app
from stacks.config import ConfigError


def main() -> int:
    try:
        app, _ = build_app()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
