"""Where MYI keeps things: Aurora PostgreSQL (events, statistics, users), DynamoDB (PKCE states and
rate-limit counters), the import bucket, and the two secrets of the Spotify app and the token key."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, SecretValue
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import Config, aurora_major
from infra.network import Network

DB_NAME = "myi"
DB_MASTER_USER = "myi_admin"
DB_APP_USER = "myi_app"  # created by migration 0005 with rds_iam; see docs/operations.md


class Database(Construct):
    """Aurora Serverless v2 PostgreSQL, encrypted, IAM authentication, generated credentials with
    rotation; RDS Proxy (IAM and TLS required) in the ``scale`` profile."""

    def __init__(self, scope: Construct, id: str, *, config: Config, network: Network) -> None:
        super().__init__(scope, id)
        self.cluster = rds.DatabaseCluster(
            self,
            "Cluster",
            # The version is a setting (aurora_version); the cluster uses the default parameter
            # groups of its major version (default.aurora-postgresql<major>), so a major upgrade
            # needs no parameter group of ours to be migrated (docs/operations.md: Upgrading).
            engine=rds.DatabaseClusterEngine.aurora_postgres(
                version=rds.AuroraPostgresEngineVersion.of(
                    config.aurora_version, str(aurora_major(config.aurora_version))
                )
            ),
            writer=rds.ClusterInstance.serverless_v2("Writer", publicly_accessible=False),
            serverless_v2_min_capacity=config.aurora_min_acu,
            serverless_v2_max_capacity=config.aurora_max_acu,
            vpc=network.vpc,
            vpc_subnets=network.database_subnets,
            security_groups=[network.database_sg],
            credentials=rds.Credentials.from_generated_secret(
                DB_MASTER_USER, secret_name=config.name("database-admin")
            ),
            default_database_name=DB_NAME,
            iam_authentication=True,
            storage_encrypted=True,
            deletion_protection=config.production,
            backup=rds.BackupProps(retention=Duration.days(14 if config.production else 1)),
            cloudwatch_logs_exports=["postgresql"],
            removal_policy=RemovalPolicy.SNAPSHOT,
        )
        self.cluster.add_rotation_single_user(automatically_after=Duration.days(30))
        self.proxy: rds.DatabaseProxy | None = None
        if config.rds_proxy:
            assert self.cluster.secret is not None
            proxy_sg = ec2.SecurityGroup(
                self,
                "ProxySecurityGroup",
                vpc=network.vpc,
                description="MYI RDS Proxy: from the functions, to the cluster",
                allow_all_outbound=False,
            )
            proxy_sg.add_ingress_rule(
                network.function_sg, ec2.Port.tcp(5432), "PostgreSQL from MYI functions"
            )
            proxy_sg.add_egress_rule(network.database_sg, ec2.Port.tcp(5432), "PostgreSQL to the cluster")
            network.database_sg.add_ingress_rule(proxy_sg, ec2.Port.tcp(5432), "PostgreSQL from the proxy")
            self.proxy = self.cluster.add_proxy(
                "Proxy",
                secrets=[self.cluster.secret],
                vpc=network.vpc,
                vpc_subnets=network.function_subnets,
                security_groups=[proxy_sg],
                iam_auth=True,
                require_tls=True,
            )

    @property
    def host(self) -> str:
        return self.proxy.endpoint if self.proxy else self.cluster.cluster_endpoint.hostname

    @property
    def app_user(self) -> str:
        """The user functions connect as with IAM: through the proxy, the secret's user."""
        return DB_MASTER_USER if self.proxy else DB_APP_USER


class State(Construct):
    """DynamoDB: PKCE states and rate-limit counters (``pk``, expiring by ``expires_at``)."""

    def __init__(self, scope: Construct, id: str, *, config: Config) -> None:
        super().__init__(scope, id)
        self.table = dynamodb.TableV2(
            self,
            "Table",
            table_name=config.name("state"),
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            time_to_live_attribute="expires_at",
            encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.DESTROY,
        )


class AccessLogs(Construct):
    """One bucket for the S3 and CloudFront access logs, kept 90 days."""

    def __init__(self, scope: Construct, id: str, *, config: Config) -> None:
        super().__init__(scope, id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN if config.production else RemovalPolicy.DESTROY,
            auto_delete_objects=not config.production,
        )


class Files(Construct):
    """The import bucket: private, encrypted, TLS only, CORS for the SPA's presigned POST, uploads
    deleted after ``upload_retention_days`` and exports after ``export_ttl_days``; its access logs go
    to the access-log bucket."""

    def __init__(
        self, scope: Construct, id: str, *, config: Config, origins: list[str], access_logs: s3.IBucket
    ) -> None:
        super().__init__(scope, id)
        self.bucket = s3.Bucket(
            self,
            "Imports",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=False,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="imports/",
            cors=[
                s3.CorsRule(
                    allowed_methods=[s3.HttpMethods.POST],
                    allowed_origins=origins,
                    allowed_headers=["*"],
                    max_age=3000,
                )
            ],
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="uploads",
                    prefix="uploads/",
                    expiration=Duration.days(config.upload_retention_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="exports",
                    prefix="exports/",
                    expiration=Duration.days(config.export_ttl_days),
                    # multipart uploads no worker finished or aborted
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
            ],
            removal_policy=RemovalPolicy.RETAIN if config.production else RemovalPolicy.DESTROY,
            auto_delete_objects=not config.production,
        )


class Secrets(Construct):
    """The Spotify client secret (the operator puts the value in after the first deploy) and the
    token-encryption key ring (its first key is written by the migration resource)."""

    def __init__(self, scope: Construct, id: str, *, config: Config) -> None:
        super().__init__(scope, id)
        self.spotify = secretsmanager.Secret(
            self,
            "SpotifyClientSecret",
            secret_name=config.name("spotify-client-secret"),
            description="The Spotify app's client secret: put its value here after the first deploy",
            secret_string_value=SecretValue.unsafe_plain_text("replace-with-the-spotify-client-secret"),
        )
        self.token_key = secretsmanager.Secret(
            self,
            "TokenKey",
            secret_name=config.name("token-key"),
            description='Token-encryption key ring {"current": N, "keys": {"N": base64}}; docs/operations.md',
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template='{"uninitialised": true}',  # noqa: S106 - a placeholder, no secret
                generate_string_key="nonce",
            ),
        )
