"""Build the CDK app: read cdk.json, resolve the config, add the stack and cdk-nag.

`app.py` (what `cdk synth` runs) and the tests both call `build_app`, so the
tests synthesize exactly what users deploy, feature flags included.
`python app.py` does not go through the CDK CLI, so cdk.json's context is
read here; context from the CLI (CDK_CONTEXT_JSON, `-c`) overrides it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App

from stacks.clipsearch_stack import ClipsearchStack
from stacks.config import REPO_ROOT, DeploymentConfig, load_config
from stacks.nag import add_checks

CDK_JSON = REPO_ROOT / "cdk.json"


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The "context" block of cdk.json (feature flags and clipsearch defaults)."""
    return dict(json.loads(path.read_text()).get("context", {}))


def build_app(context: Mapping[str, Any] | None = None, *, outdir: str | None = None,
              environ: Mapping[str, str] | None = None) -> tuple[App, ClipsearchStack]:
    """The app with its one stack; `context` overrides cdk.json (tests pass their knobs here)."""
    merged = {**cdk_json_context(), **(context or {})}
    app = App(context=merged, outdir=outdir)
    # get_all_context includes CDK_CONTEXT_JSON, i.e. the CLI's -c flags.
    config: DeploymentConfig = load_config(app.node.get_all_context(), environ)
    stack = ClipsearchStack(app, config.stack_name, config=config)
    add_checks(app)
    return app, stack
