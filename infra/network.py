"""The network: isolated subnets for the database, private subnets for the functions, and a NAT only
because Spotify is on the internet (an instance for ``personal``, gateways per AZ for ``scale``)."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import Config


class Network(Construct):
    def __init__(self, scope: Construct, id: str, *, config: Config) -> None:
        super().__init__(scope, id)
        nat = (
            ec2.NatProvider.gateway()
            if config.nat_gateways
            else ec2.NatProvider.instance_v2(
                instance_type=ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.NANO),
                default_allowed_traffic=ec2.NatTrafficDirection.OUTBOUND_ONLY,
            )
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=max(1, config.nat_count),
            nat_gateway_provider=nat,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="functions", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                ),
                ec2.SubnetConfiguration(
                    name="data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                ),
            ],
            # Free gateway endpoints keep DynamoDB and S3 traffic off the NAT.
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDb": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
        )
        if isinstance(nat, ec2.NatInstanceProviderV2):
            # The instance forwards what the private subnets send; nothing from the internet gets in.
            nat.connections.allow_from(
                ec2.Peer.ipv4(self.vpc.vpc_cidr_block),
                ec2.Port.all_traffic(),
                "Traffic to forward from the VPC",
            )
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH)
        self.vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))
        self.function_sg = ec2.SecurityGroup(
            self,
            "Functions",
            vpc=self.vpc,
            description="MYI functions: outbound only",
            allow_all_outbound=True,
        )
        self.database_sg = ec2.SecurityGroup(
            self,
            "Database",
            vpc=self.vpc,
            description="MYI database: PostgreSQL from the functions only",
            allow_all_outbound=False,
        )
        self.database_sg.add_ingress_rule(
            self.function_sg, ec2.Port.tcp(5432), "PostgreSQL from MYI functions"
        )
        self.function_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.database_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
