"""The local runtime's translation between HTTP and API Gateway payload v2.0 events."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from devtools.local import events
from infra.wiring import Function, Route

FN = Function(name="api", description="", timeout_s=3, memory_mb=128)
ROUTES = [
    (Route("GET", "/me/imports"), FN),
    (Route("GET", "/me/imports/{id}"), FN),
    (Route("POST", "/me/imports"), FN),
]
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _event(method: str, path: str, query: str = "", headers=(), body: bytes = b"") -> dict:
    match, _ = events.match_route(ROUTES, method, path)
    assert match is not None
    return events.http_to_event(
        method=method,
        raw_path=path,
        raw_query=query,
        headers=list(headers),
        body=body,
        match=match,
        source_ip="127.0.0.1",
        host="127.0.0.1:8000",
        now=NOW,
    )


def test_path_parameters_are_extracted_and_literal_routes_win() -> None:
    match, _ = events.match_route(ROUTES, "GET", "/me/imports/abc%20d")
    assert match is not None
    assert match.route.path == "/me/imports/{id}"
    assert match.path_params == {"id": "abc d"}
    literal, _ = events.match_route(ROUTES, "GET", "/me/imports")
    assert literal is not None and literal.path_params == {}


def test_a_known_path_under_another_method_is_reported_but_not_matched() -> None:
    match, known = events.match_route(ROUTES, "DELETE", "/me/imports")
    assert match is None and known
    match, known = events.match_route(ROUTES, "GET", "/nowhere")
    assert match is None and not known


def test_repeated_query_keys_are_comma_joined_and_raw_query_kept() -> None:
    event = _event("GET", "/me/imports", query="a=1&a=2&b=x%20y&empty=")
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y", "empty": ""}
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y&empty="
    assert event["routeKey"] == "GET /me/imports"
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["requestContext"]["timeEpoch"] == int(NOW.timestamp() * 1000)


def test_cookies_move_to_the_cookies_list_and_headers_are_lower_cased() -> None:
    event = _event(
        "GET",
        "/me/imports",
        headers=[("Cookie", "myi_session=abc; other=1"), ("X-Thing", "a"), ("x-thing", "b")],
    )
    assert event["cookies"] == ["myi_session=abc", "other=1"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-thing"] == "a,b"


def test_binary_bodies_are_base64_and_json_bodies_are_text() -> None:
    binary = _event("POST", "/me/imports", headers=[("Content-Type", "application/zip")], body=b"\x00\xffzip")
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == b"\x00\xffzip"
    text = _event("POST", "/me/imports", headers=[("Content-Type", "application/json")], body=b'{"a": 1}')
    assert text["isBase64Encoded"] is False
    assert text["body"] == '{"a": 1}'


def test_responses_keep_every_cookie_and_decode_base64_bodies() -> None:
    response = events.event_response_to_http(
        {
            "statusCode": 302,
            "headers": {"Location": "/x"},
            "multiValueHeaders": {"X-Multi": ["1", "2"]},
            "cookies": ["a=1; Path=/", "b=2; HttpOnly"],
            "body": base64.b64encode(b"\x01\x02").decode(),
            "isBase64Encoded": True,
        }
    )
    assert response.status == 302
    assert ("set-cookie", "a=1; Path=/") in response.headers
    assert ("set-cookie", "b=2; HttpOnly") in response.headers
    assert [v for k, v in response.headers if k == "X-Multi"] == ["1", "2"]
    assert response.body == b"\x01\x02"


def test_a_plain_return_value_becomes_a_json_200() -> None:
    response = events.event_response_to_http({"status": "ok"})
    assert response.status == 200
    assert response.body == b'{"status": "ok"}'


def test_partial_batch_failures_name_the_failed_messages() -> None:
    result = {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert events.failed_message_ids(result, ["m1", "m2"]) == ["m2"]
    assert events.failed_message_ids(None, ["m1"]) == []


def test_sqs_events_carry_what_lambda_delivers() -> None:
    event = events.sqs_event(
        [
            {
                "MessageId": "m1",
                "ReceiptHandle": "r1",
                "Body": "{}",
                "Attributes": {"ApproximateReceiveCount": "2"},
            }
        ],
        "arn:aws:sqs:us-east-1:000000000000:q",
        "us-east-1",
    )
    record = event["Records"][0]
    assert record["messageId"] == "m1"
    assert record["eventSource"] == "aws:sqs"
    assert record["attributes"]["ApproximateReceiveCount"] == "2"
