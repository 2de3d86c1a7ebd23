"""Anthropic's Messages API through the official `anthropic.AsyncAnthropic` SDK (2.x).

The canonical (OpenAI-shaped) request is translated to the Messages API: system messages are
lifted into `system`, tool calls become `tool_use` blocks and tool results `tool_result` blocks
inside a user turn, and consecutive turns of one role are merged, as the API wants alternation.

Two SDK 2.x behaviours shape this adapter:

- The SDK emits its own OpenTelemetry span per call (and injects trace headers) unless the client is
  built with `open_telemetry=False`. The gateway traces SDK calls through an auto-instrumentor
  (OpenInference or Traceloop) instead, so the built-in spans are turned off for every client here.
- The SDK sends `anthropic-version: 2026-10-21`, under which the API refuses `temperature` and
  `top_p` (even at their defaults) with a 400, and the SDK's `create` no longer takes them. They
  are therefore dropped, with a note on the completion, unless the provider entry pins an older
  `api_version`, in which case they are sent as extra body fields.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import anthropic
import httpx2
from pydantic import SecretStr

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
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
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

# The API version from which sampling parameters are refused (the SDK 2.x default).
SAMPLING_REMOVED_IN = "2026-10-21"

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# `error.type` of an Anthropic error body -> kind; used for `error` events inside a stream,
# whose HTTP status (200) says nothing.
_ERROR_TYPES: dict[str, ErrorKind] = {
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "authentication_error": ErrorKind.AUTHENTICATION,
    "permission_error": ErrorKind.AUTHENTICATION,
    "billing_error": ErrorKind.AUTHENTICATION,
    "not_found_error": ErrorKind.NOT_FOUND,
    "request_too_large": ErrorKind.BAD_REQUEST,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "timeout_error": ErrorKind.TIMEOUT,
    "api_error": ErrorKind.SERVER_ERROR,
    "overloaded_error": ErrorKind.SERVER_ERROR,
}

_CONTEXT_PHRASES = (
    "prompt is too long",
    "context window",
    "context length",
    "context limit",
    "exceed context",
    "exceeds the context",
    "too many tokens",
)

_AUTH_MESSAGE = "the provider rejected the configured credentials"


def default_max_tokens(model_id: str) -> int:
    """`max_tokens` to send when neither the caller nor the model alias gives one.

    The API requires the field. Claude 3 (not 3.5/3.7) models cap output at 4096; later ones take
    at least 8192. Kept modest: it also bounds the cost estimate of a request.
    """
    legacy = ("claude-3-opus", "claude-3-sonnet", "claude-3-haiku")
    if model_id.startswith(legacy) or "claude-instant" in model_id:
        return 4096
    return 8192


class AnthropicConfig(ProviderConfig):
    type: Literal["anthropic"] = "anthropic"
    api_key: SecretStr | None = None
    base_url: str | None = None
    # Pin `anthropic-version` (e.g. "2023-06-01") when a workload needs temperature/top_p.
    api_version: str | None = None


class AnthropicProvider(Provider):
    config_model = AnthropicConfig
    config: AnthropicConfig

    def __init__(self, name: str, config: AnthropicConfig) -> None:
        super().__init__(name, config)
        self._credentials_problem: str | None = None
        self.client = self._build_client(config)

    def _build_client(self, config: AnthropicConfig) -> anthropic.AsyncAnthropic:
        options: dict[str, Any] = {
            "base_url": config.base_url,
            "max_retries": 0,  # retrying is the failover policy's job
            # The SDK's own spans (and the trace headers it injects for them) would duplicate
            # the auto-instrumentor's: turned off for this client, whatever the environment says.
            "open_telemetry": False,
            "default_headers": (
                {"anthropic-version": config.api_version} if config.api_version else None
            ),
        }
        api_key = config.api_key.get_secret_value() if config.api_key else None
        try:
            # Without a key the SDK looks in the environment (ANTHROPIC_API_KEY, profiles, …).
            return anthropic.AsyncAnthropic(api_key=api_key, **options)
        except anthropic.CredentialsError:
            # A broken profile must not stop the gateway from starting: calls fail instead.
            self._credentials_problem = "the Anthropic credentials could not be loaded"
            return anthropic.AsyncAnthropic(api_key="", **options)

    @property
    def _has_credentials(self) -> bool:
        client = self.client
        return bool(client.api_key or client.auth_token or client.credentials is not None)

    @property
    def _sampling_allowed(self) -> bool:
        version = self.config.api_version
        return version is not None and version < SAMPLING_REMOVED_IN

    # ---- request translation ------------------------------------------------------------

    def _params(self, model: ModelConfig, request: ChatRequest) -> tuple[dict[str, Any], list[str]]:
        notes: list[str] = []
        try:
            system, messages = to_anthropic_messages(request.messages)
        except ProviderError as exc:
            exc.provider, exc.model = self.name, model.model
            raise
        if not messages:
            raise ProviderError(
                ErrorKind.BAD_REQUEST,
                "the request needs at least one non-system message",
                provider=self.name,
                model=model.model,
            )
        params: dict[str, Any] = {
            "model": model.model,
            "messages": messages,
            "max_tokens": request.max_tokens or model.max_tokens or default_max_tokens(model.model),
            "timeout": model.timeout_s,
        }
        if system:
            params["system"] = system
        if request.stop:
            # The API refuses whitespace-only stop sequences (such as "\n\n").
            stops = [stop for stop in request.stop if stop.strip()]
            if len(stops) < len(request.stop):
                notes.append("whitespace-only stop sequences dropped: Anthropic refuses them")
            if stops:
                params["stop_sequences"] = stops
        if request.user:
            params["metadata"] = {"user_id": request.user}
        if request.tools:
            params["tools"] = to_anthropic_tools(request.tools)
            if request.tool_choice is not None:
                choice = to_anthropic_tool_choice(request.tool_choice)
                if choice is not None:
                    params["tool_choice"] = choice
        elif request.tool_choice is not None:
            notes.append("tool_choice dropped: the request has no tools")
        sampling = {
            field: getattr(request, field)
            for field in ("temperature", "top_p")
            if getattr(request, field) is not None
        }
        if sampling and self._sampling_allowed:
            params["extra_body"] = sampling
        else:
            notes.extend(
                f"{field} dropped: Anthropic API versions from {SAMPLING_REMOVED_IN} refuse it"
                for field in sampling
            )
        return params, notes

    def _check_credentials(self, model: ModelConfig) -> None:
        if self._credentials_problem or not self._has_credentials:
            raise ProviderError(
                ErrorKind.AUTHENTICATION,
                self._credentials_problem or "no Anthropic API key is configured",
                provider=self.name,
                model=model.model,
            )

    # ---- calls ----------------------------------------------------------------------------

    async def complete(self, model: ModelConfig, request: ChatRequest) -> Completion:
        self._check_credentials(model)
        params, notes = self._params(model, request)
        try:
            response = await self.client.messages.create(**params)
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            raise self._map_error(exc, model) from None

        texts: list[str] = []
        tool_calls: list[ToolCall] = []
        for block in response.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                tool_calls.append(
                    ToolCall(
                        id=block.id,
                        function=FunctionCall(name=block.name, arguments=json.dumps(block.input)),
                    )
                )
        text = "".join(texts) if texts else None
        usage = _usage_of(response.usage)
        if usage is None:
            usage = Usage.of(
                estimate_input_tokens(request.messages, request.tools),
                estimate_tokens(text or ""),
                estimated=True,
            )
        return Completion(
            message=AssistantMessage(content=text, tool_calls=tool_calls),
            finish_reason=_FINISH.get(response.stop_reason or "end_turn", "stop"),
            usage=usage,
            model=response.model or model.model,
            notes=notes,
        )

    async def stream(self, model: ModelConfig, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self._check_credentials(model)
        params, notes = self._params(model, request)
        params["stream"] = True
        try:
            events = await self.client.messages.create(**params)
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            raise self._map_error(exc, model) from None

        answered_model = model.model
        stop_reason: str | None = None
        finished = False
        input_tokens: int | None = None
        output_tokens: int | None = None  # final only once message_delta has said it
        text_parts: list[str] = []
        # Open tool_use blocks by content-block index: (id, name, JSON fragments, initial input).
        open_tools: dict[int, tuple[str, str, list[str], dict[str, Any]]] = {}
        tool_count = 0
        try:
            async with events:
                async for event in events:
                    if event.type == "message_start":
                        message = event.message
                        if message.model:
                            answered_model = message.model
                        if message.usage is not None:
                            input_tokens = _input_tokens(message.usage)
                    elif event.type == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            open_tools[event.index] = (block.id, block.name, [], dict(block.input))
                        elif block.type == "text" and block.text:
                            text_parts.append(block.text)
                            yield TextDelta(text=block.text)
                    elif event.type == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta":
                            if delta.text:
                                text_parts.append(delta.text)
                                yield TextDelta(text=delta.text)
                        elif delta.type == "input_json_delta" and event.index in open_tools:
                            open_tools[event.index][2].append(delta.partial_json)
                    elif event.type == "content_block_stop":
                        tool = open_tools.pop(event.index, None)
                        if tool is not None:
                            call_id, name, fragments, initial = tool
                            arguments = "".join(fragments).strip() or json.dumps(initial)
                            yield ToolCallDelta(
                                index=tool_count,
                                tool_call=ToolCall(
                                    id=call_id,
                                    function=FunctionCall(name=name, arguments=arguments),
                                ),
                            )
                            tool_count += 1
                    elif event.type == "message_delta":
                        if event.delta.stop_reason:
                            stop_reason = event.delta.stop_reason
                        usage = event.usage
                        if usage is not None:
                            output_tokens = usage.output_tokens
                            if usage.input_tokens is not None:
                                input_tokens = _input_tokens(usage)
                    elif event.type == "message_stop":
                        finished = True
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            raise self._map_error(exc, model) from None

        # Tool blocks still open here were cut mid-arguments: their JSON is incomplete, so they
        # are not yielded; `truncated` tells the caller the answer is partial.
        if input_tokens is not None and output_tokens is not None:
            usage_total = Usage.of(input_tokens, output_tokens)
        else:  # cut before message_delta: count what arrived
            usage_total = Usage.of(
                input_tokens
                if input_tokens is not None
                else estimate_input_tokens(request.messages, request.tools),
                estimate_tokens("".join(text_parts)),
                estimated=True,
            )
        yield StreamFinish(
            finish_reason=_FINISH.get(stop_reason or "end_turn", "stop"),
            usage=usage_total,
            model=answered_model,
            truncated=not finished,
            notes=notes,
        )

    async def aclose(self) -> None:
        await self.client.close()

    def _map_error(self, exc: BaseException, model: ModelConfig) -> ProviderError:
        return map_anthropic_error(exc, provider=self.name, model=model.model)


# ---- translation helpers (module level so that other adapters may reuse them) -------------


def to_anthropic_messages(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Canonical messages -> (system text, Anthropic `messages`), with same-role turns merged."""
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            if message.content:
                system_parts.append(message.content)
            continue
        blocks = _content_blocks(message)
        if not blocks:
            continue
        role = "assistant" if message.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    _trim_prefill(turns)
    for turn in turns:
        if turn["role"] == "user":
            # The API wants a user turn's tool_result blocks before anything else in it.
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    system = "\n\n".join(system_parts) if system_parts else None
    return system, turns


