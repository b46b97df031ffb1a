"""Sync figures. ``fanout_users_per_s``: eligible users selected and enqueued into the emulator's
queue (``MYI_BENCH_FANOUT_USERS``, default 2,000). The emulator's SQS recomputes every queue
attribute over all stored messages for each message sent, so its cost per message grows with the
queue's depth and a run of 100,000 users takes hours there: this figure measures the emulator far
more than MYI, whose side is one statement per page of ``SYNC_FANOUT_PAGE_SIZE`` users and one
``SendMessageBatch`` per ten. That side alone is ``fanout_claim_users_per_s``: 100,000 eligible
users selected and claimed, page by page, as the fan-out does before it sends; and
``fanout_instant_users_per_s`` is the whole fan-out of those 100,000 users into an SQS endpoint
that accepts every message at once (``_instant_sqs``), with ``fanout_cpu_ms_per_send``, the CPU
time this process spends per ``SendMessageBatch`` (botocore's serialising, signing and parsing,
and the HTTP request): what bounds the fan-out when the queue does not. The fan-out sends through
an SQS client made by :func:`myi.aws.client`, configured as the function's.
``sync_worker_ms_per_user``: the median time of one user's sync (50 new plays,
against the local fake Spotify), beside ``sync_worker_spotify_ms_per_user``, the part of it spent
in the Spotify call (the shared budget's DynamoDB calls included): the rest is MYI.
``sync_worker_vs_spotify_ratio`` is the one over the other: below 2, the Spotify call dominates.
The messages a sync sends (the read-on after a full page, the enrichment request) go to the endpoint
that accepts them at once: the emulator's SQS spends milliseconds of CPU on each, on the cores the
database and the worker share here, where SQS in the cloud spends none of theirs. The worker's own
side of a send (botocore's, in the thread that sends it while the page is stored) is measured.

The emulator and the fake Spotify serve from processes of their own, as AWS and Spotify do in the
cloud: threads of the benchmark's interpreter would hold its lock while the worker waits for them,
and the figures would measure the interpreter rather than MYI."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import psycopg
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from devtools.bench import BenchContext, Figure, stopwatch
from devtools.embedded import free_port
from devtools.fakespotify import FakeSpotify, World
from myi import aws, migrate
from myi.auth import pkce
from myi.auth.tokens import TokenManager, store_grant
from myi.crypto import KeyRing
from myi.ratelimit import RateLimiter
from myi.settings import Settings
from myi.spotify.accounts import AccountsClient, authorize_url
from myi.spotify.client import Budget, SpotifyClient
from myi.sync import SENDERS, SyncDeps, due_pages, fanout, sync_user

FANOUT_USERS = int(os.environ.get("MYI_BENCH_FANOUT_USERS") or 2_000)
CLAIM_USERS = 100_000
SYNC_USERS = 200


def _eligible(conn: psycopg.Connection[Any], n: int) -> None:
    """``n`` users due for a sync (signed in now, a grant, never synced): ``fanout-<i>``."""
    conn.execute(
        """
        INSERT INTO users (spotify_id, last_seen_at)
        SELECT 'fanout-' || g, now() FROM generate_series(1, %s) g
        """,
        (n,),
    )
    conn.execute(
        """
        INSERT INTO spotify_auth (user_id, refresh_token_enc, refresh_key_version)
        SELECT id, '\\x00', 1 FROM users WHERE spotify_id LIKE 'fanout-%%'
        """
    )
    conn.execute("ANALYZE users, spotify_auth")


def _fanout(settings: Settings, conn: psycopg.Connection[Any], endpoint: str) -> Iterator[Figure]:
    _eligible(conn, CLAIM_USERS)
    with stopwatch() as elapsed:
        claimed = sum(len(page) for page in due_pages(settings, conn, datetime.now(UTC)))
    conn.execute("DELETE FROM users WHERE spotify_id LIKE 'fanout-%%'")
    if claimed != CLAIM_USERS:
        raise RuntimeError(f"the fan-out claimed {claimed} of {CLAIM_USERS} users")
    yield Figure("fanout_claim_users_per_s", claimed / elapsed(), "users/s")
    yield from _fanout_instant(settings, conn)
    yield from _fanout_into(settings, conn, endpoint)


def _fanout_of(
    settings: Settings, conn: psycopg.Connection[Any], sqs: Any, queue: str, users: int
) -> tuple[float, float]:
    """Fan ``users`` eligible users out into ``queue``, checking that every one was sent; returns
    the fan-out's wall and CPU seconds, and leaves no bench user behind."""
    _eligible(conn, users)
    cpu = time.process_time()
    with stopwatch() as elapsed:
        sent = fanout(
            settings.replace(sync_queue_url=queue, sync_cooldown_s=0, sync_max_delay_s=0), conn, sqs
        )
    cpu = time.process_time() - cpu
    conn.execute("DELETE FROM users WHERE spotify_id LIKE 'fanout-%%'")
    if sent != users:
        raise RuntimeError(f"the fan-out enqueued {sent} of {users} users")
    return elapsed(), cpu


