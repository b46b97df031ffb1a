"""The OpenAPI 3.1 document of the API, generated from the routes and completed with what API.md
says every route may answer besides success: the one error shape, with its status codes.

Powertools documents a request validation failure as 422 with its own body; MYI answers 400 with
the error shape of API.md, so that entry is replaced by the real ones.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

from myi import __version__

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}
_WHY = {
    "400": "invalid_request: a parameter or the body is wrong (the message names it)",
    "401": "unauthenticated: no live session",
    "403": "forbidden: a state-changing request from an origin that is not the SPA's",
    "404": "not_found: no such item of this user",
    "413": "too_large: the file is over the upload limit",
    "415": "unsupported_media_type: the body is not sent as application/json",
    "429": "rate_limited: try again after Retry-After seconds",
    "503": "unavailable: nothing was changed; try again after Retry-After seconds",
}


def _errors(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    codes = ["400"]
    user_route = path == "/me" or path.startswith("/me/")
    if user_route:
        codes += ["401", "404"]
    if method in ("post", "put", "patch", "delete"):
        codes.append("403")
    if (path, method) == ("/me/imports", "post"):
        codes.append("413")
    if "requestBody" in operation:
        codes.append("415")
    if (path, method) in (("/me/sync", "post"), ("/me/imports", "post"), ("/me", "patch")):
        codes.append("429")
    if user_route:  # the database answered too slowly (or the files could not be deleted)
        codes.append("503")
    return codes


def document(app: APIGatewayHttpResolver) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(title="MYI API", version=__version__, openapi_version="3.1.0")
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = _ERROR_SCHEMA
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for code in _errors(path, method, operation):
                entry: dict[str, Any] = {
                    "description": _WHY[code],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
                if code in ("429", "503"):
                    entry["headers"] = _RETRY_AFTER
                responses.setdefault(code, entry)
    return doc
