"""The settings model (``myi.settings``): defaults, every variable name (old and new), bounds refused
with a message naming the variable, derived values, copies and the cached settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from myi.settings import Settings, SettingsError, get_settings

# Every variable the hand-written reader of the first releases read, with its field: each must keep
# working, whatever the canonical name is now.
HISTORICAL = {
    "STAGE": "stage",
    "AWS_REGION": "region",
    "AWS_DEFAULT_REGION": "region",
    "AWS_ENDPOINT_URL": "aws_endpoint_url",
    "DATABASE_URL": "database_url",
    "DB_HOST": "db_host",
    "DB_PORT": "db_port",
    "DB_NAME": "db_name",
    "DB_USER": "db_user",
    "DB_SECRET_ARN": "db_secret_arn",
    "DB_IAM_AUTH": "db_iam_auth",
    "DB_CONNECT_TIMEOUT_S": "db_connect_timeout_s",
    "API_STATEMENT_TIMEOUT_MS": "api_statement_timeout_ms",
    "STATE_TABLE": "state_table",
    "IMPORT_BUCKET": "import_bucket",
    "SYNC_QUEUE_URL": "sync_queue_url",
    "IMPORT_QUEUE_URL": "import_queue_url",
    "ENRICHMENT_QUEUE_URL": "enrichment_queue_url",
    "TOP_STATS_QUEUE_URL": "top_stats_queue_url",
    "TOKEN_KEY_SECRET_ID": "token_key_secret_id",
    "SPOTIFY_CLIENT_SECRET_ID": "spotify_client_secret_id",
    "API_URL": "api_url",
    "APP_URL": "app_url",
    "ALLOWED_ORIGINS": "allowed_origins",
    "CURSOR_KEY": "cursor_key",
    "ZONE_CHANGE_LIMIT": "zone_change_limit",
    "ZONE_CHANGE_WINDOW_SECONDS": "zone_change_window_s",
    "SPOTIFY_ACCOUNTS_URL": "spotify_accounts_url",
    "SPOTIFY_API_URL": "spotify_api_url",
    "SPOTIFY_CLIENT_ID": "spotify_client_id",
    "SPOTIFY_CLIENT_SECRET": "spotify_client_secret",
    "SPOTIFY_BATCH_READS": "spotify_batch_reads",
    "SPOTIFY_TIMEOUT_S": "spotify_timeout_s",
    "SPOTIFY_RATE_BUDGET": "spotify_rate_budget",
    "SPOTIFY_RATE_WINDOW_S": "spotify_rate_window_s",
    "PKCE_TTL_SECONDS": "pkce_ttl_s",
    "SESSION_TTL_DAYS": "session_ttl_days",
    "SESSION_MAX_DAYS": "session_max_days",
    "LOGIN_RATE_LIMIT": "login_rate_limit",
    "LOGIN_RATE_WINDOW_SECONDS": "login_rate_window_s",
    "MAX_UPLOAD_BYTES": "max_upload_bytes",
    "UPLOAD_URL_TTL_SECONDS": "upload_url_ttl_s",
    "IMPORT_CREATE_LIMIT": "import_create_limit",
    "IMPORT_CREATE_WINDOW_SECONDS": "import_create_window_s",
    "IMPORT_BATCH_SIZE": "import_batch_size",
    "IMPORT_MAX_UNCOMPRESSED_BYTES": "import_max_uncompressed_bytes",
    "IMPORT_MAX_RATIO": "import_max_ratio",
    "IMPORT_STUCK_SECONDS": "import_stuck_s",
    "UPLOAD_RETENTION_DAYS": "upload_retention_days",
    "SYNC_COOLDOWN_SECONDS": "sync_cooldown_s",
    "SYNC_MAX_INTERVAL_SECONDS": "sync_max_interval_s",
    "SYNC_FANOUT_PERIOD_SECONDS": "sync_fanout_period_s",
    "SYNC_ACTIVE_DAYS": "sync_active_days",
    "SYNC_MANUAL_INTERVAL_SECONDS": "sync_manual_interval_s",
    "SYNC_FANOUT_PAGE_SIZE": "sync_fanout_page_size",
    "SYNC_MAX_DELAY_SECONDS": "sync_max_delay_s",
    "ENRICHMENT_BATCH_SIZE": "enrichment_batch_size",
    "TOP_REFRESH_TIER1_HOURS": "top_refresh_tier1_h",
    "TOP_REFRESH_TIER2_HOURS": "top_refresh_tier2_h",
    "PARTITION_MONTHS_AHEAD": "partition_months_ahead",
}

RENAMED = {
    "DB_CONNECT_TIMEOUT_S": "DB_CONNECT_TIMEOUT_SECONDS",
    "SPOTIFY_TIMEOUT_S": "SPOTIFY_TIMEOUT_SECONDS",
    "SPOTIFY_RATE_WINDOW_S": "SPOTIFY_RATE_WINDOW_SECONDS",
}


def sample(field: str) -> tuple[str, Any]:
    """A value other than the default for ``field``, as the environment spells it and as read."""
    default = getattr(Settings(), field)
    if isinstance(default, bool):
        return ("false", False) if default else ("true", True)
    if isinstance(default, int):
        value = default - 1 if default > 1 else default + 1
        return str(value), value
    if isinstance(default, float):
        return "2.5", 2.5
    if isinstance(default, tuple):
        return "https://spa.example", ("https://spa.example",)
    return f"value-of-{field}", f"value-of-{field}"


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """get_settings() reads the environment anew in the test, and again after it."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --- defaults ------------------------------------------------------------------------------------


