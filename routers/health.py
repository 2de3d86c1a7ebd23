"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from routers.schemas import Health, Ready

router = APIRouter()


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={200: {"model": Ready}, 503: {"model": Ready, "description": "Not ready"}},
)
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    gateway = getattr(state, "gateway", None)
    if gateway is None or getattr(state, "draining", False):
        return JSONResponse({"status": "not_ready"}, status_code=503)
    return JSONResponse(
        {"status": "ready", "routes": len(gateway.routes), "providers": len(gateway.providers)}
    )
