"""One logger, tracer and metrics object for the whole package."""

from __future__ import annotations

import logging
import os

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "myi")

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, disabled=os.environ.get("AWS_LAMBDA_FUNCTION_NAME") is None)
metrics = Metrics(service=SERVICE, namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "MYI"))

# The DEBUG output of these libraries carries request and response bodies and headers (tokens, PKCE
# verifiers, authorization codes); it stays off whatever level the root logger is given.
for _noisy in ("botocore", "boto3", "s3transfer", "urllib3", "httpcore", "hpack"):
    logging.getLogger(_noisy).setLevel(logging.INFO)
