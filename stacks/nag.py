"""cdk-nag wiring: the AwsSolutions pack on every synth, and reasoned acknowledgements.

cdk-nag v3 runs as a CDK policy-validation plugin: any unacknowledged
finding makes `app.synth()` (and so `cdk synth`/`cdk deploy`) fail and writes
`validation-report.json` into the cloud assembly. Acknowledgements go through
`acknowledge()` below, which refuses an empty or token reason, so every
accepted finding says in code why it is acceptable.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, App, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

MIN_REASON_CHARS = 40


def add_checks(app: App) -> None:
    """Run the AwsSolutions pack on everything in the app."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept one finding (e.g. 'AwsSolutions-IAM5[Resource::*]') on scope and its children.

    The reason is mandatory and must explain the decision, not restate the rule.
    """
    reason = " ".join(reason.split())
    if len(reason) < MIN_REASON_CHARS:
        raise ValueError(
            f"acknowledging {rule} on {scope.node.path} needs a reason of at least "
            f"{MIN_REASON_CHARS} characters; got {reason!r}"
        )
    if not rule.startswith("AwsSolutions-"):
        raise ValueError(f"only AwsSolutions rules are acknowledged here; got {rule!r}")
    # The "AwsSolutions::" prefix is the id form cdk-nag prints ("Acknowledge with ...").
    Validations.of(scope).acknowledge(Acknowledgment(id=f"AwsSolutions::{rule}", reason=reason))


def finding_text(scope: IConstruct, value: str) -> str:
    """Render a (possibly tokenized) ARN the way cdk-nag names it in a finding id.

    cdk-nag writes `{"Fn::GetAtt": ["Bucket", "Arn"]}` as `<Bucket.Arn>` and
    `{"Ref": "AWS::AccountId"}` as `<AWS::AccountId>`, joined into one string.
    Building ids from the real tokens keeps acknowledgements right when logical
    ids change or the account becomes concrete at deploy time.
    """
    return _render(Stack.of(scope).resolve(value))


def _render(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and len(node) == 1:
        ((key, arg),) = node.items()
        if key == "Ref":
            return f"<{arg}>"
        if key == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if key == "Fn::Join":
            separator, parts = arg
            return separator.join(_render(p) for p in parts)
    raise ValueError(f"cannot render {node!r} as a cdk-nag finding id")


def acknowledge_wildcard(scope: IConstruct, resource: str, reason: str) -> None:
    """Accept AwsSolutions-IAM5 for one wildcard resource (given as the token used in code)."""
    acknowledge(scope, f"AwsSolutions-IAM5[Resource::{finding_text(scope, resource)}]", reason)
