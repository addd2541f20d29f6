"""Where the catalog goes: the deployed stack's outputs, or explicit names.

The stack outputs are an interface (`stacks/clipsearch_stack.py`, OUTPUTS):
reading them with one `describe_stacks` means a user types a stack name, not
six resource names copied from the console.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from clipsearch.bootstrap.options import DEFAULT_STACK, BootstrapOptions
from clipsearch.errors import ConfigurationError

# Stack states whose outputs are final. Anything in progress may still change
# them; a failed creation or a deletion has none worth trusting.
_USABLE_STATES = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE",
                            "IMPORT_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"})
_AWS_HOST = re.compile(r"\.amazonaws\.com(\.cn)?$")


@dataclass(frozen=True)
class Target:
    """The resolved deployment one bootstrap run writes into."""

    bucket: str
    opensearch_url: str
    alias: str
    aws_sigv4: bool
    region: str | None
    model_name: str | None
    stack_name: str | None = None
    # Replicas of the versions this run creates (stack output IndexReplicas).
    replicas: int = 0
    api_url: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A file-name-safe id for the state directory: the stack, else the bucket."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.stack_name or self.bucket)

    def describe(self) -> dict[str, Any]:
        """The target as the report shows it (no secrets: user:pass in a URL is dropped)."""
        parsed = urlparse(self.opensearch_url)
        netloc = (parsed.hostname or "") + (f":{parsed.port}" if parsed.port else "")
        url = parsed._replace(netloc=netloc).geturl()
        return {"stack": self.stack_name, "region": self.region, "bucket": self.bucket,
                "model_name": self.model_name, "opensearch_url": url, "alias": self.alias,
                "aws_sigv4": self.aws_sigv4, "replicas": self.replicas,
                "api_url": self.api_url}


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    """OutputKey -> OutputValue of a deployed stack, or a clear error saying what is wrong."""
    from botocore.exceptions import ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        if "does not exist" in message:
            raise ConfigurationError(
                f"stack {stack_name!r} does not exist in this account and region; deploy it "
                "(npx cdk deploy), pass --stack-name and --region, or name the resources "
                "with --bucket, --opensearch-url and --model-name", field="stack_name",
            ) from None
        raise ConfigurationError(f"cannot read stack {stack_name!r}: {message}",
                                 field="stack_name") from None
    if not stacks:
        raise ConfigurationError(f"stack {stack_name!r} not found", field="stack_name")
    stack = stacks[0]
    status = stack.get("StackStatus", "")
    if status not in _USABLE_STATES:
        raise ConfigurationError(
            f"stack {stack_name!r} is {status}; its outputs are not final. Wait for the "
            "deployment to finish (or fix it) and run the bootstrap again", field="stack_name",
        )
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}


def resolve_target(options: BootstrapOptions, session: Any) -> Target:
    """Merge flags, stack outputs and fallbacks; fail listing every missing name."""
    explicit = bool(options.bucket and options.opensearch_url
                    and (options.model_name or options.local_transform))
    stack_name = options.stack_name or (None if explicit else DEFAULT_STACK)
    outputs: dict[str, str] = {}
    if stack_name:
        if session.region_name is None:
            raise ConfigurationError("no AWS region: pass --region or set AWS_DEFAULT_REGION",
                                     field="region")
        outputs = stack_outputs(session.client("cloudformation"), stack_name)
    bucket = options.bucket or outputs.get("BucketName")
    url = options.opensearch_url or outputs.get("OpenSearchUrl") or options.fallback_opensearch_url
    alias = options.index_alias or outputs.get("IndexAlias") or options.fallback_alias or "products"
    model_name = options.model_name or outputs.get("ModelName")
    replicas = (options.index_replicas if options.index_replicas is not None
                else int(outputs.get("IndexReplicas") or 0))
    missing = []
    if not bucket:
        missing.append("--bucket (stack output BucketName)")
    if not url:
        missing.append("--opensearch-url (stack output OpenSearchUrl)")
    if not model_name and not (options.local_transform and options.model_artifact):
        missing.append("--model-name (stack output ModelName), or --local-transform with "
                       "--model-artifact")
    if missing:
        where = f"stack {stack_name!r} has no such output" if stack_name else "no stack given"
        raise ConfigurationError(f"missing {', '.join(missing)}: {where}", field="stack_name")
    assert bucket and url
    host = urlparse(url).hostname or ""
    sigv4 = options.aws_sigv4 if options.aws_sigv4 is not None else bool(_AWS_HOST.search(host))
    return Target(bucket=bucket, opensearch_url=url, alias=alias, aws_sigv4=sigv4,
                  region=options.region or outputs.get("Region") or session.region_name,
                  model_name=model_name, stack_name=stack_name, replicas=replicas,
                  api_url=outputs.get("ApiUrl"),
                  outputs=outputs)
