"""Sync fan-out (EventBridge): one SQS message per user who is due for a sync."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from myi import aws, db
from myi.observability import logger, metrics, tracer
from myi.settings import get_settings
from myi.sync import fanout


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = get_settings()
    enqueued = fanout(settings, db.get_connection(settings), aws.client("sqs", settings))
    metrics.add_metric(name="SyncUsersEnqueued", unit="Count", value=enqueued)
    return {"enqueued": enqueued}
