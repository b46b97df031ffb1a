"""``POST /me/sync``: sync now, at most once per ``SYNC_MANUAL_INTERVAL_SECONDS``."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from pydantic import BaseModel

from myi import aws, sync
from myi.api.errors import Forbidden, responses
from myi.api.session import SIGNED_IN, current_user
from myi.errors import InvalidRequest, RateLimited
from myi.ratelimit import RateLimiter
from myi.settings import get_settings

router = APIGatewayHttpRouter()


class Queued(BaseModel):
    queued: bool


@router.post(
    "/me/sync",
    summary="Sync with Spotify soon",
    tags=["sync"],
    responses=responses(
        InvalidRequest,
        Forbidden,
        RateLimited,
        *SIGNED_IN,
        ok={202: {"description": "Queued", "content": {"application/json": {"model": Queued}}}},
    ),
)
def post_sync():  # a Response return annotation would enter the generated schema
    settings = get_settings()
    user_id = current_user(router)
    RateLimiter(settings).admit(
        f"manual-sync:{user_id}",
        limit=1,
        window_s=settings.sync_manual_interval_s,
        refusal="A sync was asked for a moment ago; try again shortly.",
    )
    sync.enqueue(aws.client("sqs", settings), settings, user_id)
    return Response(
        status_code=202,
        content_type="application/json; charset=utf-8",
        body=Queued(queued=True).model_dump_json(),
    )
