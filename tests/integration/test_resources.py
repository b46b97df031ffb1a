"""The emulated resources the local runtime and the tests share are created from the wiring."""

from __future__ import annotations

import json

from devtools.local.resources import create_resources
from infra.wiring import BucketNotification, Function, Queue, QueueTrigger, Wiring
from myi import aws
from myi.settings import Settings

WIRING = Wiring(
    functions=(
        Function("consumer", "test", timeout_s=20, memory_mb=128, queue=QueueTrigger("work", batch_size=2)),
    ),
    queues=(Queue("work", max_receives=3),),
    bucket_notifications=(BucketNotification(bucket="imports", queue="work", prefix="uploads/"),),
)


def _settings() -> Settings:
    return Settings.from_env().replace(stage="restest", import_bucket="myi-restest")


def test_every_queue_of_the_wiring_exists_with_a_dead_letter_queue(aws_endpoint: str) -> None:
    env = create_resources(_settings(), WIRING)
    sqs = aws.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=env["WORK_QUEUE_URL"], AttributeNames=["All"])["Attributes"]
    policy = json.loads(attrs["RedrivePolicy"])
    assert int(policy["maxReceiveCount"]) == 3
    assert policy["deadLetterTargetArn"].endswith("myi-restest-work-dlq")
    assert int(attrs["VisibilityTimeout"]) == 6 * 20
    assert "WORK_DLQ_URL" in env


def test_the_bucket_announces_new_uploads_to_its_queue(aws_endpoint: str) -> None:
    env = create_resources(_settings(), WIRING)
    config = aws.client("s3").get_bucket_notification_configuration(Bucket="myi-restest")
    [queue_config] = config["QueueConfigurations"]
    assert queue_config["QueueArn"].endswith("myi-restest-work")
    assert env["IMPORT_BUCKET"] == "myi-restest"


def test_creating_resources_twice_is_harmless(aws_endpoint: str) -> None:
    first = create_resources(_settings(), WIRING)
    again = create_resources(_settings(), WIRING)
    assert again == first
    table = aws.client("dynamodb").describe_time_to_live(TableName=first["STATE_TABLE"])
    assert table["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
