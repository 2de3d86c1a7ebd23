"""A local stand-in for Azure OpenAI's data plane, on its wire format.

Azure serves the Chat Completions API at
`POST /openai/deployments/{deployment}/chat/completions?api-version=YYYY-MM-DD[-preview]`,
authenticated by an `api-key` header (or an Entra ID bearer token). Its bodies are OpenAI's with
Azure's extras: `prompt_filter_results` and per-choice `content_filter_results`, a first stream
chunk with no choices that carries the prompt filter results, and the `model` of the answer naming
the model behind the deployment (`gpt-4o-2024-11-20`), never the deployment's own name.

Like the service, the fake refuses: a wrong key (401), a missing api-version (404) or a malformed
one (400), an unknown deployment (404 `DeploymentNotFound`), and `stream_options` on API versions
older than 2024-09-01 (400 "Unrecognized request argument"). Scripting (`push`) and the request log
(`log`) are `OpenAIFake`'s.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.openai_fake import OpenAIFake

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
STREAM_OPTIONS_SINCE = "2024-09-01"  # the first API version that takes `stream_options`

_FILTERS = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}


class AzureOpenAIFake(OpenAIFake):
    """`deployments` maps each deployment name to the model behind it."""

    def __init__(self, deployments: dict[str, str], *, api_key: str = "azure-test-key") -> None:
        super().__init__("azure")
        self.deployments = deployments
        self.api_key = api_key
        self.app = Starlette(
            routes=[
                Route(
                    "/openai/deployments/{deployment}/chat/completions",
                    self._azure_chat,
                    methods=["POST"],
                )
            ]
        )

    async def _azure_chat(self, request: Request) -> Response:
        body = await request.json()
        seen = self._see(request, body)
        refusal = self._refusal(request, body)
        if refusal is not None:
            seen.status = refusal.status_code
            return refusal
        model = self.deployments[request.path_params["deployment"]]
        return await self._respond(body, model, seen)

    def _refusal(self, request: Request, body: dict[str, Any]) -> Response | None:
        if request.headers.get("api-key") != self.api_key:
            return _error(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.",
            )
        version = request.query_params.get("api-version")
        if version is None:
            return _error(404, "404", "Resource not found")
        if not _API_VERSION.match(version):
            return _error(400, "BadRequest", "API version not supported")
        if request.path_params["deployment"] not in self.deployments:
            return _error(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.",
            )
        if "stream_options" in body and version < STREAM_OPTIONS_SINCE:
            return JSONResponse(
                {
                    "error": {
                        "message": "Unrecognized request argument supplied: stream_options",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=400,
            )
        return None

    def _decorate(self, completion: dict[str, Any]) -> dict[str, Any]:
        completion["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": _FILTERS}
        ]
        for choice in completion["choices"]:
            choice["content_filter_results"] = _FILTERS
        return completion

    def _prelude(self) -> list[bytes]:
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTERS}],
        }
        return [f"data: {json.dumps(first)}\n\n".encode()]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
