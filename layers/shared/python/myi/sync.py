"""Listening sync: the fan-out that picks who to sync, and the worker that syncs one user.

Spotify offers no push and ``recently-played`` holds only the latest 50 plays, so MYI polls: the
``sync-fanout`` schedule enqueues every user who is due (a valid grant, a login within
``SYNC_ACTIVE_DAYS``, the last sync older than ``SYNC_COOLDOWN_SECONDS`` and their own adaptive
``next_sync_at`` reached), and the worker reads ``recently-played`` after the user's cursor,
ingests the plays (source ``api``, ``ms_played`` estimated) and moves the cursor, in the
transaction that stores them.

Cadence adapts per user: a full page (50 plays since the last sync) halves the user's interval and
re-enqueues them at once to read on; a quiet page lengthens it. A full page after a cursor may
mean plays were lost before MYI saw them: it is counted in ``users.sync_gaps`` and logged.

The message that reads on carries its cursor (``after``: the page's newest play, in ms), so it is
sent while the page is being stored (once it is staged, while the database writes it): delivered
before that commit, it reads on from the page it follows all the same. It moves the user's cursor
only once the sync it follows has moved it that far: should storing that page fail, the message
that fetched it comes back and fetches it again from the cursor, which has not moved, so no play
is lost.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from myi import enrichment
from myi.auth.tokens import GrantUnavailable, TokenManager
from myi.ingestion import IngestResult, ingest
from myi.observability import logger, metrics
from myi.plays import Play
from myi.settings import Settings
from myi.spotify.client import SpotifyClient
from myi.spotify.errors import SpotifyRateLimited

PAGE = 50
MIN_INTERVAL_S = 300
MAX_SQS_DELAY_S = 900
# The fan-out's SendMessageBatch calls in flight: at 10 to 20 ms each, 32 send 100,000 users in
# a few seconds. (The AWS clients' connection pools hold as many: see myi.aws.)
SENDERS = 32


@dataclass
class SyncDeps:
    settings: Settings
    conn: psycopg.Connection[Any]
    sqs: Any
    spotify: SpotifyClient
    tokens: TokenManager
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    rng: random.Random = field(default_factory=random.Random)


@dataclass(frozen=True)
class SyncOutcome:
    status: str  # synced | no_grant | no_user | rate_limited
    result: IngestResult = field(default_factory=IngestResult)
    fetched: int = 0
    requeued: bool = False


def _queue(settings: Settings) -> str:
    return str(settings.require("sync_queue_url", "SYNC_QUEUE_URL"))


def enqueue(
    deps_sqs: Any, settings: Settings, user_id: int, delay_s: int = 0, *, after_ms: int | None = None
) -> None:
    """A sync of ``user_id`` (reading on from ``after_ms`` at least, when given)."""
    deps_sqs.send_message(
        QueueUrl=_queue(settings),
        MessageBody=_body(user_id, after_ms),
        DelaySeconds=max(0, min(MAX_SQS_DELAY_S, int(delay_s))),
    )


def _body(user_id: int, after_ms: int | None = None) -> str:
    """A sync queue message (read by :func:`handle_message`)."""
    body: dict[str, int] = {"user_id": user_id}
    if after_ms is not None:
        body["after"] = after_ms
    return json.dumps(body)


@functools.cache
def _sender() -> ThreadPoolExecutor:
    """The thread that sends a read-on message while the worker stores the page it follows."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="myi-sync-read-on")


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000)


_LAST_MS = 253_402_300_799_999  # 9999-12-31 23:59:59.999 UTC, the last millisecond a datetime holds


