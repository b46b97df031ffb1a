"""AWS clients, created once per execution environment and lazily, honouring AWS_ENDPOINT_URL."""

from __future__ import annotations

import functools
import threading
from typing import Any

import boto3
from botocore.config import Config

from myi.settings import Settings, get_settings

_lock = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


# Connections each client keeps: as many as the most calls one function makes at once on one client
# (the sync fan-out's threads sharing the SQS client, myi.sync.SENDERS), so none is opened and
# dropped per call.
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


def reset_clients() -> None:
    """Forget cached clients (tests that switch endpoints)."""
    _cached_client.cache_clear()
    _session.cache_clear()
