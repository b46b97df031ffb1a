"""``/me/stats/...`` and ``/me/history``: the user's statistics and plays, from their own history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from pydantic import BaseModel, Field

from myi import db, reports, windows
from myi.api.errors import InvalidRequest
from myi.api.session import current_user

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


def _window(user_id: int, range_: str | None, from_: str | None, to: str | None) -> windows.Window:
    zone = reports.user_zone(db.get_connection(), user_id)
    try:
        return windows.resolve(range_=range_, from_=from_, to=to, zone=zone, now=datetime.now(UTC))
    except windows.InvalidWindow as exc:
        raise InvalidRequest(str(exc)) from None


@router.get("/me/stats/overview", summary="Totals and plays per day of a window", tags=["statistics"])
def get_overview(range_: RangeParam = None, from_: FromParam = None, to: ToParam = None) -> Overview:
    user_id = current_user(router)
    window = _window(user_id, range_, from_, to)
    return Overview.model_validate(
        reports.overview(db.get_connection(), user_id, window, now=datetime.now(UTC))
    )


@router.get(
    "/me/stats/top/<kind>",
    summary="Top tracks, artists or albums of a window, ranked by plays or listening time",
    tags=["statistics"],
)
def get_top(
    kind: Literal["tracks", "artists", "albums"],
    range_: RangeParam = None,
    from_: FromParam = None,
    to: ToParam = None,
    by: Annotated[Literal["plays", "ms_played"], Query()] = "plays",
    limit: LimitParam = 20,
    cursor: CursorParam = None,
) -> TopPage:
    user_id = current_user(router)
    window = _window(user_id, range_, from_, to)
    page = reports.top(
        db.get_connection(), user_id, kind, window, by=by, limit=limit, cursor=cursor, now=datetime.now(UTC)
    )
    return TopPage.model_validate(page)


@router.get(
    "/me/stats/activity", summary="Plays by hour of day and weekday, in the user's zone", tags=["statistics"]
)
def get_activity(range_: RangeParam = None, from_: FromParam = None, to: ToParam = None) -> Activity:
    user_id = current_user(router)
    window = _window(user_id, range_, from_, to)
    return Activity.model_validate(
        reports.activity(db.get_connection(), user_id, window, now=datetime.now(UTC))
    )


@router.get("/me/history", summary="The user's plays, newest first", tags=["statistics"])
def get_history(limit: LimitParam = 20, cursor: CursorParam = None) -> HistoryPage:
    user_id = current_user(router)
    return HistoryPage.model_validate(
        reports.history(db.get_connection(), user_id, limit=limit, cursor=cursor)
    )