def _trim_prefill(turns: list[dict[str, Any]]) -> None:
    """A final assistant turn is a prefill, which the API refuses to end in whitespace: trimmed
    (the model writes that whitespace again, and a spliced continuation drops it)."""
    if not turns or turns[-1]["role"] != "assistant":
        return
    blocks = turns[-1]["content"]
    if blocks and blocks[-1]["type"] == "text":
        blocks[-1]["text"] = blocks[-1]["text"].rstrip()
        if not blocks[-1]["text"]:
            blocks.pop()
    if not blocks:
        turns.pop()


def _content_blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            block["content"] = message.content
        return [block]
    blocks: list[dict[str, Any]] = []
    if message.content:  # the API refuses empty text blocks
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls or ():
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": _parse_arguments(call),
            }
        )
    return blocks


def _parse_arguments(call: ToolCall) -> dict[str, Any]:
    text = call.function.arguments.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ProviderError(
            ErrorKind.BAD_REQUEST,
            f"the arguments of tool call {call.id!r} are not a JSON object",
        )
    return value


def to_anthropic_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for tool in tools:
        spec: dict[str, Any] = {
            "name": tool.function.name,
            "input_schema": tool.function.parameters or {"type": "object", "properties": {}},
        }
        if tool.function.description:
            spec["description"] = tool.function.description
        result.append(spec)
    return result


