"""Emulated AWS resources, created from the wiring: the state table, queues with DLQs, the import
bucket and its notifications, the token-encryption key. Used by the local runtime and the tests.

The key ring can live in a file (``make local``: ``.local/token-key.json``, beside the embedded
PostgreSQL), so that the grants stored in a database that outlives the emulator stay readable: the
secret is created from that file when there is one, else from a new ring that is then saved there
(readable by its owner only)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from infra.wiring import WIRING, Wiring
from myi import aws
from myi.crypto import KeyRing, new_key_ring_secret
from myi.settings import Settings


def create_resources(
    settings: Settings, wiring: Wiring = WIRING, *, key_file: Path | None = None
) -> dict[str, str]:
    """Create (or find) every emulated resource; returns the environment the handlers need
    (queue URLs, table and bucket names). Idempotent. With ``key_file``, a new token-key secret
    holds the key ring of that file (made and saved there first when missing)."""
    env: dict[str, str] = {"STATE_TABLE": settings.state_table, "IMPORT_BUCKET": settings.import_bucket}
    dynamodb = aws.client("dynamodb", settings)
    existing = dynamodb.list_tables().get("TableNames", [])
    if settings.state_table not in existing:
        dynamodb.create_table(
            TableName=settings.state_table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.update_time_to_live(
            TableName=settings.state_table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
        )

    sqs = aws.client("sqs", settings)
    queue_urls: dict[str, str] = {}
    for queue in wiring.queues:
        consumer = wiring.consumer_of(queue.name)
        dlq_url = sqs.create_queue(QueueName=_queue_name(settings, queue.name) + "-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        url = sqs.create_queue(
            QueueName=_queue_name(settings, queue.name),
            Attributes={
                "VisibilityTimeout": str(consumer.timeout_s * 6),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue.max_receives)}
                ),
            },
        )["QueueUrl"]
        queue_urls[queue.name] = url
        env[queue.env_var] = url
        env[queue.env_var.replace("_QUEUE_URL", "_DLQ_URL")] = dlq_url

    s3 = aws.client("s3", settings)
    try:
        s3.head_bucket(Bucket=settings.import_bucket)
    except s3.exceptions.ClientError:
        s3.create_bucket(Bucket=settings.import_bucket)
    # The SPA posts uploads straight to the bucket, cross-origin, as in the cloud.
    s3.put_bucket_cors(
        Bucket=settings.import_bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedMethods": ["POST"],
                    "AllowedOrigins": list(settings.allowed_origins),
                    "AllowedHeaders": ["*"],
                    "MaxAgeSeconds": 3000,
                }
            ]
        },
    )
    configs = []
    for note in wiring.bucket_notifications:
        arn = sqs.get_queue_attributes(QueueUrl=queue_urls[note.queue], AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        config: dict[str, Any] = {"QueueArn": arn, "Events": list(note.events)}
        if note.prefix:
            config["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": note.prefix}]}}
        configs.append(config)
    if configs:
        s3.put_bucket_notification_configuration(
            Bucket=settings.import_bucket, NotificationConfiguration={"QueueConfigurations": configs}
        )

    secrets = aws.client("secretsmanager", settings)
    try:
        secrets.describe_secret(SecretId=settings.token_key_secret_id)
    except secrets.exceptions.ResourceNotFoundException:
        ring = new_key_ring_secret() if key_file is None else load_or_create_key_file(key_file)
        secrets.create_secret(Name=settings.token_key_secret_id, SecretString=ring)
    return env


def load_or_create_key_file(path: Path) -> str:
    """The key ring saved in ``path``; a new one is written there (mode 0600) when it does not exist.
    A file that is not a key ring is an error, never replaced: the grants may depend on it."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = new_key_ring_secret()
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        try:
            os.link(draft, path)  # whole, and never over a ring another start saved meanwhile
        except FileExistsError:
            text = path.read_text()
        finally:
            draft.unlink()
    KeyRing.from_secret(text)
    return text


def _queue_name(settings: Settings, name: str) -> str:
    return f"myi-{settings.stage}-{name.replace('_', '-')}"