def test_an_empty_environment_gives_the_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.stage, s.region, s.db_port, s.db_iam_auth, s.cursor_key) == (
        "local",
        "us-east-1",
        5432,
        False,
        None,
    )
    assert s.api_url == s.app_url == "http://127.0.0.1:8000"
    assert s.allowed_origins == ("http://127.0.0.1:8000",)
    assert (s.db_connect_timeout_s, s.spotify_timeout_s, s.spotify_rate_window_s) == (5, 10.0, 30)
    assert (s.sync_cooldown_s, s.sync_max_interval_s, s.sync_max_delay_s) == (600, 3600, 60)
    assert s.max_upload_bytes == 512 * 1024 * 1024 and s.import_max_uncompressed_bytes == 4 * 1024**3


def test_an_empty_variable_is_unset() -> None:
    s = Settings.from_env({"STAGE": "", "DB_PORT": "", "API_URL": "", "ALLOWED_ORIGINS": ""})
    assert s == Settings()


def test_the_constructor_takes_values_not_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "from-the-environment")
    assert Settings().stage == "local"
    assert Settings(stage="given").stage == "given"
    assert Settings(STAGE="given", SYNC_COOLDOWN_SECONDS="5").sync_cooldown_s == 5  # variable names too
    assert Settings.from_env().stage == "from-the-environment"


def test_a_given_environment_is_the_only_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "from-os-environ")
    s = Settings.from_env({"IMPORT_BUCKET": "bucket"})
    assert (s.stage, s.import_bucket) == ("local", "bucket")
    assert s.extra == {"IMPORT_BUCKET": "bucket"}


# --- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "field"), sorted(HISTORICAL.items()))
def test_every_historical_variable_still_sets_its_field(name: str, field: str) -> None:
    raw, expected = sample(field)
    assert getattr(Settings.from_env({name: raw}), field) == expected


def test_every_canonical_name_spells_out_its_unit() -> None:
    for field, names in Settings.env_names.items():
        assert not names[0].endswith("_S"), f"{field}: {names[0]} (use _SECONDS)"
    assert {old: Settings.env_names[HISTORICAL[old]][0] for old in RENAMED} == RENAMED


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED.items()))
def test_a_renamed_variable_answers_to_both_names_and_the_new_one_wins(old: str, new: str) -> None:
    field = HISTORICAL[old]
    assert Settings.env_names[field] == (new, old)
    assert getattr(Settings.from_env({new: "7"}), field) == 7
    assert getattr(Settings.from_env({old: "8"}), field) == 8
    assert getattr(Settings.from_env({old: "8", new: "7"}), field) == 7


def test_the_region_is_aws_region_else_aws_default_region() -> None:
    assert Settings.from_env({"AWS_DEFAULT_REGION": "eu-west-1"}).region == "eu-west-1"
    assert (
        Settings.from_env({"AWS_REGION": "eu-north-1", "AWS_DEFAULT_REGION": "eu-west-1"}).region
        == "eu-north-1"
    )


