"""Admin endpoints, behind the admin key: `POST /admin/reload`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from app.config import ConfigError
from app.errors import InvalidRequest
from routers.deps import require_admin
from routers.schemas import EDGE, Reloaded, errors

router = APIRouter(dependencies=[Depends(require_admin)])


@router.post(
    "/admin/reload",
    responses={200: {"model": Reloaded}, **errors(400, 401, 403, 500, *EDGE)},
)
async def reload(request: Request) -> dict[str, Any]:
    """Re-read the config; an invalid one is refused with its problems, the old one serving."""
    try:
        gateway = await request.app.state.reloader.reload()
    except ConfigError as error:
        problems = [{"path": p.path, "line": p.line, "message": p.message} for p in error.problems]
        raise InvalidRequest(
            f"the new config has {len(problems)} problem(s); the old config keeps serving",
            code="invalid_config",
            details={"problems": problems},
        ) from None
    return {
        "status": "reloaded",
        "source": gateway.config.source,
        "providers": list(gateway.providers),
        "routes": list(gateway.routes),
        "state": gateway.state.backend,
    }
