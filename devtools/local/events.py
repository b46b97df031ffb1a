"""Translation between HTTP and the events Lambda sees, the way API Gateway, SQS and EventBridge
shape them. Pure functions: no sockets, no clocks of their own (callers pass ``now``)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from infra.wiring import Function, Route

_TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded", "application/xml")


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    function: Function
    path_params: dict[str, str]


def _template_regex(path: str) -> re.Pattern[str]:
    parts = []
    for segment in path.strip("/").split("/"):
        m = re.fullmatch(r"\{([A-Za-z_][A-Za-z0-9_]*)(\+?)\}", segment)
        if m:
            parts.append(f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("^/" + "/".join(parts) + "$")


def match_route(
    routes: Iterable[tuple[Route, Function]], method: str, path: str
) -> tuple[RouteMatch | None, bool]:
    """The route for ``method path`` and whether the path exists under another method."""
    path_known = False
    # Literal routes win over templated ones, as in API Gateway.
    ordered = sorted(routes, key=lambda rf: rf[0].path.count("{"))
    for route, fn in ordered:
        m = _template_regex(route.path).match(path)
        if not m:
            continue
        path_known = True
        if route.method == method.upper():
            params = {k: unquote(v) for k, v in m.groupdict().items()}
            return RouteMatch(route, fn, params), True
    return None, path_known


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return True
    return content_type.split(";")[0].strip().lower().startswith(_TEXT_TYPES) or "json" in content_type


def http_to_event(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    match: RouteMatch,
    source_ip: str,
    host: str,
    now: datetime,
    request_id: str | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2.0 event for one request."""
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    content_type = joined.get("content-type")
    is_b64 = bool(body) and not _is_text(content_type)
    if not body:
        body_value: str | None = None
    elif is_b64:
        body_value = base64.b64encode(body).decode()
    else:
        body_value = body.decode("utf-8", errors="replace")
    rid = request_id or str(uuid.uuid4())
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{match.route.method} {match.route.path}",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": joined,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": method.upper(),
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined.get("user-agent", ""),
            },
            "requestId": rid,
            "routeKey": f"{match.route.method} {match.route.path}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": is_b64,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if match.path_params:
        event["pathParameters"] = match.path_params
    if body_value is not None:
        event["body"] = body_value
    return event


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def event_response_to_http(result: Any) -> HttpResponse:
    """The handler's return value as HTTP, following payload v2.0's rules: a dict with a
    ``statusCode`` is a full response; anything else is a 200 JSON body."""
    if not isinstance(result, Mapping) or "statusCode" not in result:
        body = json.dumps(result).encode()
        return HttpResponse(200, [("content-type", "application/json")], body)
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, values in (result.get("multiValueHeaders") or {}).items():
        seen.add(name.lower())
        for value in values:
            headers.append((name, str(value)))
    for name, value in (result.get("headers") or {}).items():
        if name.lower() in seen:
            continue
        headers.append((name, str(value)))
    for cookie in result.get("cookies") or []:
        headers.append(("set-cookie", cookie))
    raw = result.get("body")
    if raw is None:
        body = b""
    elif result.get("isBase64Encoded"):
        body = base64.b64decode(raw)
    else:
        body = str(raw).encode()
    return HttpResponse(int(result["statusCode"]), headers, body)


def sqs_event(messages: Sequence[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS event as Lambda's event source mapping delivers it, from ReceiveMessage results."""
    records = []
    for msg in messages:
        attrs = dict(msg.get("Attributes") or {})
        records.append(
            {
                "messageId": msg["MessageId"],
                "receiptHandle": msg["ReceiptHandle"],
                "body": msg.get("Body", ""),
                "attributes": attrs,
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "binaryValue": value.get("BinaryValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value.get("DataType", "String"),
                    }
                    for name, value in (msg.get("MessageAttributes") or {}).items()
                },
                "md5OfBody": msg.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def failed_message_ids(result: Any, all_ids: Sequence[str]) -> list[str]:
    """Which messages of a batch failed, from a partial batch response (``batchItemFailures``)."""
    if isinstance(result, Mapping) and "batchItemFailures" in result:
        return [str(item["itemIdentifier"]) for item in result["batchItemFailures"] or []]
    return []


def scheduled_event(rule_arn: str, region: str, now: datetime | None = None) -> dict[str, Any]:
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }
