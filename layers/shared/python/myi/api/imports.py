"""``/me/imports``: start an import (a presigned upload), follow its progress."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from pydantic import BaseModel, Field

from myi.api import database
from myi.api.errors import Forbidden, UnsupportedMediaType, responses
from myi.api.session import SIGNED_IN, current_user
from myi.dormancy import Dormancy
from myi.errors import InvalidRequest, RateLimited, TooLarge
from myi.imports import jobs
from myi.observability import logger
from myi.settings import get_settings

router = APIGatewayHttpRouter()


class NewImport(BaseModel):
    filename: str = Field(
        min_length=1, max_length=1024, description="The file's name, e.g. my_spotify_data.zip"
    )
    size_bytes: int = Field(gt=0, description="The file's size in bytes")


class Progress(BaseModel):
    records_read: int
    bytes_read: int
    bytes_total: int
    percent: float


class Skipped(BaseModel):
    short_play: int
    incognito: int
    episode: int
    audiobook: int
    no_track_uri: int
    invalid: int


class Counts(BaseModel):
    added: int
    merged: int
    duplicates: int
    skipped: Skipped


class ImportJob(BaseModel):
    id: str
    status: str
    filename: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: Progress
    counts: Counts
    error: str | None


class Upload(BaseModel):
    method: str
    url: str
    fields: dict[str, str]
    max_bytes: int
    expires_at: str


class CreatedImport(BaseModel):
    import_: ImportJob = Field(alias="import")
    upload: Upload


class ImportPage(BaseModel):
    items: list[ImportJob]
    next: str | None


@router.post(
    "/me/imports",
    summary="Start an import: returns a presigned POST for the upload",
    tags=["imports"],
    responses=responses(
        InvalidRequest,
        Forbidden,
        TooLarge,
        UnsupportedMediaType,
        RateLimited,
        *SIGNED_IN,
        ok={201: {"description": "Created", "content": {"application/json": {"model": CreatedImport}}}},
    ),
)
def create_import(new: NewImport):  # a Response return annotation would enter the generated schema
    settings = get_settings()
    user_id = current_user(router)
    now = datetime.now(UTC)
    body: dict[str, Any] = jobs.create(
        database.connection(settings), settings, user_id, new.filename, new.size_bytes, now=now
    )
    try:
        Dormancy(settings).importing(now)  # the import sweep watches the job until it ends
    except Exception as exc:  # the job stands; only its sweep may come later
        logger.warning("could not keep MYI awake for an import", extra={"reason": type(exc).__name__})
    return Response(
        status_code=201,
        content_type="application/json; charset=utf-8",
        body=CreatedImport.model_validate(body).model_dump_json(by_alias=True),
    )


@router.get(
    "/me/imports",
    summary="The user's imports, newest first",
    tags=["imports"],
    responses=responses(InvalidRequest, *SIGNED_IN),
)
def list_imports(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ImportPage:
    user_id = current_user(router)
    return ImportPage.model_validate(jobs.page(database.connection(), user_id, limit=limit, cursor=cursor))


@router.get(
    "/me/imports/<import_id>",
    summary="One import, with its progress and counts",
    tags=["imports"],
    responses=responses(InvalidRequest, *SIGNED_IN),
)
def get_import(import_id: str) -> ImportJob:
    user_id = current_user(router)
    return ImportJob.model_validate(jobs.get(database.connection(), user_id, import_id))
