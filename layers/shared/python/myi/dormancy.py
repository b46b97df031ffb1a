"""Dormancy: when the schedules may leave the database asleep.

Aurora Serverless v2 pauses when nobody connects (``aurora_min_acu`` 0) and every connection wakes
it for at least five minutes, so a schedule that connects every hour only to find nothing to do
keeps a personal deployment's database awake a tenth of the time. The sync fan-out, the import and
enrichment sweeps and the top-list sweep only have work while someone uses MYI, so the state table
keeps one item, the time until which someone may (``awake_until``):

- a sign-in, or a user being seen (``users.last_seen_at`` moving, at most hourly per user), keeps
  MYI awake for ``SYNC_ACTIVE_DAYS`` (the fan-out's window of users seen);
- a new import keeps it awake for a day, and an import sweep that still sees live imports for
  another;
- a fan-out moves it to the newest time a user with a grant was seen plus that window (which heals
  the item of a deployment that predates it).

The time only ever moves later. Once it has passed, those schedules return without connecting.
A missing item (a new deployment, before its first fan-out) or an unreadable table lets them run:
dormancy saves a wake-up, it never skips work someone started.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from myi import aws
from myi.observability import logger
from myi.settings import Settings

KEY = {"pk": {"S": "dormancy"}}


class Dormancy:
    def __init__(self, settings: Settings, *, client: Any = None) -> None:
        self._settings = settings
        self._table = settings.state_table
        self._client = client or aws.client("dynamodb", settings)

    def keep_awake(self, until: datetime) -> None:
        """Someone may need the schedules until ``until`` (an earlier time changes nothing)."""
        stamp = int(until.timestamp())
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            # Failing the condition means: already awake at least that long.
            self._client.update_item(
                TableName=self._table,
                Key=KEY,
                UpdateExpression="SET awake_until = :until",
                ConditionExpression="attribute_not_exists(awake_until) OR awake_until < :until",
                ExpressionAttributeValues={":until": {"N": str(stamp)}},
            )

    def signed_in(self, now: datetime) -> None:
        self.keep_awake(now + timedelta(days=self._settings.sync_active_days))

    def seen(self, now: datetime) -> None:
        """A signed-in user used MYI (at most hourly per user): as a sign-in, but never a failed
        request because the state table could not be written."""
        try:
            self.signed_in(now)
        except Exception as exc:  # the sweep heals the item; the user's request must not fail
            logger.warning("dormancy not moved on", extra={"reason": type(exc).__name__})

    def importing(self, now: datetime) -> None:
        """An import or an export was started: its sweep runs for a day at least."""
        self.keep_awake(now + timedelta(days=1))

    def awake_until(self) -> datetime | None:
        """The stored time; None when there is none yet."""
        item = self._client.get_item(TableName=self._table, Key=KEY, ConsistentRead=True).get("Item")
        if not item or "awake_until" not in item:
            return None
        return datetime.fromtimestamp(int(item["awake_until"]["N"]), UTC)

    def dormant(self, now: datetime | None = None) -> bool:
        """Whether the schedules may skip their run: nobody can have work for them now."""
        try:
            until = self.awake_until()
        except Exception as exc:  # an unreadable table means "run", never "skip"
            logger.warning("dormancy unknown; running", extra={"reason": type(exc).__name__})
            return False
        if until is None:
            return False
        dormant = (now or datetime.now(UTC)) >= until
        if dormant:
            logger.info("dormant: the database is left asleep", extra={"awake_until": until.isoformat()})
        return dormant
