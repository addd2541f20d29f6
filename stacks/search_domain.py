"""The OpenSearch Service domain that holds the product vectors (k-NN) and metadata.

Written with the L1 `CfnDomain` on purpose: the L2 `Domain` applies access
policies and log-group policies through Lambda-backed custom resources, which
add IAM wildcards and a Node runtime to the stack. Here the access policy is a
plain property and the log delivery permission a `CfnResourcePolicy`.

Security properties (each has a test in tests/test_stacks.py):
- encryption at rest, node-to-node encryption, HTTPS only, TLS 1.2+;
- an access policy that names only the Lambda roles and an optional admin
  role: no `*` principal, no IP conditions to get wrong. Each Lambda role gets
  the HTTP methods and paths it really sends, here and in its own IAM policy
  (`reader_grants`, `writer_grants`; tests/test_lambda_e2e.py records the
  Lambdas' traffic against the real node and checks every request against
  both policies). The query role can only read; the ingest role writes
  documents and creates indexes but can neither delete an index nor move an
  alias. The admin role (whatever signs the bootstrap) may do everything;
- slow search, slow index and application logs in CloudWatch;
- optional VPC placement (private subnets, a security group open to the Lambdas only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from constructs import Construct

from stacks.common import log_group, removal_policy
from stacks.config import DeploymentConfig
from stacks.nag import acknowledge, acknowledge_wildcard
from stacks.network import Network

ENGINE_VERSION = opensearch.EngineVersion.OPENSEARCH_2_19


@dataclass(frozen=True)
class HttpGrant:
    """HTTP methods on domain paths (IAM wildcards), as one policy statement.

    OpenSearch Service authorizes each request as `es:ESHttp<Method>` on
    `<domain ARN>/<path>`. A `*` in an IAM resource also matches `/`, so
    "everything under the index" would include `_bulk`, `_delete_by_query` and
    `_alias/...`: POST and PUT are granted on exact paths only.
    """

    methods: tuple[str, ...]
    paths: tuple[str, ...]
    effect: str = "Allow"

    @property
    def actions(self) -> list[str]:
        return [f"es:ESHttp{m.title()}" for m in self.methods]


def reader_grants(alias: str) -> list[HttpGrant]:
    """What the query Lambda sends (recorded in tests/test_lambda_e2e.py): reads only."""
    return [
        HttpGrant(("GET", "HEAD"), (alias, f"{alias}/_doc/*", f"{alias}/_mapping",
                                    f"{alias}/_search", f"{alias}/_count", f"_alias/{alias}")),
        # Searches, counts and multi-gets carry a body, so they are POSTs; still reads.
        # _msearch: a hybrid query sends its vector and lexical searches in one round trip.
        HttpGrant(("POST",), (f"{alias}/_search", f"{alias}/_msearch", f"{alias}/_count",
                              f"{alias}/_mget")),
    ]


def writer_grants(alias: str) -> list[HttpGrant]:
    """What the ingest Lambda sends: document writes and creating its indexes, no more.

    It creates `<alias>-vN` (with the alias on it, the first time) and
    `<alias>-catalog`; it never deletes an index or moves an alias (the
    bootstrap's swap is the operator's, see docs/aws.md), which the Deny
    makes explicit against anything the PUT on `<alias>-v*` would reach.
    """
    versions, catalog = f"{alias}-v*", f"{alias}-catalog"
    return [
        HttpGrant(("GET", "HEAD"), (alias, f"{alias}/*", f"_alias/{alias}", versions,
                                    catalog)),
        HttpGrant(("POST",), ("_bulk", f"{alias}/_mget", f"{alias}/_search",
                              f"{catalog}/_search")),
        HttpGrant(("PUT",), (versions, catalog)),
        HttpGrant(("PUT", "POST", "DELETE"), ("_alias*", "*/_alias*"), effect="Deny"),
    ]


# Operators (the bootstrap, admin tools) may do everything over HTTP: build,
# publish and drop index versions.
ADMIN_ACTIONS = ("es:ESHttp*",)


class SearchDomain(Construct):
    """OpenSearch 2.19 domain sized from config, with its logs and access policy."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig,
                 readers: list[iam.IRole], writers: list[iam.IRole],
                 network: Network | None) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.domain_name = config.domain_name
        self.alias = config.index_alias
        self.domain_arn = stack.format_arn(service="es", resource="domain",
                                           resource_name=config.domain_name)
        self.index_arn = f"{self.domain_arn}/*"

        self.log_groups = {
            kind: log_group(self, f"{kind.title().replace('_', '')}Logs", config)
            for kind in ("SEARCH_SLOW_LOGS", "INDEX_SLOW_LOGS", "ES_APPLICATION_LOGS")
        }
        # OpenSearch writes to the log groups through a resource policy, scoped to
        # this account and domain so another domain cannot write into them.
        log_policy = logs.CfnResourcePolicy(
            self, "LogDeliveryPolicy",
            policy_name=f"{config.stack_name}-{config.domain_name}-logs",
            policy_document=stack.to_json_string({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": "es.amazonaws.com"},
                    "Action": ["logs:PutLogEvents", "logs:CreateLogStream"],
                    "Resource": [f"{g.log_group_arn}" for g in self.log_groups.values()],
                    "Condition": {
                        "StringEquals": {"aws:SourceAccount": stack.account},
                        "ArnLike": {"aws:SourceArn": self.domain_arn},
                    },
                }],
            }),
        )

        # Same-account access is the union of this policy and the caller's IAM policy,
        # so each role gets the same scoped grants here as in its own policy.
        statements: list[dict[str, Any]] = []
        for roles, grants in ((readers, reader_grants(config.index_alias)),
                              (writers, writer_grants(config.index_alias))):
            for role in roles:
                statements += [self._statement(grant, {"AWS": role.role_arn})
                               for grant in grants]
        if config.admin_role_arn:
            statements.append({"Effect": "Allow", "Principal": {"AWS": config.admin_role_arn},
                               "Action": list(ADMIN_ACTIONS), "Resource": self.index_arn})
        access_policy = {"Version": "2012-10-17", "Statement": statements}

        zone_awareness = config.domain_az_count > 1
        vpc_options = None
        if network is not None:
            subnet_ids = network.vpc.select_subnets(
                subnet_type=network.subnets.subnet_type).subnet_ids[: config.domain_az_count]
            vpc_options = opensearch.CfnDomain.VPCOptionsProperty(
                subnet_ids=subnet_ids,
                security_group_ids=[network.domain_security_group.security_group_id],
            )

        self.domain = opensearch.CfnDomain(
            self, "Domain",
            domain_name=config.domain_name,
            engine_version=ENGINE_VERSION.version,
            cluster_config=opensearch.CfnDomain.ClusterConfigProperty(
                instance_type=config.domain_instance_type,
                instance_count=config.domain_instance_count,
                zone_awareness_enabled=zone_awareness,
                zone_awareness_config=(
                    opensearch.CfnDomain.ZoneAwarenessConfigProperty(
                        availability_zone_count=config.domain_az_count)
                    if zone_awareness else None),
                dedicated_master_enabled=config.domain_master_count > 0,
                dedicated_master_type=config.domain_master_instance_type,
                dedicated_master_count=config.domain_master_count or None,
            ),
            ebs_options=opensearch.CfnDomain.EBSOptionsProperty(
                ebs_enabled=True, volume_type="gp3", volume_size=config.domain_volume_gb),
            encryption_at_rest_options=opensearch.CfnDomain.EncryptionAtRestOptionsProperty(
                enabled=True),
            node_to_node_encryption_options=(
                opensearch.CfnDomain.NodeToNodeEncryptionOptionsProperty(enabled=True)),
            domain_endpoint_options=opensearch.CfnDomain.DomainEndpointOptionsProperty(
                enforce_https=True,
                tls_security_policy="Policy-Min-TLS-1-2-PFS-2023-10",
            ),
            access_policies=access_policy,
            log_publishing_options={
                kind: opensearch.CfnDomain.LogPublishingOptionProperty(
                    enabled=True, cloud_watch_logs_log_group_arn=group.log_group_arn)
                for kind, group in self.log_groups.items()
            },
            vpc_options=vpc_options,
            software_update_options=opensearch.CfnDomain.SoftwareUpdateOptionsProperty(
                auto_software_update_enabled=True),
        )
        self.domain.node.add_dependency(log_policy)
        self.domain.apply_removal_policy(removal_policy(config))
        acknowledge(self.domain, "AwsSolutions-OS3",
                    "Access is granted to named IAM roles with SigV4-signed requests, not to "
                    "IP addresses: Lambda has no stable IPs and an IP allow-list would be "
                    "weaker than IAM.")
        self.endpoint = self.domain.attr_domain_endpoint
        self.url = f"https://{self.endpoint}"

    def resource(self, path: str) -> str:
        """The ARN OpenSearch authorizes a request to `path` (no leading slash) against."""
        return f"{self.domain_arn}/{path}"

    def _statement(self, grant: HttpGrant, principal: dict[str, Any]) -> dict[str, Any]:
        return {"Effect": grant.effect, "Principal": principal, "Action": grant.actions,
                "Resource": [self.resource(p) for p in grant.paths]}

    def grant(self, role: iam.IRole, *, write: bool) -> None:
        """The reader's or the writer's grants (see above) in the role's own policy."""
        grants = writer_grants(self.alias) if write else reader_grants(self.alias)
        for grant in grants:
            resources = [self.resource(p) for p in grant.paths]
            role.add_to_principal_policy(iam.PolicyStatement(
                effect=iam.Effect.DENY if grant.effect == "Deny" else iam.Effect.ALLOW,
                actions=grant.actions, resources=resources))
            if grant.effect == "Allow":
                for resource, path in zip(resources, grant.paths, strict=True):
                    if "*" in path:
                        acknowledge_wildcard(
                            role, resource,
                            "Document ids and index versions are created at run time; the "
                            "wildcard covers only reads of the alias or creating its "
                            "versioned indexes, and Deny statements exclude alias changes.")