def test_names_are_case_sensitive() -> None:
    assert Settings.from_env({"stage": "lower", "Db_Port": "1"}) == Settings()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("False", False),
        ("off ", False),
    ],
)
@pytest.mark.parametrize("name", ["DB_IAM_AUTH", "SPOTIFY_BATCH_READS"])
def test_flags_read_as_before(name: str, raw: str, expected: bool) -> None:
    assert getattr(Settings.from_env({name: raw}), HISTORICAL[name]) is expected


# --- bounds and malformed values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DB_PORT": "0"}, "DB_PORT must be at least 1, got '0'"),
        ({"DB_PORT": "65536"}, "DB_PORT must be at most 65535, got '65536'"),
        ({"SYNC_MAX_DELAY_SECONDS": "901"}, "SYNC_MAX_DELAY_SECONDS must be at most 900, got '901'"),
        ({"SYNC_COOLDOWN_SECONDS": "-1"}, "SYNC_COOLDOWN_SECONDS must be at least 0, got '-1'"),
        ({"SPOTIFY_RATE_WINDOW_S": "0"}, "SPOTIFY_RATE_WINDOW_S must be at least 1, got '0'"),
        ({"SPOTIFY_RATE_WINDOW_SECONDS": "0"}, "SPOTIFY_RATE_WINDOW_SECONDS must be at least 1"),
        ({"SPOTIFY_TIMEOUT_SECONDS": "0"}, "SPOTIFY_TIMEOUT_SECONDS must be more than 0"),
        ({"SPOTIFY_TIMEOUT_S": "inf"}, "SPOTIFY_TIMEOUT_S must be a finite number, got 'inf'"),
        ({"SPOTIFY_TIMEOUT_S": "soon"}, "SPOTIFY_TIMEOUT_S must be a number, got 'soon'"),
        ({"MAX_UPLOAD_BYTES": str(6 * 1024**3)}, "MAX_UPLOAD_BYTES must be at most 5368709120"),
        ({"IMPORT_BATCH_SIZE": "many"}, "IMPORT_BATCH_SIZE must be an integer, got 'many'"),
        ({"IMPORT_BATCH_SIZE": "1.5"}, "IMPORT_BATCH_SIZE must be an integer, got '1.5'"),
        ({"DB_IAM_AUTH": "maybe"}, "DB_IAM_AUTH must be true or false, got 'maybe'"),
        ({"SESSION_TTL_DAYS": "401"}, "SESSION_TTL_DAYS must be at most 400"),
        ({"IMPORT_STUCK_SECONDS": "59"}, "IMPORT_STUCK_SECONDS must be at least 60"),
    ],
)
def test_a_value_out_of_bounds_or_malformed_is_refused_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert message in str(refused.value)
    assert isinstance(refused.value, ValueError)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_PORT", "1"),
        ("DB_PORT", "65535"),
        ("SYNC_MAX_DELAY_SECONDS", "900"),
        ("SYNC_COOLDOWN_SECONDS", "0"),
        ("SYNC_MAX_INTERVAL_SECONDS", "0"),
        ("API_STATEMENT_TIMEOUT_MS", "0"),
        ("MAX_UPLOAD_BYTES", str(5 * 1024**3)),
        ("IMPORT_BATCH_SIZE", " 2000 "),
    ],
)
def test_the_bounds_themselves_are_accepted(name: str, value: str) -> None:
    field = HISTORICAL[name]
    assert getattr(Settings.from_env({name: value}), field) == int(value)


def test_every_refused_value_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DB_PORT": "x", "SYNC_MAX_DELAY_SECONDS": "9999", "STAGE": "fine"})
    assert "DB_PORT" in str(refused.value) and "SYNC_MAX_DELAY_SECONDS" in str(refused.value)


def test_a_secret_is_never_repeated_in_a_message_or_the_repr() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings(cursor_key=12345)
    assert "CURSOR_KEY" in str(refused.value) and "12345" not in str(refused.value)
    s = Settings.from_env(
        {
            "CURSOR_KEY": "k-secret",
            "SPOTIFY_CLIENT_SECRET": "c-secret",
            "DATABASE_URL": "postgresql://u:pw@h/db",
        }
    )
    assert "k-secret" not in repr(s) and "c-secret" not in repr(s) and "pw@" not in repr(s)


# --- derived values ---------------------------------------------------------------------------------


