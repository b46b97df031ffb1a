"""MYI as one stack: a construct per capability, composed from the wiring the local runtime reads."""

from __future__ import annotations

import dataclasses

from aws_cdk import CfnOutput, Stack, Tags
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as notifications
from constructs import Construct

from infra.config import Config
from infra.data import AccessLogs, Database, Files, Secrets, State
from infra.functions import Functions, Queues
from infra.http_api import HttpApi
from infra.network import Network
from infra.operations import Operations
from infra.web import WEB_DIR, Dashboard
from infra.wiring import WIRING, Wiring


class MyiStack(Stack):
    def __init__(
        self, scope: Construct, id: str, *, config: Config, wiring: Wiring = WIRING, **kw: object
    ) -> None:
        description = f"MYI ({config.stage}, {config.profile})"
        super().__init__(scope, id, description=description, **kw)  # type: ignore[arg-type]
        # S3 server access logs are delivered under a bucket policy rather than the legacy
        # LogDeliveryWrite ACL (cfn-lint W3045); set here so that every synth has it, cdk.json or not.
        self.node.set_context("@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy", True)
        untaggable = ["AWS::RDS::DBProxyTargetGroup"]  # CloudFormation refuses tags there
        Tags.of(self).add("app", "myi", exclude_resource_types=untaggable)
        Tags.of(self).add("stage", config.stage, exclude_resource_types=untaggable)
        self.config = config
        self.network = Network(self, "Network", config=config)
        self.access_logs = AccessLogs(self, "AccessLogs", config=config)
        self.dashboard = (
            Dashboard(self, "Dashboard", config=config, logs_bucket=self.access_logs.bucket)
            if config.publish_web and WEB_DIR.is_dir()
            else None
        )
        spa = list(config.spa_origins) + ([self.dashboard.origin] if self.dashboard else [])
        if self.dashboard and not config.app_url:
            config = dataclasses.replace(config, app_url=self.dashboard.origin)
            self.config = config
        self.http = HttpApi(self, "Http", config=config, origins=spa or None)
        origins = spa or [self.http.url]
        self.database = Database(self, "Database", config=config, network=self.network)
        self.state = State(self, "State", config=config)
        self.files = Files(self, "Files", config=config, origins=origins, access_logs=self.access_logs.bucket)
        self.secrets = Secrets(self, "Secrets", config=config)
        self.queues = Queues(self, "Queues", config=config, wiring=wiring)
        self.functions = Functions(
            self,
            "Functions",
            config=config,
            wiring=wiring,
            network=self.network,
            database=self.database,
            state=self.state,
            files=self.files,
            secrets=self.secrets,
            queues=self.queues,
            api_url=self.http.url,
            origins=origins,
        )
        self.http.route(wiring, self.functions)
        if self.dashboard:
            self.dashboard.publish(self.http.url)
            CfnOutput(self, "DashboardUrl", value=self.dashboard.origin, description="The dashboard")
        self._bucket_notifications(wiring)
        self.operations = Operations(
            self,
            "Operations",
            config=config,
            functions=self.functions,
            queues=self.queues,
            api=self.http,
            database=self.database,
        )
        CfnOutput(self, "ApiUrl", value=self.http.url, description="The API's URL (the SPA's API base)")
        CfnOutput(
            self,
            "SpotifyRedirectUri",
            value=f"{self.http.url}/auth/callback",
            description="Register this redirect URI in the Spotify app's settings",
        )
        CfnOutput(self, "SpotifyClientSecretArn", value=self.secrets.spotify.secret_arn)
        CfnOutput(self, "AlarmTopicArn", value=self.operations.topic.topic_arn)

    def _bucket_notifications(self, wiring: Wiring) -> None:
        for note in wiring.bucket_notifications:
            self.files.bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED,
                notifications.SqsDestination(self.queues.queues[note.queue]),
                s3.NotificationKeyFilter(prefix=note.prefix),
            )
