"""``/me/stats/...`` and ``/me/history``: the user's statistics and plays, from their own history."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from pydantic import BaseModel, Field

from myi import windows
from myi.api import database
from myi.api.errors import responses
from myi.api.session import SIGNED_IN, current_user
from myi.errors import InvalidRequest
from myi.statistics import queries

router = APIGatewayHttpRouter()

RangeParam = Annotated[
    Literal["4w", "6m", "1y", "all"] | None,
    Query(alias="range", description="A rolling window ending now: 4w, 6m, 1y or all (default)"),
]
FromParam = Annotated[
    str | None,
    Query(
        alias="from",
        description="First day (YYYY-MM-DD, user's zone), with to; overrides range",
        max_length=10,
    ),
]
ToParam = Annotated[
    str | None, Query(description="Last day (YYYY-MM-DD, user's zone, inclusive), with from", max_length=10)
]
LimitParam = Annotated[int, Query(ge=1, le=100, description="Items per page (1-100)")]
CursorParam = Annotated[
    str | None, Query(max_length=400, description="The `next` of the previous page, unchanged")
]


class WindowOut(BaseModel):
    from_: str = Field(alias="from")
    to: str


class Day(BaseModel):
    date: str
    plays: int
    ms_played: int


class Overview(BaseModel):
    window: WindowOut
    plays: int
    ms_played: int
    tracks: int
    artists: int
    albums: int
    days: list[Day]


class Named(BaseModel):
    id: str
    name: str


class RankedItem(BaseModel):
    rank: int
    id: str
    spotify_id: str | None
    name: str
    image_url: str | None
    artists: list[Named] | None = Field(default=None, description="Credited artists (tracks and albums)")
    plays: int
    ms_played: int


class TopPage(BaseModel):
    window: WindowOut
    by: Literal["plays", "ms_played"]
    items: list[RankedItem]
    next: str | None


class Figures(BaseModel):
    plays: int
    ms_played: int


class Activity(BaseModel):
    window: WindowOut
    hours: list[Figures] = Field(description="24 entries, hour 0 first, in the user's zone")
    weekdays: list[Figures] = Field(description="7 entries, Monday first")
    heatmap: list[list[int]] = Field(description="7 x 24 plays, Monday first")


class Album(BaseModel):
    id: str
    name: str
    image_url: str | None


class HistoryTrack(BaseModel):
    id: str
    spotify_id: str | None
    name: str
    artists: list[Named]
    album: Album | None


class HistoryItem(BaseModel):
    played_at: str
    ms_played: int
    is_estimated: bool
    source: Literal["api", "import"]
    track: HistoryTrack


class HistoryPage(BaseModel):
    items: list[HistoryItem]
    next: str | None


def _ok(model: type[BaseModel]) -> dict[int, OpenAPIResponse]:
    """What a statistics route answers: ``model`` (the body is written without it, see :func:`_json`),
    or a bad parameter, or an error of every /me route."""
    ok: dict[int, OpenAPIResponse] = {
        200: {"description": "OK", "content": {"application/json": {"model": model}}}
    }
    return responses(InvalidRequest, *SIGNED_IN, ok=ok)


def _json(body: dict[str, Any]) -> Response[str]:
    """The body as it is: its shape is the declared model's by construction (and the tests check
    every route against the document), so long lists skip a second validation; values PostgreSQL
    already serialised (:class:`myi.statistics.queries.RawJson`) are spliced in unchanged."""
    raw = {key: value for key, value in body.items() if isinstance(value, queries.RawJson)}
    text = json.dumps({k: (f"\0{k}\0" if k in raw else v) for k, v in body.items()}, separators=(",", ":"))
    for key, value in raw.items():
        text = text.replace(json.dumps(f"\0{key}\0"), value, 1)
    return Response(200, content_types.APPLICATION_JSON, text)


def _window(user_id: int, range_: str | None, from_: str | None, to: str | None) -> windows.Window:
    zone = queries.user_zone(database.connection(), user_id)
    try:
        return windows.resolve(range_=range_, from_=from_, to=to, zone=zone, now=datetime.now(UTC))
    except windows.InvalidWindow as exc:
        raise InvalidRequest(str(exc)) from None


@router.get(
    "/me/stats/overview",
    summary="Totals and plays per day of a window",
    tags=["statistics"],
    responses=_ok(Overview),
)
def get_overview(range_: RangeParam = None, from_: FromParam = None, to: ToParam = None):  # a Response
    user_id = current_user(router)
    window = _window(user_id, range_, from_, to)
    return _json(queries.overview(database.connection(), user_id, window, now=datetime.now(UTC)))


@router.get(
    "/me/stats/top/<kind>",
    summary="Top tracks, artists or albums of a window, ranked by plays or listening time",
    tags=["statistics"],
    responses=_ok(TopPage),
)
def get_top(  # a Response return annotation would enter the generated schema
    kind: Literal["tracks", "artists", "albums"],
    range_: RangeParam = None,
    from_: FromParam = None,
    to: ToParam = None,
    by: Annotated[Literal["plays", "ms_played"], Query()] = "plays",
    limit: LimitParam = 20,
    cursor: CursorParam = None,
):
    user_id = current_user(router)
    window = _window(user_id, range_, from_, to)
    page = queries.top(
        database.connection(), user_id, kind, window, by=by, limit=limit, cursor=cursor, now=datetime.now(UTC)
    )
    return _json(page)


@router.get(
    "/me/stats/activity",
    summary="Plays by hour of day and weekday, in the user's zone",
    tags=["statistics"],
    responses=_ok(Activity),
)
def get_activity(range_: RangeParam = None, from_: FromParam = None, to: ToParam = None):  # a Response
    user_id = current_user(router)
    window = _window(user_id, range_, from_, to)
    return _json(queries.activity(database.connection(), user_id, window, now=datetime.now(UTC)))


@router.get(
    "/me/history", summary="The user's plays, newest first", tags=["statistics"], responses=_ok(HistoryPage)
)
def get_history(limit: LimitParam = 20, cursor: CursorParam = None):  # a Response
    user_id = current_user(router)
    return _json(queries.history(database.connection(), user_id, limit=limit, cursor=cursor))
