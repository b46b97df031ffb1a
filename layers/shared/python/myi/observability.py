"""One logger, tracer and metrics object for the whole package."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "myi")

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, disabled=os.environ.get("AWS_LAMBDA_FUNCTION_NAME") is None)
metrics = Metrics(service=SERVICE, namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "MYI"))
