"""The export worker: exports (through SQS, from ``POST /me/exports`` and its own continuations)
written as ``my_spotify_data.zip``; the ``export-sweep`` schedule fails exports that stopped making
progress and aborts their uploads (while MYI is dormant, it leaves the database asleep)."""

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from myi import aws, db
from myi.dormancy import Dormancy
from myi.exports.jobs import ExportConfig
from myi.exports.worker import ExportDeps, handle_message, sweep
from myi.observability import logger, metrics, tracer
from myi.settings import get_settings

processor = BatchProcessor(event_type=EventType.SQS)


def _deps(context: LambdaContext) -> ExportDeps:
    settings = get_settings()
    return ExportDeps(
        conn=db.get_connection(settings),
        state_conn=db.get_connection(settings, purpose="progress"),
        s3=aws.client("s3", settings),
        sqs=aws.client("sqs", settings),
        config=ExportConfig.from_settings(settings),
        remaining_ms=context.get_remaining_time_in_millis,
    )


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: LambdaContext) -> Mapping[str, Any]:
    if event.get("source") == "aws.events":
        if Dormancy(get_settings()).dormant():  # nobody active: no export can be under way
            return {"dormant": True}
        result = sweep(_deps(context))
        logger.info("export sweep done", extra=result)
        return result
    deps = _deps(context)

    def record_handler(record: SQSRecord) -> None:
        attempt = int(record.raw_event.get("attributes", {}).get("ApproximateReceiveCount") or 1)
        handle_message(deps, record.body, attempt=attempt)

    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
