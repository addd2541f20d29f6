"""Optional VPC: private, isolated subnets for the OpenSearch domain and the Lambdas.

Enabled with `vpc_enabled` (on in prod). The subnets have no route to the
internet (no NAT gateway to pay for or to leak through); the Lambdas reach
AWS services through VPC endpoints: S3 (gateway, free), SageMaker runtime and
X-Ray (interface). The SageMaker serverless endpoint itself cannot be placed
in a VPC, so it is reached through its endpoint.
"""

from __future__ import annotations

from aws_cdk import Fn, Stack, Token
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from stacks.common import log_group
from stacks.config import ConfigError, DeploymentConfig


def availability_zones(stack: Stack, config: DeploymentConfig) -> list[str]:
    """The AZs the VPC spans: configured, else the environment's own.

    With an account in the environment, CDK looks the region's zone names up
    (and caches them in cdk.context.json); without one, the template picks them
    at deploy time with `Fn::GetAZs`. Never names guessed from the region, which
    fail in accounts or regions without that zone (cfn-lint W3010).
    """
    if config.availability_zones:
        return list(config.availability_zones)
    count = config.vpc_az_count
    known = stack.availability_zones
    if not any(Token.is_unresolved(zone) for zone in known):
        if len(known) < count:
            raise ConfigError(
                f"region {stack.region} offers {len(known)} availability zone(s) to this "
                f"account ({', '.join(known)}); domain_az_count={config.domain_az_count} "
                "needs more. Set -c domain_az_count=2 (and an even domain_instance_count)")
        return list(known[:count])
    return [Fn.select(index, Fn.get_azs(stack.region)) for index in range(count)]


class Network(Construct):
    """VPC, flow logs, VPC endpoints and the two security groups (domain, Lambdas)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(config.vpc_cidr),
            availability_zones=availability_zones(Stack.of(self), config),
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="private", cidr_mask=22,
                                        subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            ],
            restrict_default_security_group=True,
        )
        flow_log_group = log_group(self, "FlowLogs", config)
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)

        self.lambda_security_group = ec2.SecurityGroup(
            self, "LambdaSecurityGroup", vpc=self.vpc,
            description="clipsearch Lambdas: outbound HTTPS to the domain and VPC endpoints",
            allow_all_outbound=False,
        )
        self.domain_security_group = ec2.SecurityGroup(
            self, "DomainSecurityGroup", vpc=self.vpc,
            description="clipsearch OpenSearch domain: HTTPS from the clipsearch Lambdas only",
            allow_all_outbound=False,
        )
        self.domain_security_group.add_ingress_rule(
            self.lambda_security_group, ec2.Port.tcp(443), "HTTPS from the clipsearch Lambdas")

        endpoint_security_group = ec2.SecurityGroup(
            self, "EndpointSecurityGroup", vpc=self.vpc,
            description="clipsearch VPC interface endpoints: HTTPS from the Lambdas",
            allow_all_outbound=False,
        )
        endpoint_security_group.add_ingress_rule(
            self.lambda_security_group, ec2.Port.tcp(443), "HTTPS from the clipsearch Lambdas")

        self.vpc.add_gateway_endpoint(
            "S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.subnets])
        # Only HTTPS leaves the Lambdas. S3 (gateway endpoint) is addressed by public IP
        # ranges, and the subnets have no internet route, so "HTTPS anywhere" reaches
        # exactly the domain, S3 and the interface endpoints.
        self.lambda_security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443),
            "HTTPS to the domain, S3 and the VPC endpoints (no internet route exists)")
        for name, service in (
            ("SageMakerRuntime", ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME),
            ("XRay", ec2.InterfaceVpcEndpointAwsService.XRAY),
        ):
            self.vpc.add_interface_endpoint(
                f"{name}Endpoint", service=service, subnets=self.subnets,
                security_groups=[endpoint_security_group], private_dns_enabled=True,
                open=False,
            )
