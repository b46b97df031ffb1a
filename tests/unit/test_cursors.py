"""List cursors (``myi.cursors``): sealed payloads round-trip, anything else is refused with
``InvalidRequest``. The key comes from the settings (``CURSOR_KEY``): no AWS."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from myi import cursors
from myi.errors import InvalidRequest
from myi.settings import Settings, get_settings

SETTINGS = Settings(cursor_key="unit-test-cursor-key")
USER = 42
TOP = {"kind": "tracks", "by": "plays", "rank": 20, "key": [31, 7_200_000, 9], "window": [1, 2]}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


def refused(cursor: str, list_name: str = "top", user_id: int = USER, settings: Settings = SETTINGS) -> bool:
    with pytest.raises(InvalidRequest) as caught:
        cursors.decode(list_name, user_id, cursor, settings)
    return "cursor" in caught.value.message


# --- round trips -------------------------------------------------------------------------------------


def test_a_cursor_round_trips_and_is_url_safe() -> None:
    cursor = cursors.encode("top", USER, TOP, SETTINGS)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    assert cursors.decode("top", USER, cursor, SETTINGS) == TOP


def test_the_same_key_opens_it_in_another_execution_environment() -> None:
    cursor = cursors.encode("history", USER, {"at": 5, "track": 1}, SETTINGS)
    again = Settings.from_env({"CURSOR_KEY": "unit-test-cursor-key"})
    assert cursors.decode("history", USER, cursor, again) == {"at": 5, "track": 1}


def test_the_codec_uses_the_settings_of_the_execution_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURSOR_KEY", "unit-test-cursor-key")
    get_settings.cache_clear()
    try:
        cursor = cursors.encode("top", USER, TOP)
        assert cursors.decode("top", USER, cursor) == TOP
    finally:
        get_settings.cache_clear()
    assert cursors.decode("top", USER, cursor, SETTINGS) == TOP


# --- refused: not MYI's, or not for this list and user ---------------------------------------------


@pytest.mark.parametrize("where", [0, cursors.MAC_BYTES - 1, cursors.MAC_BYTES, -1])
def test_a_tampered_cursor_is_refused(where: int) -> None:
    raw = bytearray(unb64(cursors.encode("top", USER, TOP, SETTINGS)))
    raw[where] ^= 0x01
    assert refused(b64(bytes(raw)))


def test_a_payload_changed_under_its_mac_is_refused() -> None:
    raw = unb64(cursors.encode("top", USER, TOP, SETTINGS))
    mac, payload = raw[: cursors.MAC_BYTES], json.loads(raw[cursors.MAC_BYTES :])
    payload["window"] = [0, 1]  # a window of the client's choosing
    assert refused(b64(mac + json.dumps(payload, separators=(",", ":")).encode()))
    assert refused(b64(raw[:-1])) and refused(b64(raw + b" "))


def test_another_users_cursor_is_refused() -> None:
    assert refused(cursors.encode("top", USER + 1, TOP, SETTINGS))


def test_another_lists_cursor_is_refused() -> None:
    assert refused(cursors.encode("history", USER, TOP, SETTINGS), "top")
    assert refused(cursors.encode("top", USER, TOP, SETTINGS), "history")


def test_a_cursor_sealed_with_another_key_is_refused() -> None:
    assert refused(cursors.encode("top", USER, TOP, Settings(cursor_key="another key")))


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%",
        "é",
        "a",  # not even one base64 byte
        b64(b"\0" * (cursors.MAC_BYTES - 1)),  # shorter than a MAC
        b64(json.dumps(TOP).encode()),  # a cursor as a client might make one up: no MAC
        b64(b"\0" * cursors.MAC_BYTES + json.dumps(TOP).encode()),  # a MAC of zeros
    ],
)
def test_a_cursor_of_the_wrong_shape_is_refused(cursor: str) -> None:
    assert refused(cursor)


@pytest.mark.parametrize("payload", [[1, 2], "text", 7, None, True])
def test_a_sealed_payload_that_is_not_an_object_is_refused(payload: Any) -> None:
    cursor = cursors.seal(SETTINGS, "top", USER, payload)
    assert cursors.unseal(SETTINGS, "top", USER, cursor) == payload  # seal itself takes any JSON
    assert refused(cursor)


def test_a_sealed_cursor_whose_body_is_not_json_is_refused() -> None:
    raw = b"\xff not json"
    assert refused(b64(cursors._mac(cursors.key(SETTINGS), "top", USER, raw) + raw))


@given(st.text(max_size=80))
def test_no_made_up_cursor_opens_a_list_or_fails_otherwise(cursor: str) -> None:
    with pytest.raises(InvalidRequest):
        cursors.decode("top", USER, cursor, SETTINGS)


# --- instants ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "at",
    [
        cursors.EARLIEST,
        datetime(2024, 3, 31, 1, 59, 59, 999_999, tzinfo=UTC),
        datetime(2024, 10, 27, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),  # the first 02:30 of the day
        datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),  # and the second
        cursors.LATEST,
    ],
)
def test_an_instant_round_trips_to_the_microsecond(at: datetime) -> None:
    us = cursors.to_microseconds(at)
    assert isinstance(us, int)
    utc = at.astimezone(UTC)  # (Python never finds an ambiguous local time equal to another zone's)
    assert cursors.instant(us) == utc and cursors.from_microseconds(us) == utc
    assert cursors.instant(json.loads(json.dumps(us))) == utc


def test_both_readings_of_an_ambiguous_local_time_stay_apart() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    first = cursors.to_microseconds(datetime(2024, 10, 27, 2, 30, tzinfo=berlin))
    second = cursors.to_microseconds(datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=berlin))
    assert first is not None and second is not None and second - first == 3600 * 10**6


def test_no_instant_is_none_both_ways() -> None:
    assert cursors.to_microseconds(None) is None and cursors.from_microseconds(None) is None
    assert cursors.to_microseconds(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == 1_000_000


@pytest.mark.parametrize(
    "value",
    [
        None,  # instant() requires one
        -1,  # before the epoch
        cursors.to_microseconds(cursors.LATEST + timedelta(microseconds=1)),
        cursors.to_microseconds(datetime(9999, 12, 31, tzinfo=UTC)),
        10**30,  # not a datetime at all
        -(10**30),
        "1700000000000000",
        1.7e15,
        True,
        [1],
        {"at": 1},
    ],
)
def test_an_instant_out_of_range_or_of_another_type_is_refused(value: Any) -> None:
    with pytest.raises(InvalidRequest):
        cursors.instant(value)
    if value is not None:
        with pytest.raises(InvalidRequest):
            cursors.from_microseconds(value)


@pytest.fixture(autouse=True)
def _no_stored_keys() -> Iterator[None]:
    """These tests never reach the state table: every key here comes from the settings."""
    before = dict(cursors._keys)
    yield
    assert cursors._keys == before


def test_a_job_lists_key_round_trips_and_stays_in_its_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURSOR_KEY", "unit-test-cursor-key")
    get_settings.cache_clear()
    try:
        at, job = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), uuid.uuid4()
        cursor = cursors.encode_newest_first("exports", USER, at, job)
        assert cursors.decode_newest_first("exports", USER, cursor) == (at, job)
        for list_name, user_id in (("imports", USER), ("exports", USER + 1)):
            with pytest.raises(InvalidRequest):
                cursors.decode_newest_first(list_name, user_id, cursor)
        not_a_key = cursors.encode("exports", USER, {"at": cursors.to_microseconds(at), "id": "x"})
        with pytest.raises(InvalidRequest):
            cursors.decode_newest_first("exports", USER, not_a_key)
    finally:
        get_settings.cache_clear()
