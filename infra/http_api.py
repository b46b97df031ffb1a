"""The HTTP API (API Gateway HTTP API): the routes of the wiring to their functions, CORS for the
SPA's origins, throttling and access logs."""

from __future__ import annotations

import json

from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_logs as logs
from aws_cdk.aws_apigatewayv2_integrations import HttpLambdaIntegration
from constructs import Construct

from infra.config import Config
from infra.functions import Functions
from infra.wiring import Wiring

ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "time": "$context.requestTime",
        "method": "$context.httpMethod",
        "routeKey": "$context.routeKey",
        "status": "$context.status",
        "latency": "$context.integrationLatency",
        "error": "$context.integrationErrorMessage",
    }
)


class HttpApi(Construct):
    def __init__(self, scope: Construct, id: str, *, config: Config, origins: list[str] | None) -> None:
        super().__init__(scope, id)
        self.api = apigw.HttpApi(
            self,
            "Api",
            api_name=config.name("api"),
            cors_preflight=(
                apigw.CorsPreflightOptions(
                    allow_origins=origins,
                    allow_credentials=True,
                    allow_methods=[
                        apigw.CorsHttpMethod.GET,
                        apigw.CorsHttpMethod.POST,
                        apigw.CorsHttpMethod.PATCH,
                        apigw.CorsHttpMethod.DELETE,
                    ],
                    allow_headers=["content-type"],
                    max_age=Duration.hours(1),
                )
                if origins
                else None
            ),
        )
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH)
        stage = self.api.default_stage
        assert stage is not None
        cfn_stage = stage.node.default_child
        assert isinstance(cfn_stage, apigw.CfnStage)
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn, format=ACCESS_LOG_FORMAT
        )
        cfn_stage.default_route_settings = apigw.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=config.api_rate_limit, throttling_burst_limit=config.api_burst_limit
        )

    @property
    def url(self) -> str:
        return self.api.api_endpoint

    def route(self, wiring: Wiring, functions: Functions) -> None:
        """Every route of the wiring to its function, one integration per function."""
        integrations: dict[str, HttpLambdaIntegration] = {}
        for route, spec in wiring.routes():
            if spec.name not in integrations:
                integrations[spec.name] = HttpLambdaIntegration(
                    f"{spec.kebab}-integration", functions.deployed[spec.name].function
                )
            self.api.add_routes(
                path=route.path, methods=[apigw.HttpMethod(route.method)], integration=integrations[spec.name]
            )
