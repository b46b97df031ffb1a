"""The wiring of MYI, written once: every function, its trigger, its limits and what it may touch.

Both the CDK stack (``infra/``) and the local runtime (``devtools.local``) read this module, so the cloud
and the laptop cannot drift apart. It is plain data: no CDK or boto3 imports here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Method = Literal["GET", "POST", "PATCH", "DELETE", "PUT"]

# Resources a function may use; the CDK stack turns each into a least-privilege grant and an
# environment variable, the local runtime into an emulated resource.
Access = Literal[
    "db",  # Aurora PostgreSQL (IAM auth or secret)
    "state_table",  # DynamoDB: PKCE states, rate-limit counters, dormancy (myi.dormancy)
    "token_key",  # the token-encryption key secret
    "token_key:init",  # writes the first key into the placeholder secret (the migration resource)
    "spotify_secret",  # the Spotify client secret
    "spotify",  # outbound HTTPS to Spotify
    "import_bucket:read",
    "import_bucket:write",  # presigned POSTs, deletion of a user's uploads
    "import_bucket:export_write",  # the export worker: multipart uploads, aborts, deletes under exports/
    "import_bucket:export_read",  # the API: presigned GETs of exports/, and DELETE /me removing them
    "sync_queue:send",
    "import_queue:send",
    "enrichment_queue:send",
    "top_stats_queue:send",
    "export_queue:send",
]


@dataclass(frozen=True)
class Route:
    method: Method
    path: str  # API Gateway syntax: /me/imports/{id}


@dataclass(frozen=True)
class QueueTrigger:
    queue: str  # logical queue name, see QUEUES
    batch_size: int = 1
    max_concurrency: int | None = None  # Lambda's maximum concurrency of the event source (>= 2)
    batching_window_s: int = 0


@dataclass(frozen=True)
class Schedule:
    rule: str  # the name used by POST /_local/schedules/{rule}
    expression: str  # EventBridge: rate(...) or cron(...), UTC
    description: str = ""


@dataclass(frozen=True)
class Function:
    name: str  # folder under functions/, snake_case
    description: str
    timeout_s: int
    memory_mb: int
    routes: tuple[Route, ...] = ()
    queue: QueueTrigger | None = None
    schedules: tuple[Schedule, ...] = ()
    access: tuple[Access, ...] = ()
    custom_resource: bool = False  # invoked by CloudFormation on deploy (migrations)
    reserved_concurrency: int | None = None

    @property
    def handler(self) -> str:
        return "handler.lambda_handler"

    @property
    def code_dir(self) -> str:
        return f"functions/{self.name}"

    @property
    def kebab(self) -> str:
        return self.name.replace("_", "-")


@dataclass(frozen=True)
class Queue:
    name: str  # logical name; the env var is NAME_QUEUE_URL (upper case)
    max_receives: int = 5  # deliveries before a message goes to the DLQ
    fifo: bool = False

    @property
    def env_var(self) -> str:
        return f"{self.name.upper().replace('-', '_')}_QUEUE_URL"


@dataclass(frozen=True)
class BucketNotification:
    bucket: str
    queue: str
    prefix: str = ""
    events: tuple[str, ...] = ("s3:ObjectCreated:*",)


# Queues and their consumers join the wiring with the pipelines that use them (sync, import,
# enrichment, top lists); each queue gets a dead-letter queue after ``max_receives`` deliveries.
QUEUES: tuple[Queue, ...] = (
    Queue("import", max_receives=3),
    Queue("sync", max_receives=5),
    Queue("enrichment", max_receives=5),
    Queue("top_stats", max_receives=5),
    Queue("export", max_receives=3),  # myi.exports.worker.MAX_ATTEMPTS
)

# Uploads land under uploads/<user id>/<import id>/... (myi.uploads.UPLOAD_PREFIX, the same value);
# every created object is announced to the import queue (S3 -> SQS, as in the cloud).
IMPORT_UPLOAD_PREFIX = "uploads/"
BUCKET_NOTIFICATIONS: tuple[BucketNotification, ...] = (
    BucketNotification(bucket="imports", queue="import", prefix=IMPORT_UPLOAD_PREFIX),
)

API_ROUTES: tuple[Route, ...] = (
    Route("GET", "/health"),
    Route("GET", "/openapi.json"),
    Route("GET", "/me"),
    Route("PATCH", "/me"),
    Route("DELETE", "/me"),
    Route("POST", "/me/imports"),
    Route("GET", "/me/imports"),
    Route("GET", "/me/imports/{id}"),
    Route("GET", "/me/stats/overview"),
    Route("GET", "/me/stats/top/{kind}"),
    Route("GET", "/me/stats/activity"),
    Route("GET", "/me/history"),
    Route("POST", "/me/sync"),
    Route("GET", "/me/spotify-top/{kind}"),
    Route("POST", "/me/exports"),
    Route("GET", "/me/exports"),
    Route("GET", "/me/exports/{id}"),
)

AUTH_ROUTES: tuple[Route, ...] = (
    Route("GET", "/auth/login"),
    Route("GET", "/auth/callback"),
    Route("POST", "/auth/logout"),
)

FUNCTIONS: tuple[Function, ...] = (
    Function(
        name="api",
        description="The HTTP API of the single-page app",
        timeout_s=29,
        memory_mb=1024,
        routes=API_ROUTES,
        access=(
            "db",
            "state_table",
            "import_bucket:write",
            "import_bucket:export_read",
            "sync_queue:send",
            "top_stats_queue:send",
            "export_queue:send",
        ),
    ),
    Function(
        name="auth",
        description="Sign in with Spotify (OAuth code flow with PKCE) and sign out",
        timeout_s=15,
        memory_mb=512,
        routes=AUTH_ROUTES,
        access=("db", "state_table", "token_key", "spotify_secret", "spotify"),
    ),
    Function(
        name="import_worker",
        description="Imports an uploaded Spotify export, streaming, in resumable batches",
        timeout_s=900,
        memory_mb=1024,
        queue=QueueTrigger("import", batch_size=1, max_concurrency=5),
        schedules=(Schedule("import-sweep", "rate(1 hour)", "Fails imports that stopped making progress"),),
        access=("db", "state_table", "import_bucket:read", "import_queue:send", "enrichment_queue:send"),
    ),
    Function(
        name="export_worker",
        description=(
            "Writes a listener's whole history as my_spotify_data.zip (Spotify's extended history or CSV)"
        ),
        timeout_s=900,
        memory_mb=1769,  # one full vCPU: the worker is CPU-bound (1,000,000 plays: about 7 s of CPU)
        queue=QueueTrigger("export", batch_size=1, max_concurrency=2),
        schedules=(Schedule("export-sweep", "rate(1 hour)", "Fails exports that stopped making progress"),),
        access=("db", "state_table", "import_bucket:export_write", "export_queue:send"),
    ),
    Function(
        name="sync_fanout",
        description="Enqueues every user who is due for a listening sync",
        timeout_s=300,
        memory_mb=512,
        schedules=(Schedule("sync-fanout", "rate(15 minutes)", "Listening sync fan-out"),),
        access=("db", "state_table", "sync_queue:send"),
    ),
    Function(
        name="sync_worker",
        description="Reads a user's recently played tracks from Spotify and ingests them",
        timeout_s=60,
        memory_mb=512,
        queue=QueueTrigger("sync", batch_size=5, max_concurrency=10),
        access=(
            "db",
            "state_table",
            "token_key",
            "spotify_secret",
            "spotify",
            "sync_queue:send",
            "enrichment_queue:send",
        ),
    ),
    Function(
        name="enrichment_worker",
        description="Fills catalog gaps (durations, albums, provisional artists and albums) from Spotify",
        timeout_s=120,
        memory_mb=512,
        queue=QueueTrigger("enrichment", batch_size=10, max_concurrency=2, batching_window_s=5),
        schedules=(Schedule("enrichment-sweep", "rate(1 hour)", "Retries catalog gaps that are due"),),
        access=("db", "state_table", "spotify_secret", "spotify", "enrichment_queue:send"),
    ),
    Function(
        name="top_stats",
        description="Refreshes Spotify's own top tracks and artists of a user",
        timeout_s=120,
        memory_mb=512,
        queue=QueueTrigger("top_stats", batch_size=5, max_concurrency=2),
        schedules=(Schedule("top-stats-sweep", "cron(0 3 * * ? *)", "Daily refresh of tier 1 and 2 users"),),
        access=("db", "state_table", "token_key", "spotify_secret", "spotify", "top_stats_queue:send"),
    ),
    Function(
        name="migrate",
        description="Applies database migrations on every deploy (a CloudFormation custom resource)",
        timeout_s=300,
        memory_mb=512,
        access=("db", "token_key", "token_key:init"),
        custom_resource=True,
    ),
    Function(
        name="partition_maintenance",
        description="Creates monthly partitions and empties the default partition; re-encrypts grants",
        timeout_s=300,
        memory_mb=256,
        schedules=(Schedule("partition-maintenance", "cron(15 0 * * ? *)", "Daily partition maintenance"),),
        access=("db", "token_key"),
    ),
)


@dataclass(frozen=True)
class Wiring:
    functions: tuple[Function, ...] = FUNCTIONS
    queues: tuple[Queue, ...] = QUEUES
    bucket_notifications: tuple[BucketNotification, ...] = BUCKET_NOTIFICATIONS
    extra: dict[str, str] = field(default_factory=dict)

    def function(self, name: str) -> Function:
        for fn in self.functions:
            if fn.name == name:
                return fn
        raise KeyError(name)

    def queue(self, name: str) -> Queue:
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(name)

    def consumer_of(self, queue: str) -> Function:
        for fn in self.functions:
            if fn.queue and fn.queue.queue == queue:
                return fn
        raise KeyError(queue)

    def schedules(self) -> list[tuple[Schedule, Function]]:
        return [(s, fn) for fn in self.functions for s in fn.schedules]

    def routes(self) -> list[tuple[Route, Function]]:
        return [(r, fn) for fn in self.functions for r in fn.routes]


WIRING = Wiring()
