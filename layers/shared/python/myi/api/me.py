"""``/me``: who is signed in, their time zone, and deleting everything about them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field

from myi import aws, uploads, users
from myi.api import database
from myi.api.errors import Forbidden, UnsupportedMediaType, responses
from myi.api.session import SIGNED_IN, current_user
from myi.auth import sessions
from myi.errors import InvalidRequest, NotFound, RateLimited, Unavailable
from myi.exports import jobs as export_jobs
from myi.observability import logger
from myi.ratelimit import RateLimiter
from myi.settings import get_settings
from myi.statistics import maintenance

router = APIGatewayHttpRouter()


class Totals(BaseModel):
    plays: int
    ms_played: int
    tracks: int
    artists: int
    first_played_at: str | None
    last_played_at: str | None


class SyncHealth(BaseModel):
    status: Literal["ok", "reconnect_required", "paused"] = Field(
        description="reconnect_required: sign in again; paused: Spotify failed the last syncs, retrying"
    )
    last_synced_at: str | None
    next_sync_at: str | None
    possible_gaps: int = Field(
        description="Full pages after the cursor: plays older than Spotify's latest 50 may be missing"
    )


class Me(BaseModel):
    id: str
    spotify_id: str
    display_name: str | None
    image_url: str | None
    timezone: str
    created_at: str
    last_synced_at: str | None
    spotify_connection: Literal["ok", "reconnect_required"]
    sync: SyncHealth
    totals: Totals


class MeChange(BaseModel):
    timezone: str = Field(description="An IANA time zone name, e.g. Europe/Berlin", max_length=64)


def _me(user_id: int) -> dict[str, Any]:
    body = users.me(database.connection(), user_id, now=datetime.now(UTC))
    if body is None:  # deleted between the session check and now
        raise NotFound("No such user.")
    return body


@router.get(
    "/me", summary="The signed-in user", tags=["user"], responses=responses(InvalidRequest, *SIGNED_IN)
)
def get_me() -> Me:
    return Me.model_validate(_me(current_user(router)))


@router.patch(
    "/me",
    summary="Change the time zone (statistics follow it, for all history)",
    tags=["user"],
    responses=responses(InvalidRequest, Forbidden, UnsupportedMediaType, RateLimited, *SIGNED_IN),
)
def patch_me(change: MeChange) -> Me:
    settings = get_settings()
    user_id = current_user(router)
    conn = database.connection(settings)
    try:
        maintenance.valid_database_timezone(conn, change.timezone)
    except maintenance.UnknownTimezone:
        raise InvalidRequest(f"Invalid parameter timezone: unknown time zone {change.timezone!r}") from None
    # Each change rebuilds every statistic of the user under their lock: a few an hour at most.
    RateLimiter(settings).admit(
        f"zone-change:{user_id}",
        limit=settings.zone_change_limit,
        window_s=settings.zone_change_window_s,
        refusal="The time zone was changed too often; try again later.",
    )
    try:
        maintenance.change_timezone(conn, user_id, change.timezone)
    except maintenance.UnknownTimezone:
        raise InvalidRequest(f"Invalid parameter timezone: unknown time zone {change.timezone!r}") from None
    return Me.model_validate(_me(user_id))


@router.delete(
    "/me",
    summary="Delete the user and everything stored about them",
    tags=["user"],
    responses=responses(
        InvalidRequest,
        Forbidden,
        *SIGNED_IN,
        ok={204: {"description": "Deleted; the session cookie is cleared"}},
    ),
)
def delete_me():  # a Response return annotation would enter the generated schema
    settings = get_settings()
    user_id = current_user(router)
    # The files go first (uploads, then exports and their multipart uploads under way): when that
    # fails nothing is gone yet, the user is told to try again and the retry finds everything in
    # place. Then one statement removes the user and, by cascade, their sessions, grant, events,
    # statistics, import jobs and exports. A worker still writing an export finds its row gone and
    # removes its file; the bucket's lifecycle rule removes one it completed in between.
    try:
        removed = uploads.delete_user_uploads(settings, user_id)
        exported = export_jobs.delete_user_exports(
            aws.client("s3", settings), export_jobs.ExportConfig.from_settings(settings).bucket, user_id
        )
    except (BotoCoreError, ClientError, uploads.UploadsNotDeleted, export_jobs.ExportsNotDeleted):
        logger.exception("could not delete the files of a user who is leaving", extra={"user_id": user_id})
        raise Unavailable(
            "Your uploaded or exported files could not be deleted just now, so nothing was removed. "
            "Try again shortly.",
            retry_after_s=30,
        ) from None
    users.delete(database.connection(settings), user_id)
    logger.info(
        "user deleted", extra={"user_id": user_id, "uploads_deleted": removed, "exports_deleted": exported}
    )
    return Response(status_code=204, cookies=[sessions.clear_cookie(settings)])
