"""Operations routes."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from pydantic import BaseModel

from myi.api.errors import responses
from myi.errors import InvalidRequest

router = APIGatewayHttpRouter()


class Health(BaseModel):
    status: str


@router.get("/health", summary="Liveness", tags=["operations"], responses=responses(InvalidRequest))
def get_health() -> Health:
    return Health(status="ok")
