"""The OpenAPI 3.1 document of MYI's HTTP routes, generated from the resolvers that serve them.

Every route declares what it may answer, errors included (``responses=``, built by
:func:`myi.api.errors.responses`), so the document is Powertools' own, merged across resolvers: the
API function's and the auth function's, each a Powertools resolver with its own routes. Powertools
always adds its validation error schemas; MYI answers a validation failure with the error shape of
API.md instead, so they are dropped.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

from myi import __version__

_UNUSED_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def document(*resolvers: APIGatewayHttpResolver) -> dict[str, Any]:
    """One document of every route of ``resolvers``: a path and method is served by one of them,
    and a schema name means the same schema in each."""
    doc: dict[str, Any] = {}
    for resolver in resolvers:
        part: dict[str, Any] = json.loads(
            resolver.get_openapi_json_schema(title="MYI API", version=__version__, openapi_version="3.1.0")
        )
        if not doc:
            doc = part
            continue
        paths = doc.setdefault("paths", {})
        for path, operations in part.get("paths", {}).items():
            known = paths.setdefault(path, {})
            if twice := known.keys() & operations.keys():
                raise ValueError(f"{path} {sorted(twice)} is served by two resolvers")
            known.update(operations)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in part.get("components", {}).get("schemas", {}).items():
            if schemas.setdefault(name, schema) != schema:
                raise ValueError(f"two different schemas are named {name}")
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _UNUSED_SCHEMAS:
        schemas.pop(name, None)
    return doc