def sync_user(deps: SyncDeps, user_id: int, *, after_ms: int | None = None) -> SyncOutcome:
    """One sync of one user: read on from their cursor (or from ``after_ms``, a read-on message's,
    when that is later), ingest, move the cursor and the cadence."""
    conn, s = deps.conn, deps.settings
    row = conn.execute("SELECT sync_cursor, sync_interval_s FROM users WHERE id = %s", (user_id,)).fetchone()
    if row is None:
        logger.info("sync for a user who no longer exists; dropped", extra={"user_id": user_id})
        return SyncOutcome("no_user")
    cursor, interval = row[0], row[1] or s.sync_cooldown_s or MIN_INTERVAL_S
    follows = None if after_ms is None else _at(after_ms)
    if follows is not None and (cursor is None or follows > cursor):
        cursor = follows
    try:
        page = deps.spotify.recently_played(
            deps.tokens.token_source(user_id), after_ms=_ms(cursor) if cursor else None
        )
    except GrantUnavailable:
        logger.info(
            "no usable grant; the user is not synced until they sign in again", extra={"user_id": user_id}
        )
        return SyncOutcome("no_grant")
    except SpotifyRateLimited as exc:
        delay = int(exc.retry_after_s or 1) + deps.rng.randint(0, 10)
        enqueue(deps.sqs, s, user_id, delay)
        logger.info("Spotify rate limit: sync retried later", extra={"user_id": user_id, "delay_s": delay})
        return SyncOutcome("rate_limited", requeued=True)
    full = len(page) >= PAGE
    newest = max((p.played_at for p in page), default=None)
    read_on: list[Future[None]] = []

    def send_read_on() -> None:
        if full and newest is not None:
            delay = deps.rng.randint(0, 5)
            read_on.append(_sender().submit(enqueue, deps.sqs, s, user_id, delay, after_ms=_ms(newest)))

    now = deps.clock()
    gap = full and cursor is not None
    interval = (
        max(MIN_INTERVAL_S, interval // 2) if full else min(max(s.sync_cooldown_s, 3600), int(interval * 1.5))
    )
    # The cursor and the cadence move in the transaction that stores the page.
    moved = (
        """
        UPDATE users SET last_ingested_at = %(now)s,
               sync_cursor = CASE WHEN %(follows)s::timestamptz IS NULL OR sync_cursor >= %(follows)s
                                  THEN GREATEST(sync_cursor, %(newest)s) ELSE sync_cursor END,
               sync_interval_s = %(interval)s, next_sync_at = %(next)s,
               sync_full_pages = sync_full_pages + %(full)s, sync_gaps = sync_gaps + %(gap)s
         WHERE id = %(user)s
        """,
        {
            "now": now,
            "newest": newest,
            "follows": follows,
            "interval": interval,
            "next": now + timedelta(seconds=interval),
            "full": int(full),
            "gap": int(gap),
            "user": user_id,
        },
    )
    plays = [Play(p.track, p.played_at, "api", None) for p in page]
    try:
        if plays:
            result = ingest(conn, user_id, plays, on_staged=send_read_on, and_then=moved)
        else:
            conn.execute(*moved)
            result = IngestResult()
    finally:
        wait(read_on)  # no send outlives its message
    for sent in read_on:
        sent.result()  # a failed send fails the message: it comes back and reads on from the cursor
    if gap:
        oldest = min(p.played_at for p in page)
        logger.warning(
            "full recently-played page after the cursor: plays before it may be lost",
            extra={"user_id": user_id, "window_from": cursor.isoformat(), "window_to": oldest.isoformat()},
        )
        metrics.add_metric(name="SyncPossibleGaps", unit="Count", value=1)
    if result.gaps:  # new tracks or artists to complete
        enrichment.request(deps.sqs, s)
    return SyncOutcome("synced", result, len(page), requeued=full)


def handle_message(deps: SyncDeps, body: str) -> SyncOutcome | None:
    try:
        message = json.loads(body)
        user_id = int(message["user_id"])
        after = message.get("after")
        after_ms = None if after is None else int(after)
        if after_ms is not None and not 0 <= after_ms <= _LAST_MS:
            raise ValueError(after_ms)
    except (ValueError, KeyError, TypeError, AttributeError):
        logger.warning("sync queue message without a user id or with a bad cursor; dropped")
        return None
    return sync_user(deps, user_id, after_ms=after_ms)


def _claimed_until(settings: Settings, now: datetime) -> datetime:
    """Until when a fan-out started at ``now`` claims the users it selects."""
    return now + timedelta(seconds=max(settings.sync_cooldown_s, 60))


def due_pages(settings: Settings, conn: psycopg.Connection[Any], now: datetime) -> Iterator[list[int]]:
    """The ids of every user who is due, a page (``SYNC_FANOUT_PAGE_SIZE``) at a time. Each page is
    claimed in the statement that selects it (their ``next_sync_at`` moves on), so overlapping
    fan-outs never enqueue a user twice."""
    last_id = 0
    while True:
        rows = conn.execute(
            """
            WITH due AS (
                SELECT u.id FROM users u
                  JOIN spotify_auth a ON a.user_id = u.id AND a.is_valid
                 WHERE u.id > %(after)s AND u.last_login_at >= %(active)s
                   AND (u.last_ingested_at IS NULL OR u.last_ingested_at <= %(cool)s)
                   AND (u.next_sync_at IS NULL OR u.next_sync_at <= %(now)s)
                 ORDER BY u.id LIMIT %(page)s
            )
            UPDATE users u SET next_sync_at = %(claimed)s FROM due WHERE u.id = due.id RETURNING u.id
            """,
            {
                "after": last_id,
                "active": now - timedelta(days=settings.sync_active_days),
                "cool": now - timedelta(seconds=settings.sync_cooldown_s),
                "now": now,
                "page": settings.sync_fanout_page_size,
                "claimed": _claimed_until(settings, now),
            },
        ).fetchall()
        if not rows:
            return
        ids = sorted(int(r[0]) for r in rows)
        last_id = ids[-1]
        yield ids


def fanout(
    settings: Settings,
    conn: psycopg.Connection[Any],
    sqs: Any,
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> int:
    """Enqueue every user who is due (:func:`due_pages`), ten per ``SendMessageBatch`` and
    ``SENDERS`` calls at a time, each page claimed while the one before it is being sent; returns
    how many. A user whose message was not sent (an entry the queue refused, or a call that
    failed) is released at once, due for the next fan-out instead of waiting out the claim. A
    failed call (of whatever kind) stops the fan-out: its page, and the next one (claimed, not
    sent), are released and its error is raised. ``sqs`` is anything with the SQS client's
    ``send_message_batch``; the function sends through :class:`myi.aws.QueueBatchSender`."""
    now = now or datetime.now(UTC)
    rng = rng or random.Random()  # noqa: S311 - spreading load, not secrets
    queue = _queue(settings)

    def send(batch: list[int]) -> list[int]:
        """Sends ``batch``; returns the users whose entries the queue refused."""
        entries = [
            {
                "Id": str(uid),
                "MessageBody": _body(uid),
                "DelaySeconds": rng.randint(0, max(0, settings.sync_max_delay_s)),
            }
            for uid in batch
        ]
        out = sqs.send_message_batch(QueueUrl=queue, Entries=entries)
        refused = {str(f.get("Id")) for f in out.get("Failed") or []}
        return [uid for uid in batch if str(uid) in refused]

    def settle(
        ids: list[int], futures: list[tuple[list[int], Future[list[int]]]]
    ) -> tuple[int, Exception | None]:
        """Waits for a page's calls and releases its unsent users; returns how many were sent,
        and the first call's error."""
        unsent: list[int] = []
        error: Exception | None = None
        for batch, future in futures:
            try:
                unsent += future.result()
            except Exception as exc:  # any failure: the batch counts as unsent (a resend is harmless)
                unsent += batch
                error = error or exc
        if unsent:
            _release(settings, conn, now, unsent)
            logger.warning("some sync messages were not sent; released", extra={"users": len(unsent)})
        return len(ids) - len(unsent), error

    sent = 0
    pages = due_pages(settings, conn, now)
    in_flight: tuple[list[int], list[tuple[list[int], Future[list[int]]]]] | None = None
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        while True:
            ids = next(pages, None)  # claimed while the page before it is being sent
            if in_flight is not None:
                done, error = settle(*in_flight)
                sent += done
                if error is not None:
                    if ids:
                        _release(settings, conn, now, ids)  # claimed, never sent
                    raise error
            if ids is None:
                break
            batches = [ids[i : i + 10] for i in range(0, len(ids), 10)]
            in_flight = (ids, [(b, pool.submit(send, b)) for b in batches])
    logger.info("sync fan-out done", extra={"enqueued": sent})
    return sent


def _release(settings: Settings, conn: psycopg.Connection[Any], now: datetime, user_ids: list[int]) -> None:
    """Undo the fan-out's claim (started at ``now``) on ``user_ids``: due again. A user whose
    cadence moved since (a sync of theirs ran) keeps it."""
    conn.execute(
        "UPDATE users SET next_sync_at = %s WHERE id = ANY (%s) AND next_sync_at = %s",
        (now, user_ids, _claimed_until(settings, now)),
    )


def active_until(settings: Settings, conn: psycopg.Connection[Any]) -> datetime | None:
    """Until when someone may be due: the newest sign-in of a user with a valid grant, plus the
    fan-out's window (``SYNC_ACTIVE_DAYS``); None when nobody has a valid grant."""
    row = conn.execute(
        "SELECT max(u.last_login_at) FROM users u JOIN spotify_auth a ON a.user_id = u.id AND a.is_valid"
    ).fetchone()
    if row is None or row[0] is None:
        return None
    newest: datetime = row[0]
    return newest + timedelta(days=settings.sync_active_days)


def default_deps(settings: Settings) -> SyncDeps:
    """The dependencies of this execution environment."""
    from myi import aws, crypto, db
    from myi.ratelimit import RateLimiter
    from myi.spotify.accounts import AccountsClient
    from myi.spotify.client import Budget

    conn = db.get_connection(settings)
    return SyncDeps(
        settings=settings,
        conn=conn,
        sqs=aws.client("sqs", settings),
        spotify=SpotifyClient(settings, Budget(settings, RateLimiter(settings))),
        tokens=TokenManager(conn, AccountsClient(settings), lambda: crypto.load_keyring(settings)),
    )
