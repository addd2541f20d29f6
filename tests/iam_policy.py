"""IAM-style evaluation of the synthesized OpenSearch permissions, for the tests.

Just enough of IAM's policy logic to answer "may this role send METHOD /path to
the domain?" from a synthesized template: intrinsic functions resolved with a
fixed account and partition; `*` and `?` wildcards in actions (case-insensitive)
and resources (where `*` also matches `/`, as in IAM); an explicit Deny beats
any Allow; nothing is allowed unless a statement allows it. OpenSearch Service
authorizes a request as `es:ESHttp<Method>` on `<domain ARN>/<path>`.

Both of a role's policies are judged on their own: its IAM policy, and the
statements of the domain's access policy that name it. Same-account access is
their union, so each must allow the Lambda's requests and neither may allow a
forbidden one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import unquote

ACCOUNT = "123456789012"
PARTITION = "aws"


def resolve(node: Any, region: str) -> Any:
    """The template value with Ref, Fn::GetAtt and Fn::Join replaced by plain strings.

    A role's `Fn::GetAtt [X, Arn]` becomes `arn:aws:iam::ACCOUNT:role/X`, so a
    principal can be compared with the role's logical id.
    """
    if isinstance(node, list):
        return [resolve(item, region) for item in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, arg),) = node.items()
        if key == "Ref":
            return {"AWS::Partition": PARTITION, "AWS::Region": region,
                    "AWS::AccountId": ACCOUNT, "AWS::URLSuffix": "amazonaws.com"
                    }.get(arg, f"<{arg}>")
        if key == "Fn::GetAtt":
            logical_id, attribute = arg
            return (role_arn(logical_id) if attribute == "Arn"
                    else f"<{logical_id}.{attribute}>")
        if key == "Fn::Join":
            separator, parts = arg
            return separator.join(str(resolve(part, region)) for part in parts)
    return {key: resolve(value, region) for key, value in node.items()}


def role_arn(logical_id: str) -> str:
    return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{logical_id}"


@cache
def _pattern(wildcard: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in wildcard)
    return re.compile(body + r"\Z", re.IGNORECASE if ignore_case else 0)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def decide(statements: Iterable[dict[str, Any]], action: str, resource: str) -> str:
    """"Deny" (explicit), "Allow", or "None" (nothing allows it: implicitly denied)."""
    verdict = "None"
    for statement in statements:
        if not any(_pattern(a, True).match(action) for a in _listed(statement["Action"])):
            continue
        if not any(_pattern(r, False).match(resource) for r in _listed(statement["Resource"])):
            continue
        if statement["Effect"] == "Deny":
            return "Deny"
        verdict = "Allow"
    return verdict


def request_path(raw: str) -> str:
    """`/products/_doc/a%2Fb?x=1` -> `products/_doc/a/b`: the part OpenSearch authorizes."""
    return unquote(raw.split("?", 1)[0]).lstrip("/")


@dataclass(frozen=True)
class Verdict:
    """What each of the role's two policies says about one request."""

    identity: str
    resource: str

    @property
    def allowed_by_each(self) -> bool:
        return self.identity == "Allow" and self.resource == "Allow"

    @property
    def denied(self) -> bool:
        """Denied by the union of both: nothing allows it, or something denies it."""
        return "Deny" in (self.identity, self.resource) or \
            (self.identity != "Allow" and self.resource != "Allow")


class DomainPermissions:
    """The OpenSearch grants of a synthesized template, per role logical id."""

    def __init__(self, template: dict[str, Any], region: str) -> None:
        self.template = template
        self.region = region
        ((_, domain),) = [(k, v) for k, v in template["Resources"].items()
                          if v["Type"] == "AWS::OpenSearchService::Domain"]
        props = domain["Properties"]
        self.domain_arn = (f"arn:{PARTITION}:es:{region}:{ACCOUNT}:domain/"
                           f"{props['DomainName']}")
        self.access_policy = resolve(props["AccessPolicies"], region)["Statement"]

    def identity_statements(self, role: str) -> list[dict[str, Any]]:
        statements: list[dict[str, Any]] = []
        for resource in self.template["Resources"].values():
            props = resource.get("Properties", {})
            if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in props["Roles"]:
                statements += _listed(resolve(props["PolicyDocument"], self.region)["Statement"])
        return statements

    def resource_statements(self, role: str) -> list[dict[str, Any]]:
        return [s for s in self.access_policy
                if role_arn(role) in _listed(s["Principal"].get("AWS", []))]

    def principals(self) -> set[str]:
        return {p for s in self.access_policy for p in _listed(s["Principal"].get("AWS", []))}

    def verdict(self, role: str, method: str, path: str) -> Verdict:
        action = f"es:ESHttp{method.title()}"
        resource = f"{self.domain_arn}/{request_path(path)}"
        return Verdict(decide(self.identity_statements(role), action, resource),
                       decide(self.resource_statements(role), action, resource))


# Requests each role must never get through, whatever the ids and versions are.
QUERY_FORBIDDEN = (
    ("POST", "/_bulk"), ("PUT", "/_bulk"), ("POST", "/{alias}/_bulk"),
    ("POST", "/{alias}/_delete_by_query"), ("POST", "/{alias}/_update_by_query"),
    ("POST", "/_aliases"), ("PUT", "/{alias}-v1/_alias/{alias}"),
    ("DELETE", "/{alias}-v1/_alias/{alias}"), ("PUT", "/{alias}-v2"), ("PUT", "/{alias}"),
    ("DELETE", "/{alias}-v1"), ("DELETE", "/{alias}"), ("DELETE", "/{alias}-catalog"),
    ("PUT", "/{alias}/_doc/p1"), ("POST", "/{alias}/_doc"), ("DELETE", "/{alias}/_doc/p1"),
    ("POST", "/{alias}/_update/p1"), ("PUT", "/{alias}/_settings"),
    ("PUT", "/{alias}/_mapping"), ("POST", "/{alias}-catalog/_search"),
    ("DELETE", "/_all"), ("DELETE", "/*"),
)
INGEST_FORBIDDEN = (
    ("POST", "/_aliases"), ("PUT", "/{alias}-v1/_alias/{alias}"),
    ("POST", "/{alias}-v1/_alias/{alias}"), ("PUT", "/{alias}-v1/_aliases/{alias}"),
    ("DELETE", "/{alias}-v1/_alias/{alias}"), ("DELETE", "/{alias}-v1/_aliases/{alias}"),
    ("PUT", "/_alias/{alias}"), ("DELETE", "/{alias}-v1"), ("DELETE", "/{alias}-catalog"),
    ("DELETE", "/{alias}"), ("DELETE", "/_all"), ("DELETE", "/*"),
    ("POST", "/{alias}/_delete_by_query"), ("POST", "/{alias}-v1/_update_by_query"),
    ("PUT", "/other-index"),
)
