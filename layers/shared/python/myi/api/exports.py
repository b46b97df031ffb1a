"""``/me/exports``: start an export of the whole history, follow it, download it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from pydantic import BaseModel, Field

from myi import aws
from myi.api import database
from myi.api.errors import Forbidden, UnsupportedMediaType, responses
from myi.api.session import SIGNED_IN, current_user
from myi.dormancy import Dormancy
from myi.errors import Conflict, InvalidRequest
from myi.exports import jobs
from myi.exports.jobs import ExportConfig
from myi.observability import logger
from myi.settings import get_settings

router = APIGatewayHttpRouter()


class NewExport(BaseModel):
    format: Literal["extended_json", "csv"] = Field(
        description="extended_json: Spotify's extended streaming history (imports back); "
        "csv: one row per play"
    )


class Download(BaseModel):
    url: str = Field(description="A presigned GET of my_spotify_data.zip, issued fresh on every read")
    expires_at: str


class Export(BaseModel):
    id: str
    format: str
    status: str = Field(description="queued | running | completed | failed")
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str | None = Field(description="When the file is deleted (no download after it)")
    plays: int
    size_bytes: int
    download: Download | None
    error: str | None


class CreatedExport(BaseModel):
    export: Export


class ExportPage(BaseModel):
    items: list[Export]
    next: str | None


def _config() -> ExportConfig:
    return ExportConfig.from_settings(get_settings())


@router.post(
    "/me/exports",
    summary="Start an export of the whole listening history",
    tags=["exports"],
    responses=responses(
        InvalidRequest,
        Forbidden,
        Conflict,
        UnsupportedMediaType,
        *SIGNED_IN,
        ok={202: {"description": "Accepted", "content": {"application/json": {"model": CreatedExport}}}},
    ),
)
def create_export(new: NewExport):  # a Response return annotation would enter the generated schema
    settings = get_settings()
    user_id = current_user(router)
    now = datetime.now(UTC)
    body: dict[str, Any] = jobs.create(
        database.connection(settings),
        _config(),
        aws.client("sqs", settings),
        user_id,
        new.format,
        now=now,
    )
    try:  # an export is activity, as an import is: its sweep watches it until it ends
        Dormancy(settings).importing(now)
    except Exception as exc:  # the export stands; only its sweep may come later
        logger.warning("could not keep MYI awake for an export", extra={"reason": type(exc).__name__})
    return Response(
        status_code=202,
        content_type="application/json; charset=utf-8",
        body=CreatedExport.model_validate(body).model_dump_json(),
    )


@router.get(
    "/me/exports",
    summary="The user's exports, newest first",
    tags=["exports"],
    responses=responses(InvalidRequest, *SIGNED_IN),
)
def list_exports(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ExportPage:
    settings = get_settings()
    user_id = current_user(router)
    body = jobs.page(
        database.connection(settings),
        aws.client("s3", settings),
        _config(),
        user_id,
        limit=limit,
        cursor=cursor,
        now=datetime.now(UTC),
    )
    return ExportPage.model_validate(body)


@router.get(
    "/me/exports/<export_id>",
    summary="One export, with a fresh download link once it is completed",
    tags=["exports"],
    responses=responses(InvalidRequest, *SIGNED_IN),
)
def get_export(export_id: str) -> Export:
    settings = get_settings()
    user_id = current_user(router)
    body = jobs.get(
        database.connection(settings),
        aws.client("s3", settings),
        _config(),
        user_id,
        export_id,
        now=datetime.now(UTC),
    )
    return Export.model_validate(body)
