"""Sync worker (SQS): reads one user's recently-played and ingests it; partial batch failures."""

from typing import Any

import psycopg
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from myi import db
from myi.observability import logger, metrics, tracer
from myi.settings import get_settings
from myi.sync import SyncDeps, default_deps, handle_message

processor = BatchProcessor(event_type=EventType.SQS)


@db.per_connection
def _deps(conn: psycopg.Connection[Any]) -> SyncDeps:
    """The dependencies of this environment's connection, made again when it was replaced."""
    return default_deps(get_settings(), conn)


def record_handler(record: SQSRecord) -> None:
    handle_message(_deps(), record.body)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
