"""Property-based fuzzing of every route of the OpenAPI document (the auth function's included),
against the local runtime, as a signed-in user with synced plays: no 5xx, and every response
(status, content type, body) is one the document declares."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import print_log_on_failure, sign_in
from tests.fixtures.local_runtime import LocalRuntime

log_on_failure = pytest.fixture(autouse=True)(print_log_on_failure)


@pytest.fixture(scope="module")
def cookie(runtime: LocalRuntime) -> str:
    value, _, _ = sign_in(runtime, "ana")
    fired = runtime.run_schedule("sync-fanout")
    assert fired.status_code == 200, fired.text
    runtime.drain(timeout_s=90)
    return value


def test_no_route_answers_5xx_or_outside_the_document(runtime: LocalRuntime, cookie: str) -> None:
    schema = schemathesis.openapi.from_url(f"{runtime.url}/openapi.json")
    # Deleting the account or signing out would end the session every other case needs; their own
    # tests cover them. The sign-in routes are fuzzed too (their redirects are not followed).
    kept = schema.exclude(path="/me", method="DELETE").exclude(path="/auth/logout", method="POST")
    operations = [r.ok() for r in kept.get_all_operations()]
    assert {op.path for op in operations} >= {"/auth/login", "/auth/callback"}
    assert len(operations) >= 14  # schemathesis leaves out the document's own route
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            case.call_and_validate(cookies={"myi_session": cookie}, timeout=30, checks=CHECKS)

        fuzz()


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
