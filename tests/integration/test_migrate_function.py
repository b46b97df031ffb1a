"""The migration function: the deploy-time custom resource and the operators' statistics tools."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from devtools.local.context import LocalContext
from devtools.local.runtime import REPO_ROOT, load_handler
from myi.ingestion import ingest
from tests.fixtures.plays import extended_play, make_user


def handler() -> Any:
    return load_handler(REPO_ROOT / "functions", "migrate")


def context() -> LocalContext:
    return LocalContext("migrate", 512, 300)


def test_the_custom_resource_brings_the_schema_up_to_date_and_deletes_nothing(
    db_conn: psycopg.Connection[Any], aws_resources: dict[str, str], settings: Any
) -> None:
    run = handler()
    created = run({"RequestType": "Create"}, context())
    assert created["PhysicalResourceId"] == "myi-schema" and created["Data"]["Applied"] == "none"
    user = make_user(db_conn)
    deleted = run({"RequestType": "Delete", "PhysicalResourceId": "myi-schema"}, context())
    assert deleted == {"PhysicalResourceId": "myi-schema"}
    assert db_conn.execute("SELECT count(*) FROM users WHERE id = %s", (user,)).fetchone() == (1,)


def test_operators_verify_and_rebuild_a_users_statistics(
    db_conn: psycopg.Connection[Any], aws_resources: dict[str, str], settings: Any
) -> None:
    user = make_user(db_conn)
    ingest(db_conn, user, [extended_play(1, datetime(2024, 5, 1, tzinfo=UTC), 60_000)])
    run = handler()
    assert run({"stats": "verify", "user_id": user}, context())["exact"] is True
    db_conn.execute("UPDATE stat_user SET plays = plays + 5 WHERE user_id = %s", (user,))
    broken = run({"stats": "verify", "user_id": str(user)}, context())
    assert broken["exact"] is False and broken["differences"]
    assert run({"stats": "rebuild", "user_id": user}, context()) == {"user_id": user, "rebuilt": True}
    assert run({"stats": "verify", "user_id": user}, context())["exact"] is True
