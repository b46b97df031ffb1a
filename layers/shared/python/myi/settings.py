"""One typed settings object, read from the environment once.

Logic receives a ``Settings``; it never reads ``os.environ`` itself. Every tunable the deployed
system has is an environment variable here, so the local runtime and tests can set it too.

Each field names its variables in ``validation_alias``: the canonical name first, then the names it
still accepts (``SPOTIFY_RATE_WINDOW_SECONDS``, and ``SPOTIFY_RATE_WINDOW_S`` as it was first
called); the first one set wins. An empty variable counts as unset. A value of the wrong type or out
of its field's bounds is a :class:`SettingsError` that names the variable, raised when the settings
are read (at cold start). Only the environment is read: no ``.env`` or secret files.

``Settings.from_env()`` (and :func:`get_settings`, its cached form) read the environment;
``Settings(**values)`` is the defaults with ``values`` (field names or variable names), and
:meth:`Settings.replace` a copy with some fields changed, both checked as the environment is.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar

from pydantic import AliasChoices, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_MINUTE = 60
_DAY = 86_400
_GIB = 1024**3
# The highest count a rate limit takes: practically none (tests and load runs set such limits).
_NO_LIMIT = 10**9


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _env(*names: str) -> AliasChoices:
    """The variables of a field, the canonical name first."""
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every setting of MYI. Defaults are those of a deployed ``personal`` profile."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        case_sensitive=True,
        validate_default=True,  # the derived fields (app_url, allowed_origins) are filled in by validators
    )

    stage: str = Field("local", validation_alias=_env("STAGE"))
    region: str = Field("us-east-1", validation_alias=_env("AWS_REGION", "AWS_DEFAULT_REGION"))
    # Unset in AWS: boto3 talks to the real endpoints. Locally: the AWS emulator.
    aws_endpoint_url: str | None = Field(None, validation_alias=_env("AWS_ENDPOINT_URL"))

    # --- database -------------------------------------------------------------------------
    # Either a full URL (local runs, tests) or host/name/user with IAM auth or a secret (AWS).
    database_url: str | None = Field(None, repr=False, validation_alias=_env("DATABASE_URL"))
    db_host: str | None = Field(None, validation_alias=_env("DB_HOST"))
    db_port: int = Field(5432, ge=1, le=65_535, validation_alias=_env("DB_PORT"))
    db_name: str = Field("myi", validation_alias=_env("DB_NAME"))
    db_user: str = Field("myi", validation_alias=_env("DB_USER"))
    db_secret_arn: str | None = Field(None, validation_alias=_env("DB_SECRET_ARN"))
    db_iam_auth: bool = Field(False, validation_alias=_env("DB_IAM_AUTH"))
    db_connect_timeout_s: int = Field(
        5, ge=1, le=300, validation_alias=_env("DB_CONNECT_TIMEOUT_SECONDS", "DB_CONNECT_TIMEOUT_S")
    )
    # Longest a statement of the API function may run (0: no limit); a cancelled one answers 503.
    api_statement_timeout_ms: int = Field(
        10_000, ge=0, le=900_000, validation_alias=_env("API_STATEMENT_TIMEOUT_MS")
    )

    # --- AWS resources (names/URLs injected by CDK or the local runtime) -------------------
    state_table: str = Field("myi-state", validation_alias=_env("STATE_TABLE"))
    import_bucket: str = Field("myi-imports", validation_alias=_env("IMPORT_BUCKET"))
    sync_queue_url: str | None = Field(None, validation_alias=_env("SYNC_QUEUE_URL"))
    import_queue_url: str | None = Field(None, validation_alias=_env("IMPORT_QUEUE_URL"))
    enrichment_queue_url: str | None = Field(None, validation_alias=_env("ENRICHMENT_QUEUE_URL"))
    top_stats_queue_url: str | None = Field(None, validation_alias=_env("TOP_STATS_QUEUE_URL"))
    token_key_secret_id: str = Field(
        "myi/token-key",  # a secret's name, not a secret
        validation_alias=_env("TOKEN_KEY_SECRET_ID"),
    )
    spotify_client_secret_id: str | None = Field(None, validation_alias=_env("SPOTIFY_CLIENT_SECRET_ID"))

    # --- HTTP surface -------------------------------------------------------------------------
    api_url: str = Field("http://127.0.0.1:8000", validation_alias=_env("API_URL"))
    # Unset: the API's URL. Both without a trailing slash.
    app_url: str = Field("", validation_alias=_env("APP_URL"))
    # Comma-separated; unset: the origin of app_url.
    allowed_origins: tuple[str, ...] = Field((), validation_alias=_env("ALLOWED_ORIGINS"))
    # The key that signs list cursors; unset: a random key kept in the state table, made at first use.
    cursor_key: str | None = Field(None, repr=False, validation_alias=_env("CURSOR_KEY"))
    # Time zone changes per user per window (each rebuilds every statistic).
    zone_change_limit: int = Field(10, ge=1, le=_NO_LIMIT, validation_alias=_env("ZONE_CHANGE_LIMIT"))
    zone_change_window_s: int = Field(
        3600, ge=1, le=7 * _DAY, validation_alias=_env("ZONE_CHANGE_WINDOW_SECONDS")
    )

    # --- Spotify ------------------------------------------------------------------------------
    spotify_accounts_url: str = Field(
        "https://accounts.spotify.com", validation_alias=_env("SPOTIFY_ACCOUNTS_URL")
    )
    spotify_api_url: str = Field("https://api.spotify.com/v1", validation_alias=_env("SPOTIFY_API_URL"))
    spotify_client_id: str = Field("", validation_alias=_env("SPOTIFY_CLIENT_ID"))
    spotify_client_secret: str | None = Field(
        None, repr=False, validation_alias=_env("SPOTIFY_CLIENT_SECRET")
    )
    spotify_batch_reads: bool = Field(False, validation_alias=_env("SPOTIFY_BATCH_READS"))
    spotify_timeout_s: float = Field(
        10.0,
        gt=0,
        le=900,
        allow_inf_nan=False,
        validation_alias=_env("SPOTIFY_TIMEOUT_SECONDS", "SPOTIFY_TIMEOUT_S"),
    )
    spotify_rate_budget: int = Field(150, ge=1, le=_NO_LIMIT, validation_alias=_env("SPOTIFY_RATE_BUDGET"))
    spotify_rate_window_s: int = Field(
        30, ge=1, le=_DAY, validation_alias=_env("SPOTIFY_RATE_WINDOW_SECONDS", "SPOTIFY_RATE_WINDOW_S")
    )

    # --- auth -----------------------------------------------------------------------------------
    pkce_ttl_s: int = Field(600, ge=1, le=_DAY, validation_alias=_env("PKCE_TTL_SECONDS"))
    # Browsers keep a cookie at most 400 days.
    session_ttl_days: int = Field(30, ge=1, le=400, validation_alias=_env("SESSION_TTL_DAYS"))
    # A session ends this long after sign-in, however often it is used.
    session_max_days: int = Field(90, ge=1, le=3650, validation_alias=_env("SESSION_MAX_DAYS"))
    login_rate_limit: int = Field(20, ge=1, le=_NO_LIMIT, validation_alias=_env("LOGIN_RATE_LIMIT"))
    login_rate_window_s: int = Field(60, ge=1, le=_DAY, validation_alias=_env("LOGIN_RATE_WINDOW_SECONDS"))

    # --- imports ------------------------------------------------------------------------------
    # S3 takes at most 5 GiB in one upload.
    max_upload_bytes: int = Field(
        512 * 1024 * 1024, ge=1, le=5 * _GIB, validation_alias=_env("MAX_UPLOAD_BYTES")
    )
    # A presigned URL lives at most 7 days.
    upload_url_ttl_s: int = Field(900, ge=1, le=7 * _DAY, validation_alias=_env("UPLOAD_URL_TTL_SECONDS"))
    # Imports a user may create per window.
    import_create_limit: int = Field(10, ge=1, le=_NO_LIMIT, validation_alias=_env("IMPORT_CREATE_LIMIT"))
    import_create_window_s: int = Field(
        3600, ge=1, le=7 * _DAY, validation_alias=_env("IMPORT_CREATE_WINDOW_SECONDS")
    )
    import_batch_size: int = Field(500_000, ge=1, le=10_000_000, validation_alias=_env("IMPORT_BATCH_SIZE"))
    import_max_uncompressed_bytes: int = Field(
        4 * _GIB, ge=1, le=1024 * _GIB, validation_alias=_env("IMPORT_MAX_UNCOMPRESSED_BYTES")
    )
    import_max_ratio: int = Field(200, ge=1, le=100_000, validation_alias=_env("IMPORT_MAX_RATIO"))
    import_stuck_s: int = Field(1800, ge=_MINUTE, le=7 * _DAY, validation_alias=_env("IMPORT_STUCK_SECONDS"))
    upload_retention_days: int = Field(7, ge=1, le=3650, validation_alias=_env("UPLOAD_RETENTION_DAYS"))

    # --- exports ------------------------------------------------------------------------------
    export_queue_url: str | None = Field(None, validation_alias=_env("EXPORT_QUEUE_URL"))
    # An export's file is deleted this long after it was written (the bucket's lifecycle rule).
    export_ttl_days: int = Field(7, ge=1, le=365, validation_alias=_env("EXPORT_TTL_DAYS"))
    # Life of a presigned download, issued fresh on every read.
    export_download_url_ttl_s: int = Field(
        300, ge=10, le=43_200, validation_alias=_env("EXPORT_DOWNLOAD_URL_TTL_SECONDS")
    )
    export_stuck_s: int = Field(1800, ge=_MINUTE, le=7 * _DAY, validation_alias=_env("EXPORT_STUCK_SECONDS"))
    # Unset: the import bucket (under exports/).
    export_bucket: str | None = Field(None, validation_alias=_env("EXPORT_BUCKET"))

    # --- sync, enrichment, top lists -----------------------------------------------------------
    sync_cooldown_s: int = Field(600, ge=0, le=_DAY, validation_alias=_env("SYNC_COOLDOWN_SECONDS"))
    sync_max_interval_s: int = Field(
        3600, ge=0, le=7 * _DAY, validation_alias=_env("SYNC_MAX_INTERVAL_SECONDS")
    )
    # How often the sync-fanout schedule runs (the wiring's rate; 0: not known).
    sync_fanout_period_s: int = Field(
        900, ge=0, le=31 * _DAY, validation_alias=_env("SYNC_FANOUT_PERIOD_SECONDS")
    )
    sync_active_days: int = Field(30, ge=1, le=3650, validation_alias=_env("SYNC_ACTIVE_DAYS"))
    sync_manual_interval_s: int = Field(
        60, ge=0, le=_DAY, validation_alias=_env("SYNC_MANUAL_INTERVAL_SECONDS")
    )
    sync_fanout_page_size: int = Field(
        5000, ge=1, le=1_000_000, validation_alias=_env("SYNC_FANOUT_PAGE_SIZE")
    )
    # SQS delays a message at most 15 minutes.
    sync_max_delay_s: int = Field(60, ge=0, le=15 * _MINUTE, validation_alias=_env("SYNC_MAX_DELAY_SECONDS"))
    enrichment_batch_size: int = Field(50, ge=1, le=10_000, validation_alias=_env("ENRICHMENT_BATCH_SIZE"))
    top_refresh_tier1_h: int = Field(24, ge=1, le=365 * 24, validation_alias=_env("TOP_REFRESH_TIER1_HOURS"))
    top_refresh_tier2_h: int = Field(72, ge=1, le=365 * 24, validation_alias=_env("TOP_REFRESH_TIER2_HOURS"))

    # --- maintenance -------------------------------------------------------------------------
    partition_months_ahead: int = Field(3, ge=1, le=120, validation_alias=_env("PARTITION_MONTHS_AHEAD"))

    # The environment the settings were read from, whole (empty unless read by from_env).
    _extra: Mapping[str, str] = PrivateAttr(default_factory=dict)

    # field name -> its variables, the canonical one first (filled in below the class)
    env_names: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def __init__(self, **values: Any) -> None:
        """The defaults with ``values`` (by field or variable name; ``extra``: the environment to
        report as read); the environment is read only by :meth:`from_env`."""
        extra = values.pop("extra", None)
        canonical = {}
        for name, value in values.items():
            if name in self.env_names:
                name = self.env_names[name][0]
            elif name not in _FIELD_OF:
                raise TypeError(f"Settings has no field or variable {name!r}")
            canonical[name] = value
        try:
            super().__init__(**canonical)
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None
        if extra is not None:
            self._extra = dict(extra)

    # --- normalising and deriving ------------------------------------------------------------

    @field_validator("api_url", "spotify_accounts_url", "spotify_api_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("app_url")
    @classmethod
    def _app_url(cls, value: str, info: ValidationInfo) -> str:
        return (value or info.data.get("api_url") or "").rstrip("/")

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _allowed_origins(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
        if not value and "app_url" in info.data:
            return (_origin_of(info.data["app_url"]),)
        return value

    @field_validator("db_iam_auth", "spotify_batch_reads", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    # --- reading -------------------------------------------------------------------------------

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Values given to the constructor, then (under :meth:`from_env`) the environment; no files."""
        environ = _ENVIRON.get()
        if environ is None:
            return (init_settings,)
        return (init_settings, _Environment(settings_cls, environ))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings ``env`` (``os.environ`` unless given) sets, the defaults for the rest."""
        environ = os.environ if env is None else env
        token = _ENVIRON.set(environ)
        try:
            settings = cls()
        finally:
            _ENVIRON.reset(token)
        settings._extra = dict(environ)
        return settings

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (field names, or ``extra``), checked as the environment is."""
        unknown = sorted(set(changes) - set(type(self).model_fields) - {"extra"})
        if unknown:
            raise TypeError(f"Settings has no field {', '.join(map(repr, unknown))}")
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**values, "extra": self._extra, **changes})

    # Equal settings are those of equal fields, wherever they were read from (extra is not compared).
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    # --- derived -------------------------------------------------------------------------------

    @property
    def extra(self) -> Mapping[str, str]:
        """The whole environment the settings were read from (variables MYI does not model too)."""
        return self._extra

    @property
    def api_is_https(self) -> bool:
        return self.api_url.startswith("https://")

    def require(self, attr: str, env_name: str) -> Any:
        """Return a setting that a code path cannot run without, or say which variable to set."""
        value = getattr(self, attr)
        if value in (None, ""):
            raise SettingsError(f"{env_name} is not set")
        return value


