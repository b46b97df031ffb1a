"""Migrations on every deploy (a CloudFormation custom resource): applies the pending migrations,
creates this month's partitions and the ones ahead, and gives a new token-key secret its first
key. Deleting the stack changes nothing in the database."""

from datetime import UTC, datetime

from aws_lambda_powertools.utilities.typing import LambdaContext

from myi import crypto, db, migrate, partitions
from myi.observability import logger, tracer
from myi.settings import get_settings


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
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
