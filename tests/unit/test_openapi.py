"""The OpenAPI document the API function serves at /openapi.json: valid OpenAPI 3.1, every route of
API.md and of the wiring in it (the auth function's included, which the API function does not
serve), and every operation declaring the errors it answers, in the one error shape."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from devtools.local import events
from infra.wiring import WIRING
from myi.api.app import build_app
from myi.auth.routes import build_auth_app

# The routes of API.md (the binding contract, ../shared/API.md), path parameters as {}.
API_MD_ROUTES = {
    ("GET", "/auth/login"),
    ("GET", "/auth/callback"),
    ("POST", "/auth/logout"),
    ("GET", "/me"),
    ("PATCH", "/me"),
    ("DELETE", "/me"),
    ("GET", "/me/stats/overview"),
    ("GET", "/me/stats/top/{}"),
    ("GET", "/me/stats/activity"),
    ("GET", "/me/history"),
    ("GET", "/me/spotify-top/{}"),
    ("POST", "/me/imports"),
    ("GET", "/me/imports"),
    ("GET", "/me/imports/{}"),
    ("POST", "/me/exports"),
    ("GET", "/me/exports"),
    ("GET", "/me/exports/{}"),
    ("POST", "/me/sync"),
    ("GET", "/health"),
    ("GET", "/openapi.json"),
}
API_MD = Path(__file__).resolve().parents[2].parent / "shared" / "API.md"
METHODS = ("get", "put", "post", "patch", "delete")


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def _request(app: Any, method: str, path: str) -> dict[str, Any]:
    match, known = events.match_route(WIRING.routes(), method, path)
    assert match is not None, known
    event = events.http_to_event(
        method=method,
        raw_path=path,
        raw_query="",
        headers=[],
        body=b"",
        match=match,
        source_ip="127.0.0.1",
        host="localhost",
        now=datetime.now(UTC),
    )
    result: dict[str, Any] = app.resolve(event, None)
    return result


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    served = _request(build_app(), "GET", "/openapi.json")
    assert served["statusCode"] == 200, served
    doc: dict[str, Any] = json.loads(served["body"])
    return doc


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_of_api_md_is_in_the_document(document: dict[str, Any]) -> None:
    documented = {(method, _shape(path)) for method, path in operations(document)}
    missing = API_MD_ROUTES - documented
    assert not missing, sorted(missing)


def test_the_export_routes_document_their_responses(document: dict[str, Any]) -> None:
    ops = operations(document)
    assert {"202", "400", "401", "403", "409", "415"} <= set(ops[("POST", "/me/exports")]["responses"])
    for path in ("/me/exports", "/me/exports/{}"):
        (operation,) = (op for (method, p), op in ops.items() if method == "GET" and _shape(p) == path)
        assert {"200", "400", "401"} <= set(operation["responses"])


def test_the_list_of_routes_is_api_mds() -> None:
    if not API_MD.exists():
        pytest.skip(f"no {API_MD} here")
    text = API_MD.read_text(encoding="utf-8")
    text = text.split("## The local runtime")[0]  # its control routes are not deployed
    written = {
        (method, _shape(path))
        for method, path in re.findall(r"`(GET|PUT|POST|PATCH|DELETE) (/[^`?\s]*)", text)
    }
    assert written == API_MD_ROUTES


def test_the_document_has_the_routes_of_the_api_and_auth_functions_and_no_other(
    document: dict[str, Any],
) -> None:
    wired = {
        (route.method, _shape(route.path)) for route, fn in WIRING.routes() if fn.name in ("api", "auth")
    }
    documented = {(method, _shape(path)) for method, path in operations(document)}
    assert documented == wired


def test_the_api_function_does_not_serve_the_auth_routes_nor_the_auth_function_the_api() -> None:
    api, auth = build_app(), build_auth_app()
    for method, path in (("GET", "/auth/login"), ("GET", "/auth/callback"), ("POST", "/auth/logout")):
        reply = _request(api, method, path)
        assert reply["statusCode"] == 404 and json.loads(reply["body"])["error"]["code"] == "not_found"
    for method, path in (("GET", "/health"), ("GET", "/openapi.json")):
        assert _request(auth, method, path)["statusCode"] == 404


def test_every_operation_declares_the_errors_it_answers(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "Error" in schemas
    assert not {"HTTPValidationError", "ValidationError", "ResponseValidationError"} & schemas.keys()
    for (method, path), operation in operations(document).items():
        responses = operation["responses"]
        expected = {"400"}  # a body nested too deep, a bad parameter: every route
        if path == "/me" or path.startswith("/me/"):
            expected |= {"401", "404", "503"}  # no live session, nothing of the user's, too slow
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            expected.add("403")  # a foreign origin
        if "requestBody" in operation:
            expected.add("415")  # not sent as JSON
        assert expected <= responses.keys(), (method, path, sorted(responses))
        assert "422" not in responses, (method, path)
        assert any(code < "400" for code in responses), (method, path)  # and what it answers on success
        for code, response in responses.items():
            if code >= "400":
                content = response["content"]["application/json"]["schema"]
                assert content == {"$ref": "#/components/schemas/Error"}, (method, path, code)
                assert response["description"], (method, path, code)
            if code in ("429", "503"):
                assert "Retry-After" in response["headers"], (method, path, code)


@pytest.mark.parametrize(
    ("method", "path", "codes"),
    [
        ("PATCH", "/me", {"200", "400", "401", "403", "404", "415", "429", "503"}),
        ("DELETE", "/me", {"204", "400", "401", "403", "404", "503"}),
        ("POST", "/me/imports", {"201", "400", "401", "403", "404", "413", "415", "429", "503"}),
        ("POST", "/me/sync", {"202", "400", "401", "403", "404", "429", "503"}),
        ("GET", "/me/stats/top/{kind}", {"200", "400", "401", "404", "503"}),
        ("GET", "/health", {"200", "400"}),
        ("GET", "/auth/login", {"302", "400", "429"}),
        ("GET", "/auth/callback", {"302", "400"}),
        ("POST", "/auth/logout", {"204", "400", "403"}),
    ],
)
def test_a_route_declares_exactly_what_it_answers(
    document: dict[str, Any], method: str, path: str, codes: set[str]
) -> None:
    assert set(operations(document)[(method, path)]["responses"]) == codes


def test_the_callback_documents_both_of_its_400_codes(document: dict[str, Any]) -> None:
    description = operations(document)[("GET", "/auth/callback")]["responses"]["400"]["description"]
    assert "invalid_request" in description and "invalid_state" in description
