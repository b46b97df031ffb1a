"""The dashboard (``web/``) published to a private S3 bucket behind CloudFront (context
``publish_web=true``; off by default). Its ``config.js`` is written at deploy time with the API's URL,
and the distribution's origin becomes an allowed SPA origin of the API."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as deployment
from constructs import Construct

from infra.config import Config

WEB_DIR = Path(__file__).resolve().parents[1] / "web"


class Dashboard(Construct):
    def __init__(self, scope: Construct, id: str, *, config: Config, logs_bucket: s3.IBucket) -> None:
        super().__init__(scope, id)
        self.bucket = s3.Bucket(
            self,
            "Site",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            server_access_logs_bucket=logs_bucket,
            server_access_logs_prefix="site/",
            removal_policy=RemovalPolicy.DESTROY,
            auto_delete_objects=True,
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment=f"MYI dashboard ({config.stage})",
            default_root_object="index.html",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=cloudfront.ResponseHeadersPolicy.SECURITY_HEADERS,
            ),
            minimum_protocol_version=cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021,
            enable_logging=True,
            log_bucket=logs_bucket,
            log_file_prefix="cdn/",
        )

    @property
    def origin(self) -> str:
        return f"https://{self.distribution.distribution_domain_name}"

    def publish(self, api_url: str) -> None:
        deployment.BucketDeployment(
            self,
            "Publish",
            destination_bucket=self.bucket,
            sources=[
                deployment.Source.asset(str(WEB_DIR), exclude=["config.js"]),
                deployment.Source.data("config.js", f'window.MYI_API_URL = "{api_url}";\n'),
            ],
            distribution=self.distribution,
            distribution_paths=["/*"],
            memory_limit=256,
            retain_on_delete=False,
            cache_control=[deployment.CacheControl.max_age(Duration.minutes(5))],
        )
