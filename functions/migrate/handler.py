"""Migrations on every deploy (a CloudFormation custom resource): applies the pending migrations,
creates this month's partitions and the ones ahead, and gives a new token-key secret its first
key. Deleting the stack changes nothing in the database.

Operators also invoke it directly for the statistics tools, which need the database inside the
VPC: ``{"stats": "verify" | "rebuild", "user_id": 42}`` (see the README)."""

from datetime import UTC, datetime

from aws_lambda_powertools.utilities.typing import LambdaContext

from myi import crypto, db, migrate, partitions
from myi.observability import logger, tracer
from myi.settings import get_settings
from myi.statistics import maintenance


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if "stats" in event:
        return _stats(event)
    request = event.get("RequestType", "Create")
    physical_id = event.get("PhysicalResourceId") or "myi-schema"
    if request == "Delete":
        return {"PhysicalResourceId": physical_id}
    settings = get_settings()
    created_key = crypto.ensure_key_ring(settings)
    with db.connect(settings) as conn:
        applied = migrate.migrate(conn)
        partitions.maintain(conn, datetime.now(UTC).date(), settings.partition_months_ahead)
    logger.info("schema up to date", extra={"migrations_applied": applied, "token_key_created": created_key})
    return {"PhysicalResourceId": physical_id, "Data": {"Applied": ",".join(applied) or "none"}}


def _stats(event: dict) -> dict:
    action, user_id = event["stats"], int(event["user_id"])
    with db.connect(get_settings()) as conn:
        if action == "rebuild":
            maintenance.rebuild(conn, user_id)
            logger.info("statistics rebuilt", extra={"user_id": user_id})
            return {"user_id": user_id, "rebuilt": True}
        if action == "verify":
            diffs = maintenance.verify(conn, user_id)
            return {
                "user_id": user_id,
                "exact": not diffs,
                "differences": [
                    {
                        "table": d.table,
                        "key": [str(k) for k in d.key],
                        "stored": d.stored,
                        "expected": d.expected,
                    }
                    for d in diffs[:50]
                ],
            }
    raise ValueError(f"unknown statistics action {action!r}: use verify or rebuild")
