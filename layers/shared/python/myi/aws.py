"""AWS clients, created once per execution environment and lazily, honouring AWS_ENDPOINT_URL."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from typing import Any

import boto3
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError

from myi.settings import Settings, get_settings

_lock = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


# Connections each client keeps: as many as the most calls one function makes at once (the sync
# fan-out's senders, myi.sync.SENDERS), so none is opened and dropped per call.
MAX_POOL_CONNECTIONS = 32


def _client_config() -> Config:
    return Config(
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=3,
        read_timeout=10,
        max_pool_connections=MAX_POOL_CONNECTIONS,
    )


@functools.lru_cache(maxsize=32)
def _cached_client(service: str, region: str, endpoint_url: str | None) -> Any:
    with _lock:  # boto3 session creation of clients is not thread-safe
        session: Any = _session()
        return session.client(service, region_name=region, endpoint_url=endpoint_url, config=_client_config())


def client(service: str, settings: Settings | None = None) -> Any:
    """A boto3 client for ``service``, pointed at the emulator when ``AWS_ENDPOINT_URL`` is set."""
    s = settings or get_settings()
    return _cached_client(service, s.region, s.aws_endpoint_url)


class QueueBatchSender:
    """SQS's ``SendMessageBatch`` (its JSON protocol, signed by botocore's SigV4 signer) with none
    of a botocore client's per-call machinery: event hooks, model-driven serialising and parsing
    cost a millisecond of CPU per call, which bounds the sync fan-out's rate; this costs about half.
    It answers as the client does (``Successful`` and ``Failed``; a refused call raises
    :class:`ClientError` with SQS's error code), checks each accepted body's MD5 as botocore does,
    and retries 5xx answers and connection failures a few times (a message sent twice is harmless
    to the sync worker). Credentials come from the same chain as every client's, per call, so
    rotated ones are picked up."""

    def __init__(self, region: str, endpoint_url: str, credentials: Any, *, read_timeout: float = 10) -> None:
        self._url = endpoint_url.rstrip("/") + "/"
        self._region = region
        self._credentials = credentials
        self._pool = urllib3.PoolManager(
            maxsize=MAX_POOL_CONNECTIONS,
            timeout=urllib3.Timeout(connect=3, read=read_timeout),
            retries=urllib3.Retry(
                total=3,
                backoff_factor=0.1,
                status_forcelist=(500, 502, 503, 504),
                allowed_methods=None,
                raise_on_status=False,
            ),
        )

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        body = json.dumps({"QueueUrl": QueueUrl, "Entries": Entries})
        request = AWSRequest(
            "POST",
            self._url,
            data=body,
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": "AmazonSQS.SendMessageBatch",
            },
        )
        if self._credentials is None:
            raise NoCredentialsError()
        SigV4Auth(self._credentials.get_frozen_credentials(), "sqs", self._region).add_auth(request)
        response = self._pool.request(
            "POST", self._url, body=body.encode(), headers=dict(request.headers.items())
        )
        try:
            out: dict[str, Any] = json.loads(response.data or b"{}")
        except ValueError:
            out = {}
        if response.status != 200:
            code = str(out.get("__type") or f"HTTP{response.status}").rpartition("#")[2]
            message = str(out.get("message") or out.get("Message") or "")
            error: Any = {
                "Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": response.status},
            }
            raise ClientError(error, "SendMessageBatch")
        bodies = {str(e["Id"]): str(e["MessageBody"]) for e in Entries}
        for accepted in out.get("Successful") or []:
            sent = bodies.get(str(accepted.get("Id")), "")
            if hashlib.md5(sent.encode()).hexdigest() != accepted.get("MD5OfMessageBody"):  # noqa: S324 - SQS's checksum
                error = {"Error": {"Code": "ChecksumMismatch", "Message": "a message body's MD5 differs"}}
                raise ClientError(error, "SendMessageBatch")
        return {"Successful": list(out.get("Successful") or []), "Failed": list(out.get("Failed") or [])}


@functools.lru_cache(maxsize=8)
def _cached_sender(region: str, endpoint_url: str | None) -> QueueBatchSender:
    sqs = _cached_client("sqs", region, endpoint_url)
    with _lock:
        credentials = _session().get_credentials()
    return QueueBatchSender(region, endpoint_url or sqs.meta.endpoint_url, credentials)


def queue_batch_sender(settings: Settings | None = None) -> QueueBatchSender:
    """The :class:`QueueBatchSender` of this execution environment."""
    s = settings or get_settings()
    return _cached_sender(s.region, s.aws_endpoint_url)


def reset_clients() -> None:
    """Forget cached clients (tests that switch endpoints)."""
    _cached_sender.cache_clear()
    _cached_client.cache_clear()
    _session.cache_clear()
