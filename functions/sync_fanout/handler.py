"""Sync fan-out (EventBridge): one SQS message per user who is due for a sync. While MYI is
dormant (nobody signed in within ``SYNC_ACTIVE_DAYS``) it leaves the database asleep."""

from datetime import UTC, datetime

from aws_lambda_powertools.utilities.typing import LambdaContext

from myi import aws, db
from myi.dormancy import Dormancy
from myi.observability import logger, metrics, tracer
from myi.settings import get_settings
from myi.sync import active_until, fanout


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = get_settings()
    dormancy = Dormancy(settings)
    if dormancy.dormant():
        return {"enqueued": 0, "dormant": True}
    conn = db.get_connection(settings)
    enqueued = fanout(settings, conn, aws.client("sqs", settings))
    metrics.add_metric(name="SyncUsersEnqueued", unit="Count", value=enqueued)
    dormancy.keep_awake(active_until(settings, conn) or datetime.now(UTC))
    return {"enqueued": enqueued}
