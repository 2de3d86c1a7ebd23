"""Google Gemini (the Gemini Developer API) through the official `google-genai` SDK.

The client is built once per provider entry with the SDK's retries off:
`HttpRetryOptions(attempts=1)` (an explicit value also switches off the SDK's implicit
reconnect-and-retry on the aiohttp transport), and automatic continuation and automatic function
calling off, so that one `complete` or `stream` is exactly one HTTP request. Retrying is the
failover policy's job.

Translation notes:
- `system` messages become `system_instruction`; `assistant` is Gemini's `model` role.
- OpenAI-style tools become function declarations carrying the caller's JSON schema unchanged
  (`parameters_json_schema`); `tool_choice` becomes the function-calling mode.
- `tool` messages become `function_response` parts. Gemini pairs them by function name, so the name
  is recovered from the assistant tool call with the same id. Consecutive tool messages share one
  turn, as Gemini expects all answers to one model turn together.
- Gemini 3 sends a call id and a `thought_signature` with function calls and insists on getting both
  back. Ids travel in `ToolCall.id`; signatures are remembered per call id (bounded, per process)
  and, when unknown (another replica answered, or the history came from another provider), replaced
  by Google's documented placeholder that skips the check.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from pydantic import SecretStr
from pydantic import ValidationError as PydanticValidationError

from app.chat import (
    AssistantMessage,
    ChatRequest,
    Completion,
    FinishReason,
    FunctionCall,
    Message,
    StreamEvent,
    StreamFinish,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from app.errors import ErrorKind, ProviderError, parse_retry_after
from providers.base import (
    ModelConfig,
    Provider,
    ProviderConfig,
    estimate_input_tokens,
    estimate_tokens,
)

try:  # google-genai's default transport; httpx is used when GOOGLE_GENAI_HTTP_CLIENT=httpx.
    import httpx2
except ImportError:  # pragma: no cover - google-genai 3.x depends on it
    httpx2 = None  # type: ignore[assignment]

try:  # with aiohttp installed (the openai adapter's transport), google-genai's async calls use it
    import aiohttp
except ImportError:  # pragma: no cover
    aiohttp = None  # type: ignore[assignment]

# aiohttp reports a timeout as asyncio's TimeoutError (the builtin, since Python 3.11).
_TIMEOUT_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in (httpx.TimeoutException, getattr(httpx2, "TimeoutException", None), TimeoutError)
    if cls
)
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in (
        httpx.HTTPError,
        getattr(httpx2, "HTTPError", None),
        getattr(aiohttp, "ClientError", None),
    )
    if cls
)

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)

# Google's documented stand-in for a thought signature the client no longer has: the literal
# wire text "skip_thought_signature_validator". The SDK sends bytes as URL-safe base64, so the bytes
# are that text decoded.
_SKIP_SIGNATURE = base64.urlsafe_b64decode("skip_thought_signature_validator")
_SIGNATURE_CACHE_SIZE = 4096

_CONTEXT_LENGTH = re.compile(
    r"token count|exceeds the maximum number of tokens|too many tokens|context (length|window)",
    re.IGNORECASE,
)


class GeminiConfig(ProviderConfig):
    type: Literal["gemini"] = "gemini"
    api_key: SecretStr | None = None
    base_url: str | None = None
    api_version: str = "v1beta"


class GeminiProvider(Provider):
    config_model = GeminiConfig
    config: GeminiConfig

    def __init__(self, name: str, config: GeminiConfig) -> None:
        super().__init__(name, config)
        api_key = config.api_key.get_secret_value() if config.api_key else None
        self.client = genai.Client(
            # The SDK refuses to start without a key; a keyless proxy can take any.
            api_key=api_key or "unused",
            http_options=types.HttpOptions(
                base_url=config.base_url,
                api_version=config.api_version,
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )
        self._signatures: OrderedDict[str, bytes] = OrderedDict()

    # ---- request ---------------------------------------------------------------------------

    def _config(
        self, model: ModelConfig, request: ChatRequest, notes: list[str]
    ) -> types.GenerateContentConfig:
        system = [m.content for m in request.messages if m.role == "system" and m.content]
        params: dict[str, Any] = {
            # HttpOptions.timeout is in milliseconds.
            "http_options": types.HttpOptions(timeout=max(1, math.ceil(model.timeout_s * 1000))),
            "automatic_function_calling": types.AutomaticFunctionCallingConfig(disable=True),
            "automatic_continuation": False,
        }
        if system:
            params["system_instruction"] = types.Content(
                parts=[types.Part(text=text) for text in system]
            )
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.top_p is not None:
            params["top_p"] = request.top_p
        max_tokens = request.max_tokens or model.max_tokens
        if max_tokens is not None:
            params["max_output_tokens"] = max_tokens
        if request.stop:
            params["stop_sequences"] = request.stop
        if request.tools:
            params["tools"] = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=tool.function.name,
                            description=tool.function.description,
                            parameters_json_schema=tool.function.parameters,
                        )
                        for tool in request.tools
                    ]
                )
            ]
            calling = _function_calling(request.tool_choice)
            if calling is not None:
                params["tool_config"] = types.ToolConfig(function_calling_config=calling)
        elif request.tool_choice is not None:
            notes.append("tool_choice dropped: the request has no tools")
        if request.user:
            notes.append("user is not sent: the Gemini API has no such field")
        return types.GenerateContentConfig(**params)

    def _contents(self, messages: list[Message]) -> list[types.Content]:
        names: dict[str, str] = {}
        contents: list[types.Content] = []
        previous_role: str | None = None
        for message in messages:
            if message.role == "system":
                continue
            if message.role == "user":
                contents.append(
                    types.Content(role="user", parts=[types.Part(text=message.content or "")])
                )
            elif message.role == "assistant":
                parts: list[types.Part] = []
                if message.content:
                    parts.append(types.Part(text=message.content))
                calls = message.tool_calls or []
                # Gemini signs the first call of a turn only; without any signature we know,
                # the placeholder goes where the real one would have been.
                placeholder = not any(call.id in self._signatures for call in calls)
                for position, call in enumerate(calls):
                    names[call.id] = call.function.name
                    signature = self._signatures.get(call.id)
                    if signature is None and placeholder and position == 0:
                        signature = _SKIP_SIGNATURE
                    parts.append(
                        types.Part(
                            function_call=types.FunctionCall(
                                id=call.id,
                                name=call.function.name,
                                args=_parse_arguments(call.function.arguments),
                            ),
                            thought_signature=signature,
                        )
                    )
                if not parts:
                    parts.append(types.Part(text=""))
                contents.append(types.Content(role="model", parts=parts))
            else:  # tool
                call_id = message.tool_call_id or ""
                name = names.get(call_id) or message.name
                if not name:
                    raise ProviderError(
                        ErrorKind.BAD_REQUEST,
                        f"tool message {call_id!r} answers no earlier assistant tool call",
                        provider=self.name,
                    )
                part = types.Part(
                    function_response=types.FunctionResponse(
                        # An id Gemini never issued would be refused as a mismatch.
                        id=call_id if call_id in names else None,
                        name=name,
                        response=_tool_result(message.content),
                    )
                )
                if previous_role == "tool" and contents:
                    (contents[-1].parts or []).append(part)
                else:
                    contents.append(types.Content(role="user", parts=[part]))
            previous_role = message.role
        return contents

    def _remember_signature(self, call_id: str, signature: bytes | None) -> None:
        if not signature:
            return
        self._signatures[call_id] = signature
        self._signatures.move_to_end(call_id)
        while len(self._signatures) > _SIGNATURE_CACHE_SIZE:
            self._signatures.popitem(last=False)

    def _tool_call(self, part: types.Part, index: int, response_id: str | None) -> ToolCall | None:
        call = part.function_call
        if call is None or not call.name:
            return None
        arguments = json.dumps(call.args or {}, ensure_ascii=False)
        call_id = call.id or _synthetic_id(response_id, index, call.name, arguments)
        self._remember_signature(call_id, part.thought_signature)
        return ToolCall(id=call_id, function=FunctionCall(name=call.name, arguments=arguments))

    # ---- calls -----------------------------------------------------------------------------

    async def complete(self, model: ModelConfig, request: ChatRequest) -> Completion:
        contents = self._contents(request.messages)
        notes: list[str] = []
        config = self._config(model, request, notes)
        try:
            response = await self.client.aio.models.generate_content(
                model=model.model, contents=contents, config=config
            )
        except Exception as exc:
            raise self._map_error(exc, model) from None

        self._check_blocked(response, model)
        if not response.candidates:
            raise ProviderError(
                ErrorKind.SERVER_ERROR,
                "the provider returned no candidates",
                provider=self.name,
                model=model.model,
            )
        candidate = response.candidates[0]
        texts: list[str] = []
        tool_calls: list[ToolCall] = []
        for part in (candidate.content.parts if candidate.content else None) or ():
            if part.text and not part.thought:
                texts.append(part.text)
            call = self._tool_call(part, len(tool_calls), response.response_id)
            if call is not None:
                tool_calls.append(call)
        text = "".join(texts) or None
        usage = _usage(response.usage_metadata)
        if usage is None:
            usage = Usage.of(
                estimate_input_tokens(request.messages, request.tools),
                estimate_tokens(text or ""),
                estimated=True,
            )
        return Completion(
            message=AssistantMessage(content=text, tool_calls=tool_calls),
            finish_reason=_finish(_enum_value(candidate.finish_reason), bool(tool_calls)),
            usage=usage,
            model=response.model_version or model.model,
            notes=notes,
        )

    async def stream(self, model: ModelConfig, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        contents = self._contents(request.messages)
        notes: list[str] = []
        config = self._config(model, request, notes)
        answered_model = model.model
        finish: str | None = None
        usage: Usage | None = None
        text_parts: list[str] = []
        calls = 0
        try:
            # The request is sent on the first iteration, not by the await.
            chunks = await self.client.aio.models.generate_content_stream(
                model=model.model, contents=contents, config=config
            )
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    self._check_blocked(chunk, model)
                    if chunk.model_version:
                        answered_model = chunk.model_version
                    # Each chunk's usage is the running total so far: the last one wins.
                    usage = _usage(chunk.usage_metadata) or usage
                    if not chunk.candidates:
                        continue
                    candidate = chunk.candidates[0]
                    for part in (candidate.content.parts if candidate.content else None) or ():
                        if part.text and not part.thought:
                            text_parts.append(part.text)
                            yield TextDelta(text=part.text)
                        call = self._tool_call(part, calls, chunk.response_id)
                        if call is not None:
                            yield ToolCallDelta(index=calls, tool_call=call)
                            calls += 1
                    if candidate.finish_reason is not None:
                        finish = _enum_value(candidate.finish_reason)
        except ProviderError:
            raise
        except Exception as exc:
            raise self._map_error(exc, model) from None

        if usage is None:
            usage = Usage.of(
                estimate_input_tokens(request.messages, request.tools),
                estimate_tokens("".join(text_parts)),
                estimated=True,
            )
        yield StreamFinish(
            finish_reason=_finish(finish, calls > 0),
            usage=usage,
            model=answered_model,
            truncated=finish is None,
            notes=notes,
        )

    async def aclose(self) -> None:
        await self.client.aio.aclose()

    # ---- errors ----------------------------------------------------------------------------

    def _check_blocked(self, response: types.GenerateContentResponse, model: ModelConfig) -> None:
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            reason = _enum_value(feedback.block_reason)
            detail = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
            raise ProviderError(
                ErrorKind.CONTENT_FILTERED,
                f"the provider blocked the prompt ({reason}){detail}",
                provider=self.name,
                model=model.model,
            )

    def _map_error(self, exc: BaseException, model: ModelConfig) -> ProviderError:
        return map_gemini_error(exc, provider=self.name, model=model.model)


def map_gemini_error(exc: BaseException, *, provider: str, model: str) -> ProviderError:
    """Classify an exception raised by a `google-genai` call."""

    def make(kind: ErrorKind, message: str, **kw: Any) -> ProviderError:
        return ProviderError(kind, message, provider=provider, model=model, **kw)

    if isinstance(exc, genai_errors.APIError):
        code = exc.code or 0
        status = str(exc.status or "")
        text = str(exc.message or f"the provider answered {code}")
        details = _error_details(exc)
        reasons = {str(d.get("reason", "")) for d in details}
        if code == 429 or status == "RESOURCE_EXHAUSTED":
            return make(
                ErrorKind.RATE_LIMITED, text, status=code, retry_after=_retry_after(exc, details)
            )
        if (
            code in (401, 403)
            or status in ("UNAUTHENTICATED", "PERMISSION_DENIED")
            # Gemini answers a wrong key with 400 INVALID_ARGUMENT and this reason.
            or "API_KEY_INVALID" in reasons
        ):
            # Never echo the provider's text: it may quote part of the key.
            return make(
                ErrorKind.AUTHENTICATION,
                "the provider rejected the configured credentials",
                status=code,
            )
        if code == 404 or status == "NOT_FOUND":
            return make(ErrorKind.NOT_FOUND, text, status=code)
        if code in (408, 504) or status == "DEADLINE_EXCEEDED":
            return make(ErrorKind.TIMEOUT, text, status=code)
        if code >= 500 or code == 0:
            return make(ErrorKind.SERVER_ERROR, text, status=code or None)
        if _CONTEXT_LENGTH.search(text):
            return make(ErrorKind.CONTEXT_LENGTH, text, status=code)
        return make(ErrorKind.BAD_REQUEST, text, status=code)
    if isinstance(exc, _TIMEOUT_ERRORS):
        return make(ErrorKind.TIMEOUT, "the provider did not answer in time")
    if isinstance(exc, _TRANSPORT_ERRORS):
        return make(ErrorKind.SERVER_ERROR, "the connection to the provider failed")
    if isinstance(exc, genai_errors.UnknownApiResponseError | PydanticValidationError):
        return make(ErrorKind.SERVER_ERROR, "the provider sent a response that could not be read")
    if isinstance(exc, ValueError):
        # The SDK refuses, before sending, requests it knows the API would refuse.
        return make(ErrorKind.BAD_REQUEST, f"the request could not be sent: {exc}")
    return make(ErrorKind.SERVER_ERROR, "the provider call failed")


# ---- helpers ---------------------------------------------------------------------------------


def _function_calling(choice: Any) -> types.FunctionCallingConfig | None:
    if choice is None:
        return None
    if choice == "auto":
        return types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.AUTO)
    if choice == "none":
        return types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE)
    if choice == "required":
        return types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY)
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if name:
            return types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=[str(name)]
            )
    return None


def _parse_arguments(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def _tool_result(content: str | None) -> dict[str, Any]:
    """A function response must be a JSON object; Google reads its `output` key as the result."""
    if not content:
        return {"output": ""}
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        return {"output": content}
    return value if isinstance(value, dict) else {"output": value}


def _synthetic_id(response_id: str | None, index: int, name: str, arguments: str) -> str:
    seed = f"{response_id or ''}\x00{index}\x00{name}\x00{arguments}".encode()
    return "call_" + hashlib.sha256(seed).hexdigest()[:24]


def _enum_value(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _finish(reason: str | None, has_calls: bool) -> FinishReason:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    if has_calls:
        return "tool_calls"
    return "stop"


def _usage(meta: types.GenerateContentResponseUsageMetadata | None) -> Usage | None:
    if meta is None or (meta.prompt_token_count is None and meta.candidates_token_count is None):
        return None
    # Thinking tokens are billed as output but not counted in candidatesTokenCount.
    output = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
    return Usage.of(meta.prompt_token_count or 0, output)


def _error_details(exc: genai_errors.APIError) -> list[dict[str, Any]]:
    body = exc.details
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("details"), list):
            return [d for d in inner["details"] if isinstance(d, dict)]
    return []


def _retry_after(exc: genai_errors.APIError, details: list[dict[str, Any]]) -> float | None:
    headers = getattr(exc.response, "headers", None)
    if headers is not None:
        seconds = parse_retry_after(headers.get("retry-after"))
        if seconds is not None:
            return seconds
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            return _duration(detail.get("retryDelay"))
    return None


def _duration(value: Any) -> float | None:
    """A protobuf Duration: "7s" / "0.5s" in JSON, or {"seconds": 7, "nanos": 0}."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return max(0.0, float(value[:-1]))
        except ValueError:
            return None
    if isinstance(value, dict):
        try:
            return max(0.0, float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9)
        except (TypeError, ValueError):
            return None
    return None
