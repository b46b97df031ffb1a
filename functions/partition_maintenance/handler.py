"""Partition maintenance (EventBridge, daily): this month and the next N exist; the default
partition is emptied into real ones; sessions long expired or revoked are deleted; the users'
recent floors move on (myi.statistics.maintenance.advance_recent); grants under an older key
version are re-encrypted under the current one (myi.auth.tokens.rekey_grants), so a rotated key
can be retired."""

from datetime import UTC, datetime

from aws_lambda_powertools.utilities.typing import LambdaContext

from myi import crypto, db, partitions
from myi.auth import sessions
from myi.auth.tokens import rekey_grants
from myi.observability import logger, metrics, tracer
from myi.settings import get_settings
from myi.statistics import maintenance


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = get_settings()
    conn = db.get_connection(settings)
    result = partitions.maintain(conn, datetime.now(UTC).date(), settings.partition_months_ahead)
    result["sessions_purged"] = sessions.purge(conn, now=datetime.now(UTC))
    result.update(maintenance.advance_recent(conn, now=datetime.now(UTC)))
    keys = rekey_grants(conn, crypto.load_keyring(settings), now=datetime.now(UTC))
    result["grants_rekeyed"], result["grants_unreadable"] = keys["rekeyed"], keys["unreadable"]
    logger.info(
        "partition maintenance done",
        extra={
            "partitions_created": result["created"],
            "default_rows_left": result["default_rows_left"],
            "sessions_purged": result["sessions_purged"],
            "recent_floors_moved": result["recent_floors_moved"],
            "grants_rekeyed": result["grants_rekeyed"],
            "grants_unreadable": result["grants_unreadable"],
        },
    )
    return result
