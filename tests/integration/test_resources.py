"""The emulated resources the local runtime and the tests share are created from the wiring."""

from __future__ import annotations

import json

from infra.wiring import WIRING
from myi import aws
from myi.local.resources import create_resources
from myi.settings import Settings


def test_every_queue_of_the_wiring_exists_with_a_dead_letter_queue(aws_resources: dict[str, str]) -> None:
    sqs = aws.client("sqs")
    for queue in WIRING.queues:
        url = aws_resources[queue.env_var]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        policy = json.loads(attrs["RedrivePolicy"])
        assert int(policy["maxReceiveCount"]) == queue.max_receives
        assert policy["deadLetterTargetArn"].endswith("-dlq")
        assert int(attrs["VisibilityTimeout"]) >= 6 * WIRING.consumer_of(queue.name).timeout_s


def test_creating_resources_twice_is_harmless(aws_resources: dict[str, str]) -> None:
    again = create_resources(Settings.from_env())
    assert again == aws_resources
    table = aws.client("dynamodb").describe_time_to_live(TableName=aws_resources["STATE_TABLE"])
    assert table["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