def test_urls_lose_their_trailing_slash_and_the_app_defaults_to_the_api() -> None:
    s = Settings.from_env({"API_URL": "https://api.example.com/", "SPOTIFY_API_URL": "http://fake:1/v1/"})
    assert s.api_url == s.app_url == "https://api.example.com"
    assert s.spotify_api_url == "http://fake:1/v1"
    assert s.allowed_origins == ("https://api.example.com",)
    assert s.api_is_https and not Settings().api_is_https


def test_the_allowed_origins_default_to_the_apps_origin() -> None:
    s = Settings.from_env({"API_URL": "https://api.example.com", "APP_URL": "https://app.example.com/stats/"})
    assert s.app_url == "https://app.example.com/stats"
    assert s.allowed_origins == ("https://app.example.com",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://a.example", ("https://a.example",)),
        (" https://a.example/ , https://b.example,, ", ("https://a.example", "https://b.example")),
        (" , ", ("http://127.0.0.1:8000",)),  # nothing but commas: unset
    ],
)
def test_the_allowed_origins_are_a_comma_separated_list(raw: str, expected: tuple[str, ...]) -> None:
    assert Settings.from_env({"ALLOWED_ORIGINS": raw}).allowed_origins == expected


def test_require_names_the_variable_to_set() -> None:
    s = Settings()
    with pytest.raises(SettingsError, match="SYNC_QUEUE_URL is not set"):
        s.require("sync_queue_url", "SYNC_QUEUE_URL")
    assert s.replace(sync_queue_url="http://q").require("sync_queue_url", "SYNC_QUEUE_URL") == "http://q"


# --- copies -------------------------------------------------------------------------------------------


def test_replace_changes_only_what_it_is_given() -> None:
    base = Settings.from_env({"API_URL": "https://api.example.com", "SPOTIFY_RATE_WINDOW_S": "9"})
    changed = base.replace(sync_cooldown_s=0, import_bucket="other")
    assert (changed.sync_cooldown_s, changed.import_bucket) == (0, "other")
    assert changed.replace(sync_cooldown_s=base.sync_cooldown_s, import_bucket=base.import_bucket) == base
    assert (base.sync_cooldown_s, base.import_bucket) == (600, "myi-imports")
    assert changed.spotify_rate_window_s == 9 and changed.extra == base.extra
    # a derived value is not derived again, as with the dataclass it replaces
    assert base.replace(app_url="https://elsewhere.example").allowed_origins == ("https://api.example.com",)


def test_the_environment_read_can_be_given_as_extra() -> None:
    s = Settings(stage="given", extra={"EXPORT_TTL_DAYS": "3"})
    assert s.extra == {"EXPORT_TTL_DAYS": "3"} and Settings().extra == {}
    changed = s.replace(extra={"EXPORT_TTL_DAYS": "4"})
    assert changed.extra == {"EXPORT_TTL_DAYS": "4"} and changed == s  # extra is not compared


def test_replace_checks_the_bounds_and_the_names() -> None:
    with pytest.raises(SettingsError, match="SYNC_MAX_DELAY_SECONDS must be at most 900, got 901"):
        Settings().replace(sync_max_delay_s=901)
    with pytest.raises(TypeError, match="no_such_setting"):
        Settings().replace(no_such_setting=1)
    with pytest.raises(TypeError):
        Settings(no_such_setting=1)


def test_settings_are_immutable_and_hashable() -> None:
    s = Settings()
    with pytest.raises(ValueError):
        s.stage = "changed"
    assert hash(s) == hash(Settings()) and {s: 1}[Settings()] == 1


# --- the settings of the execution environment ------------------------------------------------------


def test_get_settings_reads_once_until_cleared(monkeypatch: pytest.MonkeyPatch, fresh_settings: None) -> None:
    monkeypatch.setenv("STAGE", "first")
    first = get_settings()
    monkeypatch.setenv("STAGE", "second")
    assert get_settings() is first and first.stage == "first"
    get_settings.cache_clear()
    assert get_settings().stage == "second"


def test_a_bad_variable_fails_the_first_read(monkeypatch: pytest.MonkeyPatch, fresh_settings: None) -> None:
    monkeypatch.setenv("SPOTIFY_RATE_WINDOW_SECONDS", "forever")
    with pytest.raises(SettingsError, match="SPOTIFY_RATE_WINDOW_SECONDS must be an integer"):
        get_settings()
