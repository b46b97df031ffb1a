"""Every function of the wiring with its trigger (queue, schedule, custom resource; routes are the
HTTP API's), the shared layer, and a role of its own holding exactly what its ``access`` lists."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aws_cdk import CustomResource, Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from constructs import Construct

from devtools.build_layer import PYTHON_VERSION
from devtools.paths import REPO
from infra.config import Config, rate_seconds
from infra.data import DB_NAME, Database, Files, Secrets, State
from infra.network import Network
from infra.wiring import Function, Wiring

# The layer is built for this runtime: its Python version is named once, in devtools.build_layer.
RUNTIME: lambda_.Runtime = getattr(lambda_.Runtime, f"PYTHON_{PYTHON_VERSION.replace('.', '_')}")
MIGRATIONS = REPO / "layers" / "shared" / "python" / "myi" / "migrations"


@dataclass
class Deployed:
    spec: Function
    function: lambda_.Function
    role: iam.Role
    log_group: logs.LogGroup


class Queues(Construct):
    """One queue per queue of the wiring, each with its dead-letter queue; encrypted, TLS only,
    visible again only after six times its consumer's timeout."""

    def __init__(self, scope: Construct, id: str, *, config: Config, wiring: Wiring) -> None:
        super().__init__(scope, id)
        self.queues: dict[str, sqs.Queue] = {}
        self.dlqs: dict[str, sqs.Queue] = {}
        for q in wiring.queues:
            consumer = wiring.consumer_of(q.name)
            dlq = sqs.Queue(
                self,
                f"{q.name}-dlq",
                queue_name=config.name(f"{q.name}-dlq"),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                retention_period=Duration.days(14),
            )
            self.dlqs[q.name] = dlq
            self.queues[q.name] = sqs.Queue(
                self,
                q.name,
                queue_name=config.name(q.name),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                visibility_timeout=Duration.seconds(6 * consumer.timeout_s),
                dead_letter_queue=sqs.DeadLetterQueue(
                    queue=dlq, max_receive_count=config.dlq_max_receives or q.max_receives
                ),
            )


