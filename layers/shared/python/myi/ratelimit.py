"""Counters in DynamoDB: fixed (or approximately rolling) windows with a TTL, incremented atomically.

One item per key and window, ``pk = "rl#<key>#<window start>"``; an ``ADD`` with a condition takes
one unit only while the window has room, so concurrent callers (every Lambda of every function) share
one budget without a read-modify-write race. DynamoDB's TTL removes spent windows. Used for logins
per client IP, manual syncs per user and the app-wide Spotify request budget.

A key can also be closed for a while (an upstream ``Retry-After``): :meth:`RateLimiter.block`
writes the time it opens again to the key's pause item and to the window items of now and of the
next window, whose condition refuses every take before it. A ``pausable`` take reads the pause item
only at its first take in a window (a pause longer than two windows is found there), so a take
costs one DynamoDB call, not two.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from myi import aws
from myi.errors import RateLimited
from myi.settings import Settings

# (table, window item) -> the units a window ended with, once read: nobody adds to it any more.
_CLOSED: dict[tuple[str, str], int] = {}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    count: int  # units taken in this window, this one included when allowed
    retry_after_s: int  # seconds until the window ends, or the pause (0 when allowed)
    paused: bool = False  # refused because the key is closed (see RateLimiter.block)


class RateLimiter:
    def __init__(
        self, settings: Settings, *, client: Any = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._table = settings.state_table
        self._client = client or aws.client("dynamodb", settings)
        self._clock = clock
        self._pause_read: dict[str, float] = {}  # key -> the window whose first take read its pause

    def take(
        self,
        key: str,
        *,
        limit: int,
        window_s: int,
        units: int = 1,
        rolling: bool = False,
        pausable: bool = False,
    ) -> Decision:
        """Take ``units`` from ``key``'s budget of ``limit`` per ``window_s`` seconds.

        ``rolling`` approximates a window that slides with time rather than restarting: the previous
        window still counts in proportion to how much of it the sliding window covers, so no span of
        ``window_s`` seconds ever sees much more than ``limit`` (a fixed window allows up to twice
        that around its boundary). Suited to large budgets such as Spotify's per-app one.

        Every take is refused while the window's item is closed by :meth:`block` (blocked with this
        ``window_s``); a ``pausable`` one also reads the pause item at its first take in each
        window, so a pause longer than the two windows it closed still holds."""
        if limit <= 0:
            return Decision(False, 0, window_s)
        now = self._clock()
        start = math.floor(now / window_s) * window_s
        if pausable and self._pause_read.get(key) != start:
            paused = self.blocked_for(key)
            if paused > 0:
                return Decision(False, limit, max(1, math.ceil(paused)), paused=True)
            self._pause_read[key] = start
        retry_after = max(1, math.ceil(start + window_s - now))
        carried = 0.0
        if rolling:
            before = self._closed_window(key, start - window_s)
            overlap = 1 - (now - start) / window_s
            carried = before * overlap
            if before and carried + units > limit:
                # Enough of the previous window has to slide out before ``units`` fit at all.
                needed = 1 - (limit - units) / before
                retry_after = max(1, min(retry_after, math.ceil((needed - (1 - overlap)) * window_s)))
        room = math.floor(limit - carried) - units
        if room < 0:
            return Decision(False, limit, retry_after)
        try:
            out = self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"rl#{key}#{start}"}},
                UpdateExpression="ADD #n :units SET expires_at = if_not_exists(expires_at, :exp)",
                ConditionExpression="(attribute_not_exists(#n) OR #n <= :room) "
                "AND (attribute_not_exists(#u) OR #u <= :now)",
                ExpressionAttributeNames={"#n": "n", "#u": "until"},
                ExpressionAttributeValues={
                    ":units": {"N": str(units)},
                    ":room": {"N": str(room)},
                    ":now": {"N": f"{now:.3f}"},
                    ":exp": {"N": str(self._expiry(start, window_s))},
                },
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._client.exceptions.ConditionalCheckFailedException as exc:
            until = (exc.response.get("Item") or {}).get("until")
            if until and float(until["N"]) > now:
                return Decision(False, limit, max(1, math.ceil(float(until["N"]) - now)), paused=True)
            return Decision(False, limit, retry_after)
        return Decision(True, int(out["Attributes"]["n"]["N"]), 0)

    def admit(self, key: str, *, limit: int, window_s: int, refusal: str) -> None:
        """Take one from ``key``'s budget, or refuse with :class:`~myi.errors.RateLimited` saying
        ``refusal`` and when to try again."""
        decision = self.take(key, limit=limit, window_s=max(1, window_s))
        if not decision.allowed:
            raise RateLimited(refusal, decision.retry_after_s)

    @staticmethod
    def _expiry(start: float, window_s: int) -> int:
        """When DynamoDB may drop a window's item: once a rolling take no longer reads it."""
        return int(start + 2 * window_s + 60)

    def _closed_window(self, key: str, start: float) -> int:
        """The units a window that has ended took: read once per process, it no longer changes."""
        pk = f"rl#{key}#{start}"
        cached = _CLOSED.get((self._table, pk))
        if cached is None:
            item = self._client.get_item(
                TableName=self._table, Key={"pk": {"S": pk}}, ConsistentRead=True
            ).get("Item")
            cached = int(item["n"]["N"]) if item and "n" in item else 0
            if len(_CLOSED) > 1000:
                _CLOSED.clear()
            _CLOSED[(self._table, pk)] = cached
        return cached

    def block(self, key: str, *, seconds: float, window_s: int | None = None) -> None:
        """Close ``key`` for ``seconds`` (a ``Retry-After`` from upstream), whatever its budget; the
        latest word counts. ``window_s``: the windows of the key's pausable takes, whose items of
        now and of the next window are closed too (a taker that read the pause item before it was
        written finds it there)."""
        now = self._clock()
        until = now + seconds
        self._client.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": f"rl-block#{key}"},
                "until": {"N": f"{until:.3f}"},
                "expires_at": {"N": str(int(until) + 60)},
            },
        )
        if window_s is None:
            return
        start = math.floor(now / window_s) * window_s
        for window in (start, start + window_s):
            self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"rl#{key}#{window}"}},
                UpdateExpression="SET #u = :until, expires_at = if_not_exists(expires_at, :exp)",
                ExpressionAttributeNames={"#u": "until"},
                ExpressionAttributeValues={
                    ":until": {"N": f"{until:.3f}"},
                    ":exp": {"N": str(self._expiry(window, window_s))},
                },
            )

    def blocked_for(self, key: str) -> float:
        """Seconds ``key`` stays closed by :meth:`block` (0 when open)."""
        item = self._client.get_item(
            TableName=self._table, Key={"pk": {"S": f"rl-block#{key}"}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return 0.0
        return max(0.0, float(item["until"]["N"]) - self._clock())
