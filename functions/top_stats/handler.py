"""Top lists: refreshes Spotify's top tracks and artists (SQS), and the daily sweep that queues
tier 1 and 2 users whose sets are stale."""

from typing import Any

import psycopg
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from myi import aws, crypto, db, spotify_top
from myi.auth.tokens import TokenManager
from myi.dormancy import Dormancy
from myi.observability import logger, metrics, tracer
from myi.ratelimit import RateLimiter
from myi.settings import get_settings
from myi.spotify.accounts import AccountsClient
from myi.spotify.client import Budget, SpotifyClient

processor = BatchProcessor(event_type=EventType.SQS)


@db.per_connection
def _deps(conn: psycopg.Connection[Any]) -> spotify_top.TopDeps:
    """The dependencies of this environment's connection, made again when it was replaced."""
    settings = get_settings()
    return spotify_top.TopDeps(
        settings=settings,
        conn=conn,
        sqs=aws.client("sqs", settings),
        spotify=SpotifyClient(settings, Budget(settings, RateLimiter(settings))),
        tokens=TokenManager(conn, AccountsClient(settings), lambda: crypto.load_keyring(settings)),
    )


def record_handler(record: SQSRecord) -> None:
    spotify_top.handle_message(_deps(), record.body)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if event.get("source") == "aws.events":
        settings = get_settings()
        if Dormancy(settings).dormant():
            return {"users_queued": 0, "dormant": True}
        queued = spotify_top.sweep(settings, db.get_connection(settings), aws.client("sqs", settings))
        logger.info("top-list sweep done", extra={"users_queued": queued})
        return {"users_queued": queued}
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