class Functions(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: Config,
        wiring: Wiring,
        network: Network,
        database: Database,
        state: State,
        files: Files,
        secrets: Secrets,
        queues: Queues,
        api_url: str,
        origins: list[str],
    ) -> None:
        super().__init__(scope, id)
        self._config, self._database, self._state, self._files = config, database, state, files
        self._secrets, self._queues, self._network = secrets, queues, network
        layer_dir = Path(config.layer_dir)
        if not layer_dir.is_absolute():
            layer_dir = REPO / layer_dir
        if not (layer_dir / "python").is_dir():
            raise FileNotFoundError(f"the shared layer is not built at {layer_dir}: run make layer")
        self.layer = lambda_.LayerVersion(
            self,
            "SharedLayer",
            code=lambda_.Code.from_asset(str(layer_dir)),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[lambda_.Architecture.ARM_64],
            description="MYI's shared package and its dependencies",
        )
        common = {
            "STAGE": config.stage,
            "POWERTOOLS_SERVICE_NAME": "myi",
            "POWERTOOLS_METRICS_NAMESPACE": "MYI",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "API_URL": api_url,
            "APP_URL": config.app_url or api_url,
            "ALLOWED_ORIGINS": ",".join(origins),
            "SPOTIFY_CLIENT_ID": config.spotify_client_id,
            "SPOTIFY_BATCH_READS": "true" if config.spotify_batch_reads else "false",
            "UPLOAD_RETENTION_DAYS": str(config.upload_retention_days),
            "EXPORT_TTL_DAYS": str(config.export_ttl_days),
            "SYNC_MAX_INTERVAL_SECONDS": str(config.sync_max_interval_s),
            "SYNC_FANOUT_PERIOD_SECONDS": str(rate_seconds(self._fanout_schedule(wiring))),
        }
        self.deployed: dict[str, Deployed] = {}
        for spec in wiring.functions:
            self.deployed[spec.name] = self._function(spec, common, network)
        for spec in wiring.functions:
            fn = self.deployed[spec.name].function
            if spec.queue:
                fn.add_event_source(
                    sources.SqsEventSource(
                        queues.queues[spec.queue.queue],
                        batch_size=spec.queue.batch_size,
                        max_batching_window=(
                            Duration.seconds(spec.queue.batching_window_s)
                            if spec.queue.batching_window_s
                            else None
                        ),
                        max_concurrency=spec.queue.max_concurrency,
                        report_batch_item_failures=True,
                    )
                )
            for schedule in spec.schedules:
                events.Rule(
                    self,
                    f"{spec.kebab}-{schedule.rule}",
                    rule_name=config.name(schedule.rule),
                    description=schedule.description,
                    schedule=events.Schedule.expression(
                        config.schedules.get(schedule.rule, schedule.expression)
                    ),
                    targets=[targets.LambdaFunction(fn, retry_attempts=2)],
                )
            if spec.custom_resource:
                self._on_every_deploy(spec, fn)

    def _fanout_schedule(self, wiring: Wiring) -> str:
        """The sync fan-out's schedule expression in this deployment (the profile's, or the wiring's)."""
        for schedule, _ in wiring.schedules():
            if schedule.rule == "sync-fanout":
                return self._config.schedules.get(schedule.rule, schedule.expression)
        return ""

    def _function(self, spec: Function, common: dict[str, str], network: Network) -> Deployed:
        config = self._config
        name = config.name(spec.kebab)
        role = iam.Role(
            self,
            f"{spec.kebab}-role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"MYI {spec.name}: {spec.description}",
        )
        log_group = logs.LogGroup(
            self,
            f"{spec.kebab}-logs",
            log_group_name=f"/aws/lambda/{name}",
            retention=retention(config.log_retention_days),
        )
        log_group.grant_write(role)
        # Lambda creates the function's network interfaces in the VPC with its role; EC2 offers no
        # resource-level permissions for these actions.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "ec2:CreateNetworkInterface",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSubnets",
                    "ec2:DeleteNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                resources=["*"],
            )
        )
        env = dict(common)
        env.update(self._grant(spec, role, env))
        fn = lambda_.Function(
            self,
            spec.kebab,
            function_name=name,
            description=spec.description,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=spec.handler,
            code=lambda_.Code.from_asset(str(REPO / spec.code_dir)),
            layers=[self.layer],
            timeout=Duration.seconds(spec.timeout_s),
            memory_size=spec.memory_mb,
            role=role,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            environment=env,
            vpc=network.vpc,
            vpc_subnets=network.function_subnets,
            security_groups=[network.function_sg],
            reserved_concurrent_executions=self._reserved_concurrency(spec),
        )
        return Deployed(spec, fn, role, log_group)

    def _reserved_concurrency(self, spec: Function) -> int | None:
        """The wiring's reservation; for the functions behind the HTTP API (api, auth), the
        operator's opt-in ``api_reserved_concurrency`` when set (infra/config.py)."""
        if spec.routes and self._config.api_reserved_concurrency is not None:
            return self._config.api_reserved_concurrency
        return spec.reserved_concurrency

    def _grant(self, spec: Function, role: iam.Role, env: dict[str, str]) -> dict[str, str]:
        """Turn each entry of ``access`` into the narrowest grant and the settings that name it."""
        out: dict[str, str] = {}
        db = self._database
        for access in spec.access:
            if access == "db" and spec.custom_resource:
                # Migrations run as the cluster's own user, straight to the writer.
                assert db.cluster.secret is not None
                db.cluster.secret.grant_read(role)
                out.update(
                    DB_HOST=db.cluster.cluster_endpoint.hostname,
                    DB_NAME=DB_NAME,
                    DB_SECRET_ARN=db.cluster.secret.secret_arn,
                )
            elif access == "db":
                if db.proxy is not None:
                    db.proxy.grant_connect(role, db.app_user)
                else:
                    db.cluster.grant_connect(role, db.app_user)
                out.update(DB_HOST=db.host, DB_NAME=DB_NAME, DB_USER=db.app_user, DB_IAM_AUTH="true")
            elif access == "state_table":
                self._state.table.grant_read_write_data(role)
                out["STATE_TABLE"] = self._state.table.table_name
            elif access == "token_key":
                self._secrets.token_key.grant_read(role)
                out["TOKEN_KEY_SECRET_ID"] = self._secrets.token_key.secret_arn
            elif access == "token_key:init":
                self._secrets.token_key.grant_write(role)
            elif access == "spotify_secret":
                self._secrets.spotify.grant_read(role)
                out["SPOTIFY_CLIENT_SECRET_ID"] = self._secrets.spotify.secret_arn
            elif access == "spotify":
                pass  # outbound HTTPS through the NAT; nothing to grant
            elif access == "import_bucket:read":
                # Streaming reads with ranged GETs of the uploaded object, nothing else.
                role.add_to_policy(
                    iam.PolicyStatement(
                        actions=["s3:GetObject"], resources=[self._files.bucket.arn_for_objects("uploads/*")]
                    )
                )
                out["IMPORT_BUCKET"] = self._files.bucket.bucket_name
            elif access == "import_bucket:write":
                # Presigned POSTs carry this role's permission to put; deleting a user lists and
                # deletes their uploads.
                role.add_to_policy(
                    iam.PolicyStatement(
                        actions=["s3:PutObject", "s3:DeleteObject"],
                        resources=[self._files.bucket.arn_for_objects("uploads/*")],
                    )
                )
                role.add_to_policy(
                    iam.PolicyStatement(
                        actions=["s3:ListBucket"],
                        resources=[self._files.bucket.bucket_arn],
                        conditions={"StringLike": {"s3:prefix": ["uploads/*"]}},
                    )
                )
                out["IMPORT_BUCKET"] = self._files.bucket.bucket_name
            elif access == "import_bucket:export_write":
                # The export worker's multipart upload (CreateMultipartUpload, UploadPart and
                # CompleteMultipartUpload are s3:PutObject), its abort, and the object's deletion.
                role.add_to_policy(
                    iam.PolicyStatement(
                        actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"],
                        resources=[self._files.bucket.arn_for_objects("exports/*")],
                    )
                )
                out["IMPORT_BUCKET"] = self._files.bucket.bucket_name
            elif access == "import_bucket:export_read":
                # Presigned GETs carry this role's permission; deleting a user lists, deletes and
                # aborts their exports.
                role.add_to_policy(
                    iam.PolicyStatement(
                        actions=["s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                        resources=[self._files.bucket.arn_for_objects("exports/*")],
                    )
                )
                role.add_to_policy(
                    iam.PolicyStatement(
                        actions=["s3:ListBucket", "s3:ListBucketMultipartUploads"],
                        resources=[self._files.bucket.bucket_arn],
                        conditions={"StringLike": {"s3:prefix": ["exports/*"]}},
                    )
                )
                out["IMPORT_BUCKET"] = self._files.bucket.bucket_name
            elif access.endswith("_queue:send"):
                queue_name = access.removesuffix("_queue:send")
                queue = self._queues.queues[queue_name]
                queue.grant_send_messages(role)
                out[f"{queue_name.upper()}_QUEUE_URL"] = queue.queue_url
            else:
                raise ValueError(f"{spec.name}: unknown access {access!r}")
        return out

    def _on_every_deploy(self, spec: Function, fn: lambda_.Function) -> None:
        provider = cr.Provider(self, f"{spec.kebab}-provider", on_event_handler=fn)
        digest = hashlib.sha256()
        for path in sorted(MIGRATIONS.glob("*.sql")):
            digest.update(path.name.encode() + path.read_bytes())
        run = CustomResource(
            self,
            f"{spec.kebab}-run",
            service_token=provider.service_token,
            resource_type="Custom::MyiMigrations",
            # Every deploy runs the runner (it is idempotent and applies only what is pending).
            properties={"Migrations": digest.hexdigest(), "Deployment": datetime.now(UTC).isoformat()},
        )
        # Only once the writer instance answers and the NAT routes exist (Secrets Manager is reached
        # through them).
        run.node.add_dependency(self._database.cluster)
        run.node.add_dependency(self._network.vpc)


_RETENTIONS = {
    1: logs.RetentionDays.ONE_DAY,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}


def retention(days: int) -> logs.RetentionDays:
    """The shortest retention CloudWatch offers that keeps logs at least ``days`` days."""
    return _RETENTIONS[min((d for d in _RETENTIONS if d >= days), default=365)]