def _sqs_client(settings: Settings, endpoint: str) -> Any:
    """An SQS client for ``endpoint`` with a connection for each of the fan-out's senders."""
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=settings.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - dummy credentials of the local endpoints
        config=Config(
            read_timeout=60, retries={"max_attempts": 10, "mode": "standard"}, max_pool_connections=SENDERS
        ),
    )


def _fanout_instant(settings: Settings, conn: psycopg.Connection[Any]) -> Iterator[Figure]:
    """The fan-out of ``CLAIM_USERS`` users into an endpoint that accepts every message at once:
    its rate, and the CPU time this process spends per ``SendMessageBatch``, through the client the
    function uses (:func:`myi.aws.client`, its configuration and the environment's credentials)."""
    with _server("devtools.bench._instant_sqs") as endpoint:
        sqs = aws.client("sqs", settings.replace(aws_endpoint_url=endpoint))
        seconds, cpu = _fanout_of(settings, conn, sqs, f"{endpoint}/q", CLAIM_USERS)
    yield Figure("fanout_instant_users_per_s", CLAIM_USERS / seconds, "users/s")
    yield Figure("fanout_cpu_ms_per_send", cpu * 1000 / ((CLAIM_USERS + 9) // 10), "ms")


@contextmanager
def _server(module: str, *args: str) -> Iterator[str]:
    """The URL of ``python -m module ... PORT`` serving in a process of its own: the fan-out's
    sending threads and the drainers, and the sync worker, would otherwise share one interpreter
    with it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{module} did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _fanout_into(settings: Settings, conn: psycopg.Connection[Any], endpoint: str) -> Iterator[Figure]:
    # The fan-out's client of its own, its pool kept for its senders (the drainers use the other).
    sqs, sender = _sqs_client(settings, endpoint), _sqs_client(settings, endpoint)
    with _drained_queue(sqs) as queue:
        seconds, _ = _fanout_of(settings, conn, sender, queue, FANOUT_USERS)
    yield Figure("fanout_users_per_s", FANOUT_USERS / seconds, "users/s")

    # The baseline: the same number of messages sent straight to the emulator, in batches of ten
    # from as many threads as the fan-out uses, without reading a single user.
    body = json.dumps({"user_id": 0, "reason": "baseline"})

    def send(batch: int) -> None:
        entries = [{"Id": str(i), "MessageBody": body} for i in range(min(10, FANOUT_USERS - batch * 10))]
        sender.send_message_batch(QueueUrl=queue, Entries=entries)

    with _drained_queue(sqs) as queue, stopwatch() as baseline, ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(send, range((FANOUT_USERS + 9) // 10)))
    yield Figure("fanout_vs_emulator_ratio", seconds / baseline(), "x")


@contextmanager
def _drained_queue(sqs: Any) -> Iterator[str]:
    """A fresh queue that consumers empty while it is being filled, as the sync workers do in the
    cloud: the emulator's SQS costs O(queue depth) per message sent."""
    queue = sqs.create_queue(QueueName=f"bench-fanout-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
                if got:
                    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
                    sqs.delete_message_batch(QueueUrl=queue, Entries=entries)
            except BotoCoreError:  # an emulator busy with the senders: try again
                time.sleep(0.1)

    drainers = [threading.Thread(target=drain, daemon=True) for _ in range(2)]
    for t in drainers:
        t.start()
    try:
        yield queue
    finally:
        stop.set()
        for t in drainers:
            t.join()
        sqs.delete_queue(QueueUrl=queue)


class _TimedClient(SpotifyClient):
    spent: float = 0.0

    def recently_played(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return super().recently_played(*args, **kwargs)
        finally:
            self.spent = time.perf_counter() - start


def _serve_fake(pipe: Any, names: list[str], now: float) -> None:
    """The fake Spotify of the sync figures, in a process of its own: every bench user with 50
    plays of a 2,000-track catalog in the 200 minutes before ``now``; serves until told to stop."""
    world = World()
    rng = random.Random(5)
    artists = [world.add_artist(f"Bench Artist {i}") for i in range(50)]
    albums = [world.add_album(f"Bench Album {i}", [artists[i % 50]]) for i in range(200)]
    tracks = [world.add_track(f"Bench Track {i}", albums[i % 200], duration_ms=200_000) for i in range(2000)]
    start = datetime.fromtimestamp(now, UTC)
    for name in names:
        world.add_user(name, name)
        for k in range(50):
            world.add_play(name, rng.choice(tracks), start - timedelta(minutes=200 - 3 * k))
    with FakeSpotify(world) as fake:
        pipe.send((fake.accounts_url, fake.api_url, fake.client_id, fake.client_secret))
        pipe.recv()


@contextmanager
def _separate_fake(names: list[str], now: datetime) -> Iterator[tuple[str, str, str, str]]:
    """(accounts URL, API URL, client id, client secret) of a fake Spotify in another process."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_serve_fake, args=(theirs, names, now.timestamp()), daemon=True)
    proc.start()
    try:
        if not ours.poll(60):
            raise RuntimeError("the fake Spotify for the sync figures did not start")
        yield ours.recv()
        ours.send("stop")
        proc.join(timeout=10)
    finally:
        if proc.is_alive():
            proc.terminate()


def _sync(settings: Settings, conn: psycopg.Connection[Any]) -> Iterator[Figure]:
    now = datetime.now(UTC)
    names = [f"bench-{i}" for i in range(SYNC_USERS)]
    ring = KeyRing(current=1, keys={1: os.urandom(32)})
    with (
        _separate_fake(names, now) as fake,
        _server("devtools.bench._instant_sqs") as queues,
        httpx.Client(timeout=10) as http,
    ):
        accounts_url, api_url, client_id, client_secret = fake
        s = settings.replace(
            spotify_accounts_url=accounts_url,
            spotify_api_url=api_url,
            spotify_client_id=client_id,
            spotify_client_secret=client_secret,
            spotify_rate_budget=100_000,
        )
        accounts = AccountsClient(s, http=http)
        users = []
        for name in names:
            user = conn.execute(
                "INSERT INTO users (spotify_id, last_seen_at) VALUES (%s, now()) RETURNING id", (name,)
            ).fetchone()
            assert user is not None
            verifier, state = pkce.new_verifier(), pkce.new_state()
            url = authorize_url(
                s, state=state, code_challenge=pkce.challenge_of(verifier), redirect_uri="https://x/cb"
            )
            code = httpx.URL(http.get(url + f"&fake_user={name}").headers["location"]).params["code"]
            grant = accounts.exchange_code(code=code, verifier=verifier, redirect_uri="https://x/cb")
            store_grant(conn, ring, int(user[0]), grant, now=datetime.now(UTC))
            users.append(int(user[0]))
        client = _TimedClient(s, Budget(s, RateLimiter(s), key=f"bench-{uuid.uuid4().hex}"), http=http)
        deps = SyncDeps(
            settings=s,
            conn=conn,
            sqs=_sqs_client(s, queues),
            spotify=client,
            tokens=TokenManager(conn, accounts, lambda: ring),
        )
        totals, spotify = [], []
        for user in users:
            with stopwatch() as elapsed:
                outcome = sync_user(deps, user)
            if outcome.result.added != 50:
                raise RuntimeError(f"a bench sync added {outcome.result.added} plays, not 50")
            totals.append(elapsed() * 1000)
            spotify.append(client.spent * 1000)
    yield Figure("sync_worker_ms_per_user", statistics.median(totals), "ms")
    yield Figure("sync_worker_spotify_ms_per_user", statistics.median(spotify), "ms")
    yield Figure("sync_worker_vs_spotify_ratio", statistics.median(totals) / statistics.median(spotify), "x")


def run(ctx: BenchContext) -> Iterator[Figure]:
    from devtools.local.resources import create_resources

    with _server("moto.server", "-H", "127.0.0.1", "-p") as endpoint:
        base = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "DATABASE_URL": ctx.database_url}
        settings = Settings.from_env({**base, **create_resources(Settings.from_env(base))})
        with psycopg.connect(ctx.database_url, autocommit=True, prepare_threshold=None) as conn:
            migrate.migrate(conn)
            yield from _fanout(settings, conn, endpoint)
            yield from _sync(settings, conn)
