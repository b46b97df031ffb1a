"""Signed list cursors: ``next`` is opaque and cannot be forged.

A cursor is ``base64url(mac || json)``, the MAC an HMAC-SHA256 (truncated to 128 bits) over the
list it belongs to, the user and the JSON, so a client can only pass back a cursor MYI gave it, for
the same list and the same user: it cannot choose a window or a keyset position of its own.

The key is ``CURSOR_KEY`` when set; otherwise a random 32-byte key kept in the state table (item
``cursor-key``), written once by whichever function instance needs it first (a conditional put, so
all instances agree) and cached per process. Replacing the key only ends the cursors in flight:
their lists answer 400 and the client starts again from the first page.

:func:`encode` and :func:`decode` are the codec the lists use: a JSON object, sealed with the
settings of this execution environment. Instants travel as integer microseconds since the Unix epoch
(:func:`to_microseconds`); :func:`instant` reads one back, refusing any outside ``EARLIEST`` to
``LATEST``. Whatever a cursor cannot be is refused with :class:`~myi.errors.InvalidRequest`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from myi import aws
from myi.errors import InvalidRequest, Unavailable
from myi.settings import Settings, get_settings
from myi.windows import EPOCH

MAC_BYTES = 16
REFUSED = "Invalid parameter cursor: pass back the value of next unchanged."
# The instants a cursor may carry: a sealed cursor only holds instants MYI wrote, and these bounds
# keep every date computed from them (a month on, a day before) representable.
EARLIEST = EPOCH
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ITEM = "cursor-key"
_keys: dict[tuple[str | None, str], bytes] = {}
_lock = threading.Lock()


def key(settings: Settings) -> bytes:
    """The cursor key of this deployment (see the module's documentation)."""
    if settings.cursor_key:
        return hashlib.sha256(settings.cursor_key.encode()).digest()
    cache = (settings.aws_endpoint_url, settings.state_table)
    with _lock:
        known = _keys.get(cache)
        if known is None:
            try:
                known = _keys[cache] = _stored_key(settings)
            except (BotoCoreError, ClientError) as exc:
                raise Unavailable("Lists cannot be paged just now; try again shortly.", 5) from exc
        return known


def _stored_key(settings: Settings) -> bytes:
    client = aws.client("dynamodb", settings)
    pk = {"pk": {"S": _ITEM}}
    item = client.get_item(TableName=settings.state_table, Key=pk, ConsistentRead=True).get("Item")
    if item is None:
        # another instance may have written it first: theirs is read back
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.put_item(
                TableName=settings.state_table,
                Item={**pk, "key": {"B": os.urandom(32)}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        item = client.get_item(TableName=settings.state_table, Key=pk, ConsistentRead=True)["Item"]
    return bytes(item["key"]["B"])


def _mac(secret: bytes, list_name: str, user_id: int, raw: bytes) -> bytes:
    message = f"{list_name}\0{user_id}\0".encode() + raw
    return hmac.new(secret, message, hashlib.sha256).digest()[:MAC_BYTES]


def seal(settings: Settings, list_name: str, user_id: int, payload: Any) -> str:
    """The cursor of ``payload`` for ``user_id``'s list ``list_name``."""
    raw = json.dumps(payload, separators=(",", ":")).encode()
    sealed = _mac(key(settings), list_name, user_id, raw) + raw
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def unseal(settings: Settings, list_name: str, user_id: int, cursor: str) -> Any:
    """The payload of a cursor :func:`seal` made for this list and user; anything else is 400."""
    refused = InvalidRequest(REFUSED)
    try:
        data = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
    except (ValueError, binascii.Error, UnicodeError):
        raise refused from None
    mac, raw = data[:MAC_BYTES], data[MAC_BYTES:]
    if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, _mac(key(settings), list_name, user_id, raw)):
        raise refused
    try:
        return json.loads(raw)
    except ValueError:  # not from MYI after all
        raise refused from None


# --- the codec of the lists ------------------------------------------------------------------------


def encode(list_name: str, user_id: int, payload: Mapping[str, Any], settings: Settings | None = None) -> str:
    """The cursor of ``payload`` (a JSON object) for ``user_id``'s list ``list_name``."""
    return seal(settings or get_settings(), list_name, user_id, dict(payload))


def decode(list_name: str, user_id: int, cursor: str, settings: Settings | None = None) -> dict[str, Any]:
    """The payload of a cursor :func:`encode` made for this list and user: anything else, or a
    payload that is not an object, is :class:`InvalidRequest`."""
    value = unseal(settings or get_settings(), list_name, user_id, cursor)
    if not isinstance(value, dict):
        raise InvalidRequest(REFUSED)
    return value


def to_microseconds(at: datetime | None) -> int | None:
    """``at`` (an aware datetime) as integer microseconds since the Unix epoch; None stays None."""
    return None if at is None else (at - EPOCH) // _MICROSECOND


def from_microseconds(value: Any) -> datetime | None:
    """The instant :func:`to_microseconds` wrote (None stays None); anything but an integer, or an
    instant outside ``EARLIEST`` to ``LATEST``, is :class:`InvalidRequest`."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(REFUSED)
    try:
        at = EPOCH + value * _MICROSECOND
    except OverflowError:
        raise InvalidRequest(REFUSED) from None
    if not EARLIEST <= at <= LATEST:
        raise InvalidRequest(REFUSED)
    return at


def instant(value: Any) -> datetime:
    """A required instant of a cursor (see :func:`from_microseconds`): None is refused too."""
    at = from_microseconds(value)
    if at is None:
        raise InvalidRequest(REFUSED)
    return at


def encode_newest_first(list_name: str, user_id: int, created_at: datetime, row_id: uuid.UUID) -> str:
    """The cursor of a list of jobs read newest first by ``(created_at, id)``: the last row's key."""
    return encode(list_name, user_id, {"at": to_microseconds(created_at), "id": str(row_id)})


def decode_newest_first(list_name: str, user_id: int, cursor: str) -> tuple[datetime, uuid.UUID]:
    """The key :func:`encode_newest_first` wrote for this list and user; anything else is
    :class:`InvalidRequest`."""
    payload = decode(list_name, user_id, cursor)
    try:
        return instant(payload.get("at")), uuid.UUID(payload.get("id"))
    except (ValueError, TypeError, AttributeError):  # AttributeError: not a string (uuid)
        raise InvalidRequest(REFUSED) from None
