"""One typed settings object, read from the environment once.

Logic receives a ``Settings``; it never reads ``os.environ`` itself. Every tunable the deployed
system has is an environment variable here, so the local runtime and tests can set it too.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name)
    if value is None or value == "":
        return default
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _str(env, name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _str(env, name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _str(env, name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = _str(env, name)
    if raw is None:
        return ()
    return tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Every setting of MYI. Defaults are those of a deployed ``personal`` profile."""

    stage: str = "local"
    region: str = "us-east-1"
    # Unset in AWS: boto3 talks to the real endpoints. Locally: the AWS emulator.
    aws_endpoint_url: str | None = None

    # --- database -------------------------------------------------------------------------
    # Either a full URL (local runs, tests) or host/name/user with IAM auth or a secret (AWS).
    database_url: str | None = None
    db_host: str | None = None
    db_port: int = 5432
    db_name: str = "myi"
    db_user: str = "myi"
    db_secret_arn: str | None = None
    db_iam_auth: bool = False
    db_connect_timeout_s: int = 5
    # Longest a statement of the API function may run (0: no limit); a cancelled one answers 503.
    api_statement_timeout_ms: int = 10_000

    # --- AWS resources (names/URLs injected by CDK or the local runtime) -------------------
    state_table: str = "myi-state"
    import_bucket: str = "myi-imports"
    sync_queue_url: str | None = None
    import_queue_url: str | None = None
    enrichment_queue_url: str | None = None
    top_stats_queue_url: str | None = None
    token_key_secret_id: str = "myi/token-key"  # noqa: S105 - a secret name, not a secret
    spotify_client_secret_id: str | None = None

    # --- HTTP surface -------------------------------------------------------------------------
    api_url: str = "http://127.0.0.1:8000"
    app_url: str = "http://127.0.0.1:8000"
    allowed_origins: tuple[str, ...] = ()
    # The key that signs list cursors; unset: a random key kept in the state table, made at first use.
    cursor_key: str | None = field(default=None, repr=False)
    zone_change_limit: int = 10  # time zone changes per user per window (each rebuilds every statistic)
    zone_change_window_s: int = 3600

    # --- Spotify ------------------------------------------------------------------------------
    spotify_accounts_url: str = "https://accounts.spotify.com"
    spotify_api_url: str = "https://api.spotify.com/v1"
    spotify_client_id: str = ""
    spotify_client_secret: str | None = None
    spotify_batch_reads: bool = False
    spotify_timeout_s: float = 10.0
    spotify_rate_budget: int = 150
    spotify_rate_window_s: int = 30

    # --- auth -----------------------------------------------------------------------------------
    pkce_ttl_s: int = 600
    session_ttl_days: int = 30
    session_max_days: int = 90  # a session ends this long after sign-in, however often it is used
    login_rate_limit: int = 20
    login_rate_window_s: int = 60

    # --- imports ------------------------------------------------------------------------------
    max_upload_bytes: int = 512 * 1024 * 1024
    upload_url_ttl_s: int = 900
    import_create_limit: int = 10  # imports a user may create per window
    import_create_window_s: int = 3600
    import_batch_size: int = 500_000
    import_max_uncompressed_bytes: int = 4 * 1024 * 1024 * 1024
    import_max_ratio: int = 200
    import_stuck_s: int = 1800
    upload_retention_days: int = 7

    # --- sync, enrichment, top lists -----------------------------------------------------------
    sync_cooldown_s: int = 600
    sync_max_interval_s: int = 3600
    sync_fanout_period_s: int = 900  # how often the sync-fanout schedule runs (the wiring's rate)
    sync_active_days: int = 30
    sync_manual_interval_s: int = 60
    sync_fanout_page_size: int = 5000
    sync_max_delay_s: int = 60
    enrichment_batch_size: int = 50
    top_refresh_tier1_h: int = 24
    top_refresh_tier2_h: int = 72

    # --- maintenance -------------------------------------------------------------------------
    partition_months_ahead: int = 3

    extra: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        api_url = (_str(env, "API_URL", d.api_url) or d.api_url).rstrip("/")
        app_url = (_str(env, "APP_URL", api_url) or api_url).rstrip("/")
        origins = _list(env, "ALLOWED_ORIGINS") or (_origin_of(app_url),)
        return cls(
            stage=_str(env, "STAGE", d.stage) or d.stage,
            region=_str(env, "AWS_REGION", _str(env, "AWS_DEFAULT_REGION", d.region)) or d.region,
            aws_endpoint_url=_str(env, "AWS_ENDPOINT_URL"),
            database_url=_str(env, "DATABASE_URL"),
            db_host=_str(env, "DB_HOST"),
            db_port=_int(env, "DB_PORT", d.db_port),
            db_name=_str(env, "DB_NAME", d.db_name) or d.db_name,
            db_user=_str(env, "DB_USER", d.db_user) or d.db_user,
            db_secret_arn=_str(env, "DB_SECRET_ARN"),
            db_iam_auth=_bool(env, "DB_IAM_AUTH", d.db_iam_auth),
            db_connect_timeout_s=_int(env, "DB_CONNECT_TIMEOUT_S", d.db_connect_timeout_s),
            api_statement_timeout_ms=_int(env, "API_STATEMENT_TIMEOUT_MS", d.api_statement_timeout_ms),
            state_table=_str(env, "STATE_TABLE", d.state_table) or d.state_table,
            import_bucket=_str(env, "IMPORT_BUCKET", d.import_bucket) or d.import_bucket,
            sync_queue_url=_str(env, "SYNC_QUEUE_URL"),
            import_queue_url=_str(env, "IMPORT_QUEUE_URL"),
            enrichment_queue_url=_str(env, "ENRICHMENT_QUEUE_URL"),
            top_stats_queue_url=_str(env, "TOP_STATS_QUEUE_URL"),
            token_key_secret_id=_str(env, "TOKEN_KEY_SECRET_ID", d.token_key_secret_id)
            or d.token_key_secret_id,
            spotify_client_secret_id=_str(env, "SPOTIFY_CLIENT_SECRET_ID"),
            api_url=api_url,
            app_url=app_url,
            allowed_origins=origins,
            cursor_key=_str(env, "CURSOR_KEY"),
            zone_change_limit=_int(env, "ZONE_CHANGE_LIMIT", d.zone_change_limit),
            zone_change_window_s=_int(env, "ZONE_CHANGE_WINDOW_SECONDS", d.zone_change_window_s),
            spotify_accounts_url=(
                _str(env, "SPOTIFY_ACCOUNTS_URL", d.spotify_accounts_url) or d.spotify_accounts_url
            ).rstrip("/"),
            spotify_api_url=(_str(env, "SPOTIFY_API_URL", d.spotify_api_url) or d.spotify_api_url).rstrip(
                "/"
            ),
            spotify_client_id=_str(env, "SPOTIFY_CLIENT_ID", "") or "",
            spotify_client_secret=_str(env, "SPOTIFY_CLIENT_SECRET"),
            spotify_batch_reads=_bool(env, "SPOTIFY_BATCH_READS", d.spotify_batch_reads),
            spotify_timeout_s=_float(env, "SPOTIFY_TIMEOUT_S", d.spotify_timeout_s),
            spotify_rate_budget=_int(env, "SPOTIFY_RATE_BUDGET", d.spotify_rate_budget),
            spotify_rate_window_s=_int(env, "SPOTIFY_RATE_WINDOW_S", d.spotify_rate_window_s),
            pkce_ttl_s=_int(env, "PKCE_TTL_SECONDS", d.pkce_ttl_s),
            session_ttl_days=_int(env, "SESSION_TTL_DAYS", d.session_ttl_days),
            session_max_days=_int(env, "SESSION_MAX_DAYS", d.session_max_days),
            login_rate_limit=_int(env, "LOGIN_RATE_LIMIT", d.login_rate_limit),
            login_rate_window_s=_int(env, "LOGIN_RATE_WINDOW_SECONDS", d.login_rate_window_s),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", d.max_upload_bytes),
            upload_url_ttl_s=_int(env, "UPLOAD_URL_TTL_SECONDS", d.upload_url_ttl_s),
            import_create_limit=_int(env, "IMPORT_CREATE_LIMIT", d.import_create_limit),
            import_create_window_s=_int(env, "IMPORT_CREATE_WINDOW_SECONDS", d.import_create_window_s),
            import_batch_size=_int(env, "IMPORT_BATCH_SIZE", d.import_batch_size),
            import_max_uncompressed_bytes=_int(
                env, "IMPORT_MAX_UNCOMPRESSED_BYTES", d.import_max_uncompressed_bytes
            ),
            import_max_ratio=_int(env, "IMPORT_MAX_RATIO", d.import_max_ratio),
            import_stuck_s=_int(env, "IMPORT_STUCK_SECONDS", d.import_stuck_s),
            upload_retention_days=_int(env, "UPLOAD_RETENTION_DAYS", d.upload_retention_days),
            sync_cooldown_s=_int(env, "SYNC_COOLDOWN_SECONDS", d.sync_cooldown_s),
            sync_max_interval_s=_int(env, "SYNC_MAX_INTERVAL_SECONDS", d.sync_max_interval_s),
            sync_fanout_period_s=_int(env, "SYNC_FANOUT_PERIOD_SECONDS", d.sync_fanout_period_s),
            sync_active_days=_int(env, "SYNC_ACTIVE_DAYS", d.sync_active_days),
            sync_manual_interval_s=_int(env, "SYNC_MANUAL_INTERVAL_SECONDS", d.sync_manual_interval_s),
            sync_fanout_page_size=_int(env, "SYNC_FANOUT_PAGE_SIZE", d.sync_fanout_page_size),
            sync_max_delay_s=_int(env, "SYNC_MAX_DELAY_SECONDS", d.sync_max_delay_s),
            enrichment_batch_size=_int(env, "ENRICHMENT_BATCH_SIZE", d.enrichment_batch_size),
            top_refresh_tier1_h=_int(env, "TOP_REFRESH_TIER1_HOURS", d.top_refresh_tier1_h),
            top_refresh_tier2_h=_int(env, "TOP_REFRESH_TIER2_HOURS", d.top_refresh_tier2_h),
            partition_months_ahead=_int(env, "PARTITION_MONTHS_AHEAD", d.partition_months_ahead),
            extra=dict(env),
        )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def api_is_https(self) -> bool:
        return self.api_url.startswith("https://")

    def require(self, attr: str, env_name: str) -> Any:
        """Return a setting that a code path cannot run without, or say which variable to set."""
        value = getattr(self, attr)
        if value in (None, ""):
            raise SettingsError(f"{env_name} is not set")
        return value


def _origin_of(url: str) -> str:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}"


@functools.cache
def get_settings() -> Settings:
    """The settings of this execution environment, read at first use (cold start)."""
    return Settings.from_env()
