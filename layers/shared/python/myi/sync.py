"""Listening sync: the fan-out that picks who to sync, and the worker that syncs one user.

Spotify offers no push and ``recently-played`` holds only the latest 50 plays, so MYI polls: the
``sync-fanout`` schedule enqueues every user who is due (a valid grant, seen within
``SYNC_ACTIVE_DAYS``, their ``next_sync_at`` reached), and the worker reads ``recently-played``
after the user's cursor, ingests the plays (source ``api``, ``ms_played`` estimated) and moves the
cursor, in the transaction that stores them.

The fan-out claims the users it enqueues (``next_sync_at`` moves past the message's delivery), and
the worker, when it finishes, success or failure, sets the next sync time: from the user's own
listening rate (:mod:`myi.cadence`, between ``SYNC_COOLDOWN_SECONDS`` and
``SYNC_MAX_INTERVAL_SECONDS``); after a transient failure, the cooldown with a back-off for
repeated failures; after an ``invalid_grant``, the cooldown (three of them quarantine the grant,
within three fan-outs). A planned sync that would come before the next fan-out is reached by a
delayed message of the worker's own (``due``), which waits on in the queue, without calling
Spotify, until its time. A full page (50 plays since the last sync) re-enqueues the user at once
to read on; after a cursor it may mean plays were lost before MYI saw them: it is counted in
``users.sync_gaps`` and logged.

The message that reads on carries its cursor (``after``: the page's newest play, in ms), so it is
sent while the page is being stored (once it is staged, while the database writes it): delivered
before that commit, it reads on from the page it follows all the same. It moves the user's cursor
only once the sync it follows has moved it that far: should storing that page fail, the message
that fetched it comes back and fetches it again from the cursor, which has not moved, so no play
is lost.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from myi import cadence, enrichment
from myi.auth.tokens import GrantUnavailable, TokenManager
from myi.ingestion import IngestResult, ingest
from myi.observability import logger, metrics
from myi.plays import Play
from myi.settings import Settings
from myi.spotify.client import SpotifyClient
from myi.spotify.errors import SpotifyError, SpotifyRateLimited

PAGE = cadence.PAGE
MAX_SQS_DELAY_S = 900
# How long a message in flight holds its user: a fan-out's (its delay, then a worker's run, or
# SQS's redelivery of a message whose worker died) or a worker's own delayed message.
CLAIM_S = 900
PROFILE_MAX_AGE = timedelta(days=1)
# The fan-out's SendMessageBatch calls in flight, threads sharing one SQS client (boto3's clients
# are thread-safe for calls). Each call costs about a millisecond of this process's CPU (botocore's
# serialising, signing and parsing, under the interpreter's lock) and waits 10 to 20 ms for SQS,
# so some 20 in flight keep that CPU busy; 32 leave room for SQS's slower answers. (The AWS
# clients' connection pools hold as many: see myi.aws.)
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
    status: str  # synced | no_grant | no_user | rate_limited | failed | waiting
    result: IngestResult = field(default_factory=IngestResult)
    fetched: int = 0
    requeued: bool = False


def _queue(settings: Settings) -> str:
    return str(settings.require("sync_queue_url", "SYNC_QUEUE_URL"))


def enqueue(
    deps_sqs: Any,
    settings: Settings,
    user_id: int,
    delay_s: int = 0,
    *,
    after_ms: int | None = None,
    due: int | None = None,
) -> None:
    """A sync of ``user_id`` (reading on from ``after_ms`` at least, when given; not before the
    unix time ``due``, when given: the message waits on in the queue until then)."""
    deps_sqs.send_message(
        QueueUrl=_queue(settings),
        MessageBody=_body(user_id, after_ms, due),
        DelaySeconds=max(0, min(MAX_SQS_DELAY_S, int(delay_s))),
    )


def _body(user_id: int, after_ms: int | None = None, due: int | None = None) -> str:
    """A sync queue message (read by :func:`handle_message`)."""
    body: dict[str, int] = {"user_id": user_id}
    if after_ms is not None:
        body["after"] = after_ms
    if due is not None:
        body["due"] = due
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
    when that is later), ingest, move the cursor and set the next sync time, whatever happens."""
    conn, s = deps.conn, deps.settings
    row = conn.execute(
        "SELECT sync_cursor, last_ingested_at, sync_failures, sync_profile, sync_profile_at "
        "FROM users WHERE id = %s",
        (user_id,),
    ).fetchone()
    if row is None:
        logger.info("sync for a user who no longer exists; dropped", extra={"user_id": user_id})
        return SyncOutcome("no_user")
    cursor, last_synced, failures, rates, profiled_at = row
    follows = None if after_ms is None else _at(after_ms)
    if follows is not None and (cursor is None or follows > cursor):
        cursor = follows
    try:
        page = deps.spotify.recently_played(
            deps.tokens.token_source(user_id), after_ms=_ms(cursor) if cursor else None
        )
    except GrantUnavailable:
        # quarantined, or an invalid_grant counted towards it: due again after the cooldown only,
        # so that a revoked grant is found out within three fan-outs
        _set_next(conn, user_id, deps.clock() + timedelta(seconds=s.sync_cooldown_s))
        logger.info("no usable grant for now", extra={"user_id": user_id})
        return SyncOutcome("no_grant")
    except SpotifyRateLimited as exc:
        delay = int(exc.retry_after_s or 1) + deps.rng.randint(0, 10)
        enqueue(deps.sqs, s, user_id, delay)
        _set_next(conn, user_id, deps.clock() + timedelta(seconds=delay + CLAIM_S))
        logger.info("Spotify rate limit: sync retried later", extra={"user_id": user_id, "delay_s": delay})
        return SyncOutcome("rate_limited", requeued=True)
    except SpotifyError as exc:  # down, or answering nonsense: retried, never mistaken for revocation
        wait_s = cadence.retry_delay(failures + 1, cooldown_s=s.sync_cooldown_s, max_s=s.sync_max_interval_s)
        conn.execute(
            "UPDATE users SET sync_failures = sync_failures + 1, next_sync_at = %s WHERE id = %s",
            (deps.clock() + timedelta(seconds=wait_s), user_id),
        )
        logger.warning(
            "sync failed; retried later",
            extra={
                "user_id": user_id,
                "reason": type(exc).__name__,
                "failures": failures + 1,
                "retry_s": wait_s,
            },
        )
        metrics.add_metric(name="SyncFailures", unit="Count", value=1)
        return SyncOutcome("failed")
    except Exception:
        # not Spotify's doing (the database, a bug): the message comes back, and the user is due
        # again after the cooldown should it not
        with contextlib.suppress(Exception):
            _set_next(conn, user_id, deps.clock() + timedelta(seconds=s.sync_cooldown_s))
        raise
    full = len(page) >= PAGE
    newest = max((p.played_at for p in page), default=None)
    read_on: list[Future[None]] = []

    def send_read_on() -> None:
        if full and newest is not None:
            delay = deps.rng.randint(0, 5)
            read_on.append(_sender().submit(enqueue, deps.sqs, s, user_id, delay, after_ms=_ms(newest)))

    now = deps.clock()
    gap = full and cursor is not None
    # A full page is read on at once, and that sync plans: the profile waits for it.
    if not full and (profiled_at is None or now - profiled_at >= PROFILE_MAX_AGE):
        rates, profiled_at = _profile(conn, user_id, now), now
    since = cadence.page_span(
        now.timestamp(),
        None if last_synced is None else last_synced.timestamp(),
        min(p.played_at for p in page).timestamp() if page else None,
    )
    interval = cadence.next_interval(
        None if rates is None else tuple(rates),
        now,
        recent_rate=cadence.page_rate(len(page), since),
        cooldown_s=s.sync_cooldown_s,
        max_s=s.sync_max_interval_s,
    )
    own = not full and cadence.reaches_before_fanout(interval, s.sync_fanout_period_s)
    due_s = cadence.fanout_due(interval, s.sync_fanout_period_s, s.sync_cooldown_s)
    next_at = now + timedelta(seconds=interval + CLAIM_S if own else due_s)
    # The cursor and the cadence move in the transaction that stores the page.
    moved = (
        """
        UPDATE users SET last_ingested_at = %(now)s,
               sync_cursor = CASE WHEN %(follows)s::timestamptz IS NULL OR sync_cursor >= %(follows)s
                                  THEN GREATEST(sync_cursor, %(newest)s) ELSE sync_cursor END,
               sync_interval_s = %(interval)s, next_sync_at = %(next)s, sync_failures = 0,
               sync_profile = %(rates)s, sync_profile_at = %(profiled_at)s,
               sync_full_pages = sync_full_pages + %(full)s, sync_gaps = sync_gaps + %(gap)s
         WHERE id = %(user)s
        """,
        {
            "now": now,
            "newest": newest,
            "follows": follows,
            "interval": interval,
            "next": next_at,
            "rates": None if rates is None else list(rates),
            "profiled_at": profiled_at,
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
    if own:
        due = int((now + timedelta(seconds=interval)).timestamp())
        enqueue(deps.sqs, s, user_id, interval, due=due)
    if gap:
        oldest = min(p.played_at for p in page)
        logger.warning(
            "full recently-played page after the cursor: plays before it may be lost",
            extra={"user_id": user_id, "window_from": cursor.isoformat(), "window_to": oldest.isoformat()},
        )
        metrics.add_metric(name="SyncPossibleGaps", unit="Count", value=1)
    if result.gaps:  # new tracks or artists to complete
        enrichment.request(deps.sqs, s)
    return SyncOutcome("synced", result, len(page), requeued=full or own)


def _set_next(conn: psycopg.Connection[Any], user_id: int, at: datetime) -> None:
    conn.execute("UPDATE users SET next_sync_at = %s WHERE id = %s", (at, user_id))


def _profile(conn: psycopg.Connection[Any], user_id: int, now: datetime) -> cadence.Profile | None:
    """The user's listening profile (:func:`myi.cadence.profile`) from their stored plays of the
    last four weeks, counted per UTC clock hour (one indexed range of the user's events)."""
    rows = conn.execute(
        "SELECT date_bin('1 hour', played_at, TIMESTAMPTZ '2000-01-01 00:00Z') AS h, count(*) "
        "FROM listening_events WHERE user_id = %s AND played_at >= %s AND played_at <= %s GROUP BY h",
        (user_id, now - cadence.HISTORY, now),
    ).fetchall()
    return cadence.profile(((h.astimezone(UTC), int(n)) for h, n in rows), now)


def handle_message(deps: SyncDeps, body: str) -> SyncOutcome | None:
    try:
        message = json.loads(body)
        user_id = int(message["user_id"])
        after = message.get("after")
        after_ms = None if after is None else int(after)
        if after_ms is not None and not 0 <= after_ms <= _LAST_MS:
            raise ValueError(after_ms)
        due = message.get("due")
        due_s = None if due is None else int(due)
        if due_s is not None and not 0 <= due_s <= _LAST_MS // 1000:
            raise ValueError(due_s)
    except (ValueError, KeyError, TypeError, AttributeError):
        logger.warning("sync queue message without a user id or with a bad cursor; dropped")
        return None
    if due_s is not None:
        left = due_s - deps.clock().timestamp()
        if left > 1:  # not yet: wait on in the queue, without calling Spotify or the database
            enqueue(deps.sqs, deps.settings, user_id, math.ceil(left), after_ms=after_ms, due=due_s)
            return SyncOutcome("waiting", requeued=True)
    return sync_user(deps, user_id, after_ms=after_ms)


def _claimed_until(settings: Settings, now: datetime) -> datetime:
    """Until when a fan-out started at ``now`` claims the users it selects: while their message is in
    flight. The worker sets the next sync time when it is done, so this matters only for a message
    that is lost."""
    return now + timedelta(seconds=settings.sync_max_delay_s + CLAIM_S)


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
                 WHERE u.id > %(after)s AND u.last_seen_at >= %(active)s
                   AND (u.next_sync_at IS NULL OR u.next_sync_at <= %(now)s)
                 ORDER BY u.id LIMIT %(page)s
            )
            UPDATE users u SET next_sync_at = %(claimed)s FROM due WHERE u.id = due.id RETURNING u.id
            """,
            {
                "after": last_id,
                "active": now - timedelta(days=settings.sync_active_days),
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
    sent), are released and its error is raised. ``sqs`` is the SQS client (the function's is
    ``myi.aws.client("sqs")``, shared by the ``SENDERS`` threads and retrying throttling, 5xx
    answers and connection failures itself) or anything with its ``send_message_batch``. A message
    sent twice (a retried call SQS had in fact taken) is harmless: the worker syncs from the user's
    cursor."""
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
    """Until when someone may be due: the newest time a user with a valid grant was seen, plus the
    fan-out's window (``SYNC_ACTIVE_DAYS``); None when nobody has a valid grant."""
    row = conn.execute(
        "SELECT max(u.last_seen_at) FROM users u JOIN spotify_auth a ON a.user_id = u.id AND a.is_valid"
    ).fetchone()
    if row is None or row[0] is None:
        return None
    newest: datetime = row[0]
    return newest + timedelta(days=settings.sync_active_days)


def default_deps(settings: Settings, conn: psycopg.Connection[Any] | None = None) -> SyncDeps:
    """The dependencies of this execution environment, on ``conn`` (this environment's connection
    when not given)."""
    from myi import aws, crypto, db
    from myi.ratelimit import RateLimiter
    from myi.spotify.accounts import AccountsClient
    from myi.spotify.client import Budget

    if conn is None:
        conn = db.get_connection(settings)
    return SyncDeps(
        settings=settings,
        conn=conn,
        sqs=aws.client("sqs", settings),
        spotify=SpotifyClient(settings, Budget(settings, RateLimiter(settings))),
        tokens=TokenManager(conn, AccountsClient(settings), lambda: crypto.load_keyring(settings)),
    )