def _names(field: FieldInfo) -> tuple[str, ...]:
    alias = field.validation_alias
    assert isinstance(alias, AliasChoices), "every setting names its variables"
    return tuple(choice for choice in alias.choices if isinstance(choice, str))


Settings.env_names = {name: _names(field) for name, field in Settings.model_fields.items()}
# every variable -> its field
_FIELD_OF = {env: name for name, envs in Settings.env_names.items() for env in envs}

# The environment Settings() reads: None outside from_env (defaults and the values given only).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("myi_settings_environ", default=None)


class _Environment(PydanticBaseSettingsSource):
    """The variables of one environment that name a setting: for each field, the first of its names
    that is set (not empty), as the raw string; pydantic parses and checks it."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for name in _names(field):
            value = self._environ.get(name)
            if value:
                return value, name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, name, _ = self.get_field_value(field, field_name)
            if value is not None:
                found[name] = value
        return found


# --- errors ----------------------------------------------------------------------------------------

_WHAT = {
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "int_type": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
}


def _explain(exc: ValidationError) -> str:
    """One sentence per refused value, each naming the variable (the one that was set, else the
    field's canonical one) and, unless the field is secret, the value."""
    return "; ".join(_explain_one(error) for error in exc.errors(include_url=False))


def _explain_one(error: Any) -> str:
    loc = error.get("loc") or ()
    key = str(loc[0]) if loc else ""
    field = _FIELD_OF.get(key, key)
    name = key if key in _FIELD_OF else Settings.env_names.get(field, (key,))[0]
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        limit = next(iter(ctx.values()), "?")
        what = {
            "greater_than_equal": f"must be at least {limit}",
            "greater_than": f"must be more than {limit}",
            "less_than_equal": f"must be at most {limit}",
            "less_than": f"must be less than {limit}",
        }[kind]
    else:
        what = _WHAT.get(kind) or f"is not acceptable ({error.get('msg', kind)})"
    info = Settings.model_fields.get(field)
    if info is not None and not info.repr:
        return f"{name} {what}"
    return f"{name} {what}, got {error.get('input')!r}"


def _origin_of(url: str) -> str:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}"


@functools.cache
def get_settings() -> Settings:
    """The settings of this execution environment, read at first use (cold start)."""
    return Settings.from_env()
