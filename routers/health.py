"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    gateway = getattr(state, "gateway", None)
    if gateway is None or getattr(state, "draining", False):
        return JSONResponse({"status": "not_ready"}, status_code=503)
    return JSONResponse(
        {"status": "ready", "routes": len(gateway.routes), "providers": len(gateway.providers)}
    )
