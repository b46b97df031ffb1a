"""``/me/spotify-top/{kind}``: Spotify's own rankings, served at once, refreshed in the background."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from pydantic import BaseModel

from myi import aws, spotify_top
from myi.api import database
from myi.api.errors import responses
from myi.api.session import SIGNED_IN, current_user
from myi.errors import InvalidRequest
from myi.settings import get_settings

router = APIGatewayHttpRouter()


class Named(BaseModel):
    id: str
    name: str


class TopItem(BaseModel):
    rank: int
    id: str
    spotify_id: str | None
    name: str
    image_url: str | None
    artists: list[Named] | None = None
    album: Named | None = None


class TopList(BaseModel):
    term: str
    refreshed_at: str | None
    items: list[TopItem]


@router.get(
    "/me/spotify-top/<kind>",
    summary="Spotify's own top tracks or artists",
    tags=["statistics"],
    responses=responses(InvalidRequest, *SIGNED_IN),
)
def get_spotify_top(
    kind: str, term: Annotated[Literal["short_term", "medium_term", "long_term"], Query()] = "medium_term"
) -> TopList:
    if kind not in spotify_top.KINDS:
        raise InvalidRequest("Invalid parameter kind: tracks or artists")
    settings = get_settings()
    user_id = current_user(router)
    conn = database.connection(settings)
    if spotify_top.is_stale(settings, conn, user_id, kind, term, datetime.now(UTC)):
        spotify_top.request(aws.client("sqs", settings), settings, user_id, kind, term)
    return TopList.model_validate(spotify_top.read(conn, user_id, kind, term))
