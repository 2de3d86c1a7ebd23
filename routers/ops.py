"""`GET /metrics` (Prometheus text) and `GET /v1/stats` (per provider-and-model JSON report)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.metrics import CONTENT_TYPE
from app.telemetry import Telemetry
from routers.deps import authenticate
from routers.schemas import AUTHED, Stats, errors

router = APIRouter()


def _telemetry(request: Request) -> Telemetry:
    return request.app.state.telemetry


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    tracing = getattr(request.app.state, "tracing", None)
    if tracing is not None:
        _telemetry(request).observe_spans_dropped(tracing.dropped)
    return Response(_telemetry(request).metrics.exposition(), media_type=CONTENT_TYPE)


@router.get(
    "/v1/stats",
    dependencies=[Depends(authenticate)],
    responses={200: {"model": Stats}, **errors(*AUTHED)},
)
async def stats(request: Request) -> dict[str, Any]:
    return {"pid": os.getpid(), **_telemetry(request).stats.report()}
