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
| ``upload_retention_days`` | 7 | 7 | uploads are deleted after this |
| ``log_retention_days`` | 30 | 90 | CloudWatch log retention |
| ``dlq_max_receives`` | the wiring's | | deliveries before a message goes to its DLQ |
| ``api_rate_limit`` / ``api_burst_limit`` | 20 / 40 | 500 / 1000 | HTTP API throttling per second |
| ``sync_fanout_schedule`` | ``rate(1 hour)`` | the wiring's | how often due users are looked for |
| ``publish_web`` | ``false`` | | publish ``web/`` to S3 behind CloudFront (then the SPA's origin) |
| ``alarms_per_function`` | ``false`` | ``true`` | alarms per function, or one over the account's |
| ``alarm_topic_key`` | ``false`` | ``true`` | encrypt the alarm topic with a customer managed KMS key |

Spotify keeps a listener's latest 50 plays, more than two hours of continuous listening, and a full
page makes the worker read on at once, so an hourly fan-out loses nothing; it lets the database of
a personal deployment sleep most of the hour instead of waking every 15 minutes (and, while nobody
has signed in for ``SYNC_ACTIVE_DAYS``, not at all: ``myi.dormancy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from constructs import Construct

Profile = Literal["personal", "scale"]


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
    upload_retention_days: int
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
        "alarms_per_function": True,
        "alarm_topic_key": True,
    },
}


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


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
        aurora_min_acu=float(ctx("aurora_min_acu", shape["aurora_min_acu"])),
        aurora_max_acu=float(ctx("aurora_max_acu", shape["aurora_max_acu"])),
        upload_retention_days=int(ctx("upload_retention_days", 7)),
        log_retention_days=int(ctx("log_retention_days", shape["log_retention_days"])),
        dlq_max_receives=int(receives) if receives is not None else None,
        api_rate_limit=int(ctx("api_rate_limit", shape["api_rate_limit"])),
        api_burst_limit=int(ctx("api_burst_limit", shape["api_burst_limit"])),
        layer_dir=str(ctx("layer_dir", "layers/shared/build")),
        publish_web=_flag(ctx("publish_web", "false")),
        alarms_per_function=_flag(ctx("alarms_per_function", shape["alarms_per_function"])),
        alarm_topic_key=_flag(ctx("alarm_topic_key", shape["alarm_topic_key"])),
        schedules=(
            {"sync-fanout": str(ctx("sync_fanout_schedule", shape["sync_fanout_schedule"]))}
            if ctx("sync_fanout_schedule", shape.get("sync_fanout_schedule"))
            else {}
        ),
    )
