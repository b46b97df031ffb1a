"""What an operator chooses, read from CDK context (``-c key=value`` or ``cdk.json``), with defaults
that deploy. Two profiles set the cost-shaped defaults; every value can still be overridden.

| context key | personal | scale | meaning |
|---|---|---|---|
| ``stage`` | ``dev`` | | stack name suffix; ``prod`` turns on deletion protection and retention |
| ``profile`` | ``personal`` | | ``personal`` (you and up to 5 friends) or ``scale`` (an organisation) |
| ``spa_origins`` | the API's own origin | | comma-separated origins allowed by CORS and the origin check |
| ``app_url`` | the API's URL | | where sign-in sends the browser back to |
| ``spotify_client_id`` | empty (set it!) | | the Spotify app's client id |
| ``spotify_batch_reads`` | ``false`` | | the app may use batch catalog reads (extended quota) |
| ``alarm_email`` | none | | e-mail subscribed to the alarm topic |
| ``nat_count`` | 1 (an instance) | 2 (gateways) | NATs (functions reach Spotify through them) |
| ``aurora_min_acu`` / ``aurora_max_acu`` | 0 / 2 | 0.5 / 16 | Aurora Serverless v2 capacity |
| ``aurora_version`` | ``AURORA_VERSION`` | | Aurora PostgreSQL engine version (major.minor) |
| ``upload_retention_days`` | 7 | 7 | uploads are deleted after this |
| ``export_ttl_days`` | 7 | 7 | exports are deleted this long after they were written |
| ``log_retention_days`` | 30 | 90 | CloudWatch log retention |
| ``dlq_max_receives`` | the wiring's | | deliveries before a message goes to its DLQ |
| ``api_rate_limit`` / ``api_burst_limit`` | 20 / 40 | 500 / 1000 | HTTP API throttling per second |
| ``sync_fanout_schedule`` | ``rate(1 hour)`` | the wiring's | how often due users are looked for |
| ``sync_max_interval_s`` | 3600 | 3600 | the most time between two syncs of a user (the cadence's bound) |
| ``publish_web`` | ``false`` | | publish ``web/`` to S3 behind CloudFront (then the SPA's origin) |
| ``alarms_per_function`` | ``false`` | ``true`` | alarms per function, or one over the account's |
| ``alarm_topic_key`` | ``false`` | ``true`` | encrypt the alarm topic with a customer managed KMS key |
| ``api_reserved_concurrency`` | none | | reserved concurrency of each HTTP API function (api, auth) |

``api_reserved_concurrency`` is opt-in: Lambda refuses a reservation that leaves the account fewer
than 10 unreserved concurrent executions, and a new account's quota can be 10, so reserving by default
would break the first deploy. Sizing: "Reserved concurrency" in docs/operations.md.

``AURORA_VERSION`` is the newest Aurora PostgreSQL 16 release that both aws-cdk-lib and cfn-lint know
and that cfn-lint does not list as deprecated: the major version the tests run on (the embedded
PostgreSQL is 16), and one that lets Aurora Serverless v2 scale to 0 ACU. Changing the major version
of a running stage is an upgrade of its database: see "Upgrading" in docs/operations.md first.

Spotify keeps a listener's latest 50 plays. Each user's next sync is planned from their own
listening (``myi.cadence``), at most ``sync_max_interval_s`` ahead; a sync planned before the next
fan-out comes by the worker's own delayed message, so the fan-out's period bounds nothing but how
soon a new or failed user is picked up. An hourly fan-out lets the database of a personal
deployment sleep while nobody listens (and, while nobody has been seen for ``SYNC_ACTIVE_DAYS``,
not at all: ``myi.dormancy``). An hour as the maximum lost no play on the real histories the
``cadence`` benchmark replays; two hours lost tens per person (docs/design.md, "Sync").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from constructs import Construct

Profile = Literal["personal", "scale"]

AURORA_VERSION = "16.13"

# The first minor version of each Aurora PostgreSQL major that can scale to 0 ACU (and pause); every
# release of a later major can.
_SCALES_TO_ZERO_FROM = {13: 15, 14: 12, 15: 7, 16: 3}


@dataclass(frozen=True)
class Config:
    stage: str
    profile: Profile
    spa_origins: tuple[str, ...]
    app_url: str | None
    spotify_client_id: str
    spotify_batch_reads: bool
    alarm_email: str | None
    nat_count: int
    nat_gateways: bool
    rds_proxy: bool
    aurora_min_acu: float
    aurora_max_acu: float
    aurora_version: str  # Aurora PostgreSQL "major.minor", e.g. "16.13"
    upload_retention_days: int
    export_ttl_days: int
    log_retention_days: int
    dlq_max_receives: int | None
    api_rate_limit: int
    api_burst_limit: int
    layer_dir: str
    schedules: dict[str, str]  # rule -> expression, where the profile differs from the wiring
    publish_web: bool
    # personal: one alarm on all of the account's function errors (and one on throttles) and an
    # alarm topic without a customer managed key; scale: alarms per function, a key of its own.
    alarms_per_function: bool
    alarm_topic_key: bool
    sync_max_interval_s: int  # SYNC_MAX_INTERVAL_SECONDS of every function
    # Reserved concurrent executions of each function behind the HTTP API (api, auth); None: none.
    api_reserved_concurrency: int | None = None

    @property
    def production(self) -> bool:
        return self.stage in ("prod", "production")

    def name(self, part: str) -> str:
        """Every physical name MYI gives, in one place: ``myi-<stage>-<part>``."""
        return f"myi-{self.stage}-{part.replace('_', '-')}"

    @property
    def stack_name(self) -> str:
        return f"Myi-{self.stage}"


_PROFILES: dict[str, dict[str, Any]] = {
    "personal": {
        "nat_count": 1,
        "nat_gateways": False,
        "rds_proxy": False,
        "aurora_min_acu": 0,
        "aurora_max_acu": 2,
        "log_retention_days": 30,
        "api_rate_limit": 20,
        "api_burst_limit": 40,
        "sync_fanout_schedule": "rate(1 hour)",
        "sync_max_interval_s": 3600,
        "alarms_per_function": False,
        "alarm_topic_key": False,
    },
    "scale": {
        "nat_count": 2,
        "nat_gateways": True,
        "rds_proxy": True,
        "aurora_min_acu": 0.5,
        "aurora_max_acu": 16,
        "log_retention_days": 90,
        "api_rate_limit": 500,
        "api_burst_limit": 1000,
        "sync_max_interval_s": 3600,
        "alarms_per_function": True,
        "alarm_topic_key": True,
    },
}


def aurora_major(version: str) -> int:
    """The major version of an Aurora PostgreSQL version string such as ``16.13``."""
    major, dot, minor = version.partition(".")
    if not (major.isdigit() and dot and minor.isdigit()):
        raise ValueError(f"aurora_version must look like 16.13 (major.minor), not {version!r}")
    return int(major)


def scales_to_zero(version: str) -> bool:
    """Whether Aurora Serverless v2 on this Aurora PostgreSQL version may have a minimum of 0 ACU."""
    major, minor = aurora_major(version), int(version.split(".")[1])
    if major in _SCALES_TO_ZERO_FROM:
        return minor >= _SCALES_TO_ZERO_FROM[major]
    return major > max(_SCALES_TO_ZERO_FROM)


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _reservation(value: Any) -> int | None:
    """``api_reserved_concurrency``: unset (None) or a positive whole number."""
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"api_reserved_concurrency must be a whole number of at least 1 (leave it unset to reserve "
            f"none), not {value!r}"
        )
    return int(text)


def from_context(scope: Construct) -> Config:
    def ctx(key: str, default: Any = None) -> Any:
        value = scope.node.try_get_context(key)
        return default if value is None or value == "" else value

    profile = str(ctx("profile", "personal"))
    if profile not in _PROFILES:
        raise ValueError(f"profile must be personal or scale, not {profile!r}")
    shape = _PROFILES[profile]
    origins = tuple(o.strip().rstrip("/") for o in str(ctx("spa_origins", "")).split(",") if o.strip())
    receives = ctx("dlq_max_receives")
    aurora_version = ctx("aurora_version", AURORA_VERSION)
    if not isinstance(aurora_version, str):
        # cdk.json's 16.10 as a number would arrive as 16.1
        raise ValueError(
            f'aurora_version must be a string such as "{AURORA_VERSION}", not {aurora_version!r}'
        )
    aurora_version = aurora_version.strip()
    aurora_min_acu = float(ctx("aurora_min_acu", shape["aurora_min_acu"]))
    if aurora_min_acu == 0 and not scales_to_zero(aurora_version):
        raise ValueError(
            f"Aurora PostgreSQL {aurora_version} cannot scale to 0 ACU (13.15, 14.12, 15.7, 16.3 and "
            "later can): choose a newer aurora_version or set aurora_min_acu to 0.5"
        )
    return Config(
        stage=str(ctx("stage", "dev")),
        profile=profile,  # type: ignore[arg-type]
        spa_origins=origins,
        app_url=ctx("app_url"),
        spotify_client_id=str(ctx("spotify_client_id", "")),
        spotify_batch_reads=_flag(ctx("spotify_batch_reads", "false")),
        alarm_email=ctx("alarm_email"),
        nat_count=int(ctx("nat_count", shape["nat_count"])),
        nat_gateways=_flag(ctx("nat_gateways", shape["nat_gateways"])),
        rds_proxy=_flag(ctx("rds_proxy", shape["rds_proxy"])),
        aurora_min_acu=aurora_min_acu,
        aurora_max_acu=float(ctx("aurora_max_acu", shape["aurora_max_acu"])),
        aurora_version=aurora_version,
        upload_retention_days=int(ctx("upload_retention_days", 7)),
        export_ttl_days=int(ctx("export_ttl_days", 7)),
        log_retention_days=int(ctx("log_retention_days", shape["log_retention_days"])),
        dlq_max_receives=int(receives) if receives is not None else None,
        api_rate_limit=int(ctx("api_rate_limit", shape["api_rate_limit"])),
        api_burst_limit=int(ctx("api_burst_limit", shape["api_burst_limit"])),
        layer_dir=str(ctx("layer_dir", "layers/shared/build")),
        publish_web=_flag(ctx("publish_web", "false")),
        alarms_per_function=_flag(ctx("alarms_per_function", shape["alarms_per_function"])),
        alarm_topic_key=_flag(ctx("alarm_topic_key", shape["alarm_topic_key"])),
        sync_max_interval_s=int(ctx("sync_max_interval_s", shape["sync_max_interval_s"])),
        api_reserved_concurrency=_reservation(ctx("api_reserved_concurrency")),
        schedules=(
            {"sync-fanout": str(ctx("sync_fanout_schedule", shape["sync_fanout_schedule"]))}
            if ctx("sync_fanout_schedule", shape.get("sync_fanout_schedule"))
            else {}
        ),
    )


_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")


def rate_seconds(expression: str) -> int:
    """Seconds between firings of an EventBridge ``rate(...)`` expression; 0 for any other (a cron
    expression: the sync worker then leaves every planned sync to the fan-out)."""
    m = _RATE.match(expression.strip())
    return int(m.group(1)) * {"minute": 60, "hour": 3600, "day": 86400}[m.group(2).rstrip("s")] if m else 0
