"""The migration function: the deploy-time custom resource and the operators' statistics tools."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from myi.ingestion import ingest
from tests.fixtures.plays import extended_play, make_user

HANDLER = Path(__file__).resolve().parents[2] / "functions" / "migrate" / "handler.py"


@dataclass
class Context:
    function_name: str = "migrate"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:migrate"
    aws_request_id: str = "req-1"


def handler() -> Any:
    spec = importlib.util.spec_from_file_location("myi_function_migrate", HANDLER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


def test_the_custom_resource_brings_the_schema_up_to_date_and_deletes_nothing(
    db_conn: psycopg.Connection[Any], aws_resources: dict[str, str], settings: Any
) -> None:
    run = handler()
    created = run({"RequestType": "Create"}, Context())
    assert created["PhysicalResourceId"] == "myi-schema" and created["Data"]["Applied"] == "none"
    user = make_user(db_conn)
    deleted = run({"RequestType": "Delete", "PhysicalResourceId": "myi-schema"}, Context())
    assert deleted == {"PhysicalResourceId": "myi-schema"}
    assert db_conn.execute("SELECT count(*) FROM users WHERE id = %s", (user,)).fetchone() == (1,)


def test_operators_verify_and_rebuild_a_users_statistics(
    db_conn: psycopg.Connection[Any], aws_resources: dict[str, str], settings: Any
) -> None:
    user = make_user(db_conn)
    ingest(db_conn, user, [extended_play(1, datetime(2024, 5, 1, tzinfo=UTC), 60_000)])
    run = handler()
    assert run({"stats": "verify", "user_id": user}, Context())["exact"] is True
    db_conn.execute("UPDATE stat_user SET plays = plays + 5 WHERE user_id = %s", (user,))
    broken = run({"stats": "verify", "user_id": str(user)}, Context())
    assert broken["exact"] is False and broken["differences"]
    assert run({"stats": "rebuild", "user_id": user}, Context()) == {"user_id": user, "rebuilt": True}
    assert run({"stats": "verify", "user_id": user}, Context())["exact"] is True
