"""The local runtime started as `make local` starts it, driven over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from openapi_spec_validator import validate

from myi import partitions
from tests.fixtures.local_runtime import LocalRuntime


def test_health_answers_through_the_api_function(local_runtime: LocalRuntime) -> None:
    response = local_runtime.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "api http:GET /health" in local_runtime.log()


def test_the_openapi_document_is_generated_and_valid(local_runtime: LocalRuntime) -> None:
    response = local_runtime.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert "/health" in document["paths"]
    # The auth function's routes are in the API function's document (tests/unit/test_openapi.py).
    assert {"/auth/login", "/auth/callback", "/auth/logout"} <= document["paths"].keys()


def test_unknown_routes_answer_404_in_the_error_shape(local_runtime: LocalRuntime) -> None:
    response = local_runtime.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert local_runtime.post("/_local/schedules/no-such-rule").status_code == 404


def test_partition_maintenance_runs_from_the_control_route(local_runtime: LocalRuntime) -> None:
    with psycopg.connect(local_runtime.database_url, autocommit=True) as conn:
        for month in partitions.existing_partitions(conn):
            conn.execute(f"DROP TABLE {partitions.partition_name(month)}")
        assert partitions.existing_partitions(conn) == set()

    response = local_runtime.run_schedule("partition-maintenance")
    assert response.status_code == 200, response.text
    assert local_runtime.drain(30)["drained"] is True

    this_month = partitions.month_start(datetime.now(UTC).date())
    with psycopg.connect(local_runtime.database_url, autocommit=True) as conn:
        months = partitions.existing_partitions(conn)
    assert {partitions.add_months(this_month, n) for n in range(4)} <= months
    assert "partition_maintenance schedule:partition-maintenance" in local_runtime.log()


def test_cors_preflight_is_answered_for_the_app_origin_only(local_runtime: LocalRuntime) -> None:
    own = local_runtime.url
    ok = local_runtime.client.options(
        "/health", headers={"Origin": own, "Access-Control-Request-Method": "POST"}
    )
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == own
    assert ok.headers["access-control-allow-credentials"] == "true"
    other = local_runtime.client.options(
        "/health", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in other.headers
    actual = local_runtime.get("/health", headers={"Origin": own})
    assert actual.headers["access-control-allow-origin"] == own


def test_a_signal_stops_the_runtime_cleanly_and_a_second_start_reuses_the_data(tmp_path) -> None:
    from devtools import embedded
    from tests.fixtures.local_runtime import start_local_runtime, stop_local_runtime

    pg = embedded.start_postgres("pg-test")
    url = pg.create_database()
    try:
        first = start_local_runtime(url, tmp_path / "first.log")
        assert stop_local_runtime(first) == 0
        assert "migrations applied" in first.log()
        assert "stopping" in first.log()
        second = start_local_runtime(url, tmp_path / "second.log")
        try:
            assert second.get("/health").status_code == 200
        finally:
            assert stop_local_runtime(second) == 0
        assert "migrations applied" not in second.log()
    finally:
        pg.drop_database(url)