def to_anthropic_tool_choice(choice: ToolChoice) -> dict[str, Any] | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        if name:
            return {"type": "tool", "name": str(name)}
    return None


def _input_tokens(usage: Any) -> int:
    """Total prompt tokens: uncached plus cache writes and reads, which the API counts apart."""
    return (
        (usage.input_tokens or 0)
        + (getattr(usage, "cache_creation_input_tokens", None) or 0)
        + (getattr(usage, "cache_read_input_tokens", None) or 0)
    )


def _usage_of(usage: Any) -> Usage | None:
    if usage is None:
        return None
    return Usage.of(_input_tokens(usage), usage.output_tokens or 0)


# ---- errors ---------------------------------------------------------------------------------


def map_anthropic_error(exc: BaseException, *, provider: str, model: str) -> ProviderError:
    """Classify an `anthropic` SDK exception (or a transport error raised while streaming)."""

    def make(kind: ErrorKind, message: str, **kw: Any) -> ProviderError:
        return ProviderError(kind, message, provider=provider, model=model, **kw)

    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return make(ErrorKind.TIMEOUT, "the provider did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError | httpx2.HTTPError):
        return make(ErrorKind.SERVER_ERROR, "the connection to the provider failed")
    if isinstance(exc, anthropic.CredentialsError):
        return make(ErrorKind.AUTHENTICATION, "the Anthropic credentials could not be loaded")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        error_type = str(exc.type or "")
        api_message = exc.api_message if isinstance(exc.api_message, str) else None
        if status < 400:
            # An `error` event inside a stream that had started with 200.
            kind = _ERROR_TYPES.get(error_type, ErrorKind.SERVER_ERROR)
            text = api_message or f"the provider's stream failed ({error_type or 'error'})"
            if kind is ErrorKind.AUTHENTICATION:
                return make(kind, _AUTH_MESSAGE)
            if kind is ErrorKind.BAD_REQUEST and _says_context(text):
                kind = ErrorKind.CONTEXT_LENGTH
            return make(kind, text)
        text = api_message or f"the provider answered {status}"
        if status == 429:
            return make(
                ErrorKind.RATE_LIMITED, text, status=status, retry_after=_retry_after(exc.response)
            )
        if status in (401, 403):
            # Never echo the provider's text: it may quote part of the key.
            return make(ErrorKind.AUTHENTICATION, _AUTH_MESSAGE, status=status)
        if status == 404:
            return make(ErrorKind.NOT_FOUND, text, status=status)
        if status in (408, 504) or error_type == "timeout_error":
            return make(ErrorKind.TIMEOUT, text, status=status)
        if status >= 500:  # incl. 529 overloaded_error
            return make(ErrorKind.SERVER_ERROR, text, status=status)
        if _says_context(text):
            return make(ErrorKind.CONTEXT_LENGTH, text, status=status)
        return make(ErrorKind.BAD_REQUEST, text, status=status)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return make(ErrorKind.SERVER_ERROR, "the provider sent a response that could not be read")
    return make(ErrorKind.SERVER_ERROR, "the provider call failed")


def _says_context(text: str) -> bool:
    lowered = text.lower()
    return any(phrase in lowered for phrase in _CONTEXT_PHRASES)


def _retry_after(response: httpx2.Response) -> float | None:
    headers = response.headers
    retry_after = parse_retry_after(headers.get("retry-after"))
    if retry_after is None and headers.get("retry-after-ms") is not None:
        ms = parse_retry_after(headers.get("retry-after-ms"))
        retry_after = ms / 1000 if ms is not None else None
    return retry_after
