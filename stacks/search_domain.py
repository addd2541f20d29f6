"""The OpenSearch Service domain that holds the product vectors (k-NN) and metadata.

Written with the L1 `CfnDomain` on purpose: the L2 `Domain` applies access
policies and log-group policies through Lambda-backed custom resources, which
add IAM wildcards and a Node runtime to the stack. Here the access policy is a
plain property and the log delivery permission a `CfnResourcePolicy`.

Security properties (each has a test in tests/test_stacks.py):
- encryption at rest, node-to-node encryption, HTTPS only, TLS 1.2+;
- an access policy that allows `es:ESHttp*` only to the Lambda roles and an
  optional admin role: no `*` principal, no IP conditions to get wrong;
- slow search, slow index and application logs in CloudWatch;
- optional VPC placement (private subnets, a security group open to the Lambdas only).
"""

from __future__ import annotations

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

# What the Lambdas may do over HTTP. Query needs reads and _search (POST);
# ingest also writes and deletes documents.
READ_ACTIONS = ("es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost")
WRITE_ACTIONS = (*READ_ACTIONS, "es:ESHttpPut", "es:ESHttpDelete")


class SearchDomain(Construct):
    """OpenSearch 2.19 domain sized from config, with its logs and access policy."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig,
                 readers: list[iam.IRole], writers: list[iam.IRole],
                 network: Network | None) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.domain_name = config.domain_name
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
        # so readers get read actions here too, not the full set.
        writer_arns = [role.role_arn for role in writers]
        if config.admin_role_arn:
            writer_arns.append(config.admin_role_arn)
        access_policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": arns},
                    "Action": list(actions),
                    "Resource": self.index_arn,
                }
                for arns, actions in (([r.role_arn for r in readers], READ_ACTIONS),
                                      (writer_arns, WRITE_ACTIONS))
                if arns
            ],
        }

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

    def grant(self, role: iam.IRole, *, write: bool) -> None:
        """es:ESHttp* on this domain's indices only: reads for query, writes for ingest."""
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=list(WRITE_ACTIONS if write else READ_ACTIONS),
            resources=[self.domain_arn, self.index_arn],
        ))
        acknowledge_wildcard(role, self.index_arn,
                             "Indices are versioned and created at run time behind the alias "
                             "(zero-downtime reindex); access is scoped to this one domain.")
