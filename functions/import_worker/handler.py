"""The import worker: S3 notifications (through SQS) and continuations of long imports; the
``import-sweep`` schedule fails imports that stopped making progress (and keeps MYI awake while
imports are under way; while it is dormant, the sweep leaves the database asleep)."""

from datetime import UTC, datetime

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from myi import aws, db
from myi.dormancy import Dormancy
from myi.imports.worker import WorkerDeps, handle_message, sweep
from myi.observability import logger, metrics, tracer
from myi.settings import get_settings

processor = BatchProcessor(event_type=EventType.SQS)


def _deps(context: LambdaContext) -> WorkerDeps:
    settings = get_settings()
    return WorkerDeps(
        settings=settings,
        conn=db.get_connection(settings),
        progress_conn=db.get_connection(settings, purpose="progress"),
        s3=aws.client("s3", settings),
        sqs=aws.client("sqs", settings),
        remaining_ms=context.get_remaining_time_in_millis,
    )


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if event.get("source") == "aws.events":
        dormancy = Dormancy(get_settings())
        if dormancy.dormant():
            return {"dormant": True}
        result = sweep(_deps(context))
        logger.info("import sweep done", extra=result)
        if result["live"]:
            dormancy.importing(datetime.now(UTC))
        return result
    deps = _deps(context)

    def record_handler(record: SQSRecord) -> None:
        attempt = int(record.raw_event.get("attributes", {}).get("ApproximateReceiveCount") or 1)
        handle_message(deps, record.body, attempt=attempt)

    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
