"""Operations: alarms on every dead-letter queue, function errors and throttles, the API's 5xx and
the database's connections, to one SNS topic (with an optional e-mail); one dashboard."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.config import Config
from infra.data import Database
from infra.functions import Functions, Queues
from infra.http_api import HttpApi


class Operations(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: Config,
        functions: Functions,
        queues: Queues,
        api: HttpApi,
        database: Database,
    ) -> None:
        super().__init__(scope, id)
        key: kms.Key | None = None
        if config.alarm_topic_key:
            # CloudWatch can only publish to a topic encrypted with a key whose policy lets it in,
            # which the AWS managed SNS key does not.
            key = kms.Key(self, "AlarmsKey", enable_key_rotation=True, description="MYI alarm topic")
            key.grant_encrypt_decrypt(iam.ServicePrincipal("cloudwatch.amazonaws.com"))
        self.topic = sns.Topic(
            self, "Alarms", topic_name=config.name("alarms"), master_key=key, enforce_ssl=True
        )
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        notify = actions.SnsAction(self.topic)
        self.alarms: list[cw.Alarm] = []

        def alarm(name: str, metric: cw.IMetric, threshold: float, description: str) -> cw.Alarm:
            made = cw.Alarm(
                self,
                name,
                alarm_name=config.name(name),
                alarm_description=description,
                metric=metric,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            made.add_alarm_action(notify)
            self.alarms.append(made)
            return made

        for name, dlq in queues.dlqs.items():
            alarm(
                f"dlq-{name}",
                dlq.metric_approximate_number_of_messages_visible(
                    period=Duration.minutes(5), statistic="Maximum"
                ),
                1,
                f"Messages in the {name} dead-letter queue: see docs/operations.md on redriving",
            )
        if config.alarms_per_function:
            for name, deployed in functions.deployed.items():
                fn = deployed.function
                alarm(f"{name}-errors", fn.metric_errors(period=Duration.minutes(5)), 1, f"{name} failed")
                alarm(
                    f"{name}-throttles",
                    fn.metric_throttles(period=Duration.minutes(5)),
                    1,
                    f"{name} was throttled",
                )
        else:
            # An alarm is billed per metric it watches, so one alarm over the account's functions
            # costs a tenth of one per function; the dashboard shows which function it was.
            for metric, what in (("Errors", "failed"), ("Throttles", "was throttled")):
                alarm(
                    f"functions-{metric.lower()}",
                    cw.Metric(
                        namespace="AWS/Lambda",
                        metric_name=metric,
                        statistic="Sum",
                        period=Duration.minutes(5),
                    ),
                    1,
                    f"A function of the account {what} (the dashboard's Errors graph names it)",
                )
        api_5xx = cw.Metric(
            namespace="AWS/ApiGateway",
            metric_name="5xx",
            dimensions_map={"ApiId": api.api.api_id},
            statistic="Sum",
            period=Duration.minutes(5),
        )
        alarm("api-5xx", api_5xx, 5, "The HTTP API answered 5xx")
        connections = database.cluster.metric_database_connections(
            period=Duration.minutes(5), statistic="Maximum"
        )
        alarm(
            "database-connections", connections, 80 if config.rds_proxy else 40, "Many database connections"
        )

        dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=config.name("overview"))

        def per_function(title: str, metric: str) -> cw.GraphWidget:
            return cw.GraphWidget(
                title=title,
                left=[
                    d.function.metric(metric, period=Duration.minutes(5), statistic="Sum")
                    for d in functions.deployed.values()
                ],
                width=12,
            )

        dashboard.add_widgets(
            per_function("Invocations", "Invocations"),
            per_function("Errors", "Errors"),
            per_function("Throttles", "Throttles"),
            cw.GraphWidget(title="API 5xx", left=[api_5xx], width=12),
            cw.GraphWidget(title="Database connections", left=[connections], width=12),
            cw.GraphWidget(
                title="Dead-letter queues",
                left=[
                    q.metric_approximate_number_of_messages_visible(period=Duration.minutes(5))
                    for q in queues.dlqs.values()
                ],
                width=12,
            ),
        )
