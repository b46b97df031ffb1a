"""The local runtime's queue consumers against the AWS emulator: batches, partial failures,
redrive to the dead-letter queue, and S3 notifications delivered through SQS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from devtools.local.resources import create_resources
from devtools.local.runtime import Runtime
from infra.wiring import BucketNotification, Function, Queue, QueueTrigger, Wiring
from myi import aws
from myi.settings import Settings

# A consumer that records what it saw and fails messages whose body asks for it, reporting them
# as partial batch failures the way Powertools' BatchProcessor does.
HANDLER = """
import json, os

def lambda_handler(event, context):
    failures = []
    with open(os.environ["MYI_TEST_SEEN"], "a") as out:
        for record in event["Records"]:
            out.write(json.dumps({"id": record["messageId"], "body": record["body"],
                                  "remaining": context.get_remaining_time_in_millis()}) + "\\n")
            if "fail" in record["body"]:
                failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
"""

WIRING = Wiring(
    functions=(
        Function(
            "recorder",
            "records messages",
            timeout_s=10,
            memory_mb=128,
            queue=QueueTrigger("work", batch_size=3, max_concurrency=2),
        ),
    ),
    queues=(Queue("work", max_receives=2),),
    bucket_notifications=(BucketNotification(bucket="imports", queue="work", prefix="uploads/"),),
)


@pytest.fixture
def runtime(aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    functions = tmp_path / "functions"
    (functions / "recorder").mkdir(parents=True)
    (functions / "recorder" / "handler.py").write_text(HANDLER)
    seen = tmp_path / "seen.jsonl"
    seen.touch()
    monkeypatch.setenv("MYI_TEST_SEEN", str(seen))
    stage = f"q{int(time.time() * 1000) % 10**8}"
    settings = Settings.from_env().replace(stage=stage, import_bucket=f"myi-{stage}")
    env = create_resources(settings, WIRING)
    rt = Runtime(
        settings=settings,
        queue_urls={"work": env["WORK_QUEUE_URL"]},
        wiring=WIRING,
        port=0,
        schedules_enabled=False,
        functions_dir=functions,
    )
    rt.dlq_url = env["WORK_DLQ_URL"]  # type: ignore[attr-defined]
    rt.seen = seen  # type: ignore[attr-defined]
    rt.start()
    yield rt
    rt.stop()


def _seen(rt: Runtime) -> list[dict]:
    """What the consumer saw, without the s3:TestEvent S3 sends when notifications are set up."""
    lines = rt.seen.read_text().splitlines()  # type: ignore[attr-defined]
    return [r for r in map(json.loads, lines) if "s3:TestEvent" not in r["body"]]


def test_messages_reach_their_consumer_and_leave_the_queue(runtime: Runtime) -> None:
    sqs = aws.client("sqs")
    for i in range(5):
        sqs.send_message(QueueUrl=runtime.queue_urls["work"], MessageBody=f"hello {i}")
    drained, depths = runtime.drain(30)
    assert drained, depths
    bodies = sorted(r["body"] for r in _seen(runtime))
    assert bodies == [f"hello {i}" for i in range(5)]
    assert all(0 < r["remaining"] <= 10_000 for r in _seen(runtime))


def test_a_failing_message_is_retried_then_lands_in_the_dead_letter_queue(runtime: Runtime) -> None:
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=runtime.queue_urls["work"], MessageBody="ok")
    sqs.send_message(QueueUrl=runtime.queue_urls["work"], MessageBody="please fail")
    drained, depths = runtime.drain(30)
    assert drained, depths
    attempts = [r for r in _seen(runtime) if r["body"] == "please fail"]
    assert len(attempts) == 2  # max_receives of the wiring
    assert [r["body"] for r in _seen(runtime)].count("ok") == 1
    dead = sqs.receive_message(QueueUrl=runtime.dlq_url, WaitTimeSeconds=1)  # type: ignore[attr-defined]
    assert [m["Body"] for m in dead.get("Messages", [])] == ["please fail"]


def test_an_uploaded_object_is_announced_to_the_consumer(runtime: Runtime) -> None:
    s3 = aws.client("s3")
    s3.put_object(Bucket=runtime.settings.import_bucket, Key="uploads/1/x/export.zip", Body=b"zip")
    s3.put_object(Bucket=runtime.settings.import_bucket, Key="elsewhere/y.txt", Body=b"no")
    drained, depths = runtime.drain(30)
    assert drained, depths
    keys = []
    for record in _seen(runtime):
        body = json.loads(record["body"])
        # Keys arrive URL-encoded in S3 events, in the cloud as in the emulator.
        created = [r for r in body.get("Records", []) if r["eventName"].startswith("ObjectCreated")]
        keys += [unquote_plus(r["s3"]["object"]["key"]) for r in created]
    assert keys == ["uploads/1/x/export.zip"]
