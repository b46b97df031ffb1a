"""Enrichment worker: fills catalog gaps from Spotify (SQS after ingestion, and a sweep for retries)."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from myi import aws, db, enrichment
from myi.dormancy import Dormancy
from myi.observability import logger, metrics, tracer
from myi.ratelimit import RateLimiter
from myi.settings import get_settings
from myi.spotify.client import Budget, SpotifyClient

_client: SpotifyClient | None = None


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    """Every message (and the sweep) means "look at the gaps": one pass of a batch, then another
    message while more are due. While MYI is dormant the sweep leaves the database asleep: gaps
    wait for the next sign-in."""
    global _client
    settings = get_settings()
    if event.get("source") == "aws.events" and Dormancy(settings).dormant():
        return {"dormant": True}
    if _client is None:
        _client = SpotifyClient(settings, Budget(settings, RateLimiter(settings)))
    result = enrichment.enrich(settings, db.get_connection(settings), _client)
    logger.info("enrichment pass", extra=vars(result))
    if result.remaining and not result.rate_limited:
        enrichment.request(aws.client("sqs", settings), settings)
    return {"batchItemFailures": []} if "Records" in event else vars(result)
