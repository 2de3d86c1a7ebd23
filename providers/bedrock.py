"""AWS Bedrock through boto3's ``bedrock-runtime`` Converse and ConverseStream operations.

Converse is one request shape for every Bedrock model family, so there is one code path.

boto3 blocks, so every call runs in a bounded thread pool owned by the provider
(``max_concurrency`` workers) and the event loop never waits on a socket. A stream is read in the
pool too: one worker iterates the EventStream and hands each event to the async side through an
`asyncio.Queue` fed with ``call_soon_threadsafe``; when the consumer goes away the worker is told
to stop and the upstream socket is shut down.

botocore's read timeout belongs to a client, not a call, so the provider keeps one client per
distinct ``timeout_s`` (the default one built in ``__init__``, others on first use); each call is
also bounded by ``asyncio.wait_for``. Retries are off (``total_max_attempts=1``): retrying is the
failover policy's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import re
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import boto3
import botocore.eventstream
import botocore.exceptions
import urllib3.exceptions
from botocore.config import Config
from pydantic import Field, SecretStr, model_validator

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

_DEFAULT_TIMEOUT_S = 60.0  # ModelConfig's default: the client built in __init__ uses it
_MAX_CONNECT_TIMEOUT_S = 10.0
_MAX_TEMPERATURE = 1.0  # Converse's inferenceConfig.temperature is 0..1
_EMPTY_TOOL_RESULT = "(no output)"  # Converse refuses blank text blocks

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

# Error codes, lower-cased: HTTP errors say "ThrottlingException", stream exception frames
# say "throttlingException".
_RATE_LIMITED = {"throttlingexception", "toomanyrequestsexception"}
_SERVER = {
    "serviceunavailableexception",
    "modelnotreadyexception",
    "internalserverexception",
    "internalfailure",
    "modelerrorexception",
    "modelstreamerrorexception",
}
_TIMEOUT = {"modeltimeoutexception"}
_AUTH = {
    "accessdeniedexception",
    "unrecognizedclientexception",
    "expiredtokenexception",
    "invalidsignatureexception",
    "incompletesignature",
    "incompletesignatureexception",
    "missingauthenticationtokenexception",
    "missingauthenticationtoken",
    "signaturedoesnotmatch",
}
_NOT_FOUND = {"resourcenotfoundexception"}
_VALIDATION = {"validationexception"}
_CONTEXT_HINT = re.compile(
    r"too long|context|too many (?:input |total )?tokens|token limit|maximum.{0,40}tokens",
    re.IGNORECASE,
)


class BedrockConfig(ProviderConfig):
    type: Literal["bedrock"] = "bedrock"
    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    profile: str | None = None
    max_concurrency: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> BedrockConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        return self


class _StreamHandle:
    """Shared between the async consumer and the pool worker reading one stream."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None

    def attach(self, stream: Any) -> None:
        with self._lock:
            self._stream = stream
        if self.cancelled.is_set():
            self._interrupt()

    def cancel(self) -> None:
        """Ask the worker to stop; unblock it if it is waiting on the socket."""
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        self._interrupt()

    def _interrupt(self) -> None:
        with self._lock:
            stream = self._stream
        # botocore's EventStream wraps a urllib3 response; shutting its socket down wakes a
        # blocked read at once (closing it from this thread could block on the reader's lock).
        raw = getattr(stream, "_raw_stream", None)
        shutdown = getattr(raw, "shutdown", None)
        if shutdown is not None:
            with contextlib.suppress(Exception):
                shutdown()


class BedrockProvider(Provider):
    config_model = BedrockConfig
    config: BedrockConfig

    def __init__(self, name: str, config: BedrockConfig) -> None:
        super().__init__(name, config)
        self._session = self._build_session(config)
        region = config.region or self._session.region_name
        if not region:
            raise ValueError(
                f"provider {name!r}: no AWS region; set `region` or AWS_REGION / AWS_DEFAULT_REGION"
            )
        self.region: str = region
        self._pool = ThreadPoolExecutor(
            max_workers=config.max_concurrency, thread_name_prefix=f"bedrock-{name}"
        )
        self._clients: dict[float, Any] = {}
        self._clients_lock = threading.Lock()
        self._streams: set[_StreamHandle] = set()
        self.client = self._client_for(_DEFAULT_TIMEOUT_S)

    # ---- construction ----

    @staticmethod
    def _build_session(config: BedrockConfig) -> boto3.Session:
        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        # Explicit keys win; otherwise the standard chain (env, profile, SSO, instance role, …).
        return boto3.Session(
            aws_access_key_id=secret(config.access_key_id),
            aws_secret_access_key=secret(config.secret_access_key),
            aws_session_token=secret(config.session_token),
            region_name=config.region,
            profile_name=config.profile,
        )

    def _client_for(self, timeout_s: float) -> Any:
        """The client whose read timeout is `timeout_s`; built once, then reused (thread-safe)."""
        key = float(timeout_s)
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._clients_lock:
            client = self._clients.get(key)
            if client is None:
                client = self._session.client(
                    "bedrock-runtime",
                    region_name=self.region,
                    endpoint_url=self.config.endpoint_url,
                    config=Config(
                        retries={"mode": "standard", "total_max_attempts": 1},
                        connect_timeout=min(key, _MAX_CONNECT_TIMEOUT_S),
                        read_timeout=key,
                        max_pool_connections=self.config.max_concurrency,
                        user_agent_extra="llm-router",
                    ),
                )
                self._clients[key] = client
        return client

    # ---- request ----

    def _params(self, model: ModelConfig, request: ChatRequest) -> tuple[dict[str, Any], list[str]]:
        notes: list[str] = []
        system, messages = _converse_messages(request.messages)
        params: dict[str, Any] = {"modelId": model.model, "messages": messages}
        if system:
            params["system"] = system

        inference: dict[str, Any] = {}
        max_tokens = request.max_tokens or model.max_tokens
        if max_tokens is not None:
            inference["maxTokens"] = max_tokens
        if request.temperature is not None:
            temperature = request.temperature
            if temperature > _MAX_TEMPERATURE:
                notes.append(
                    f"temperature {temperature} lowered to {_MAX_TEMPERATURE}, Bedrock's maximum"
                )
                temperature = _MAX_TEMPERATURE
            inference["temperature"] = temperature
        if request.top_p is not None:
            inference["topP"] = request.top_p
        if request.stop:
            inference["stopSequences"] = list(request.stop)
        if inference:
            params["inferenceConfig"] = inference
        if request.user:
            notes.append("user is not sent: Bedrock Converse has no such field")

        tool_config = _tool_config(request, notes)
        if tool_config is not None:
            params["toolConfig"] = tool_config
        return params, notes

    # ---- calls ----

    async def complete(self, model: ModelConfig, request: ChatRequest) -> Completion:
        params, notes = self._params(model, request)
        timeout = model.timeout_s
        loop = asyncio.get_running_loop()
        # The worker runs in a copy of this context, so that an instrumentor's span for the boto3
        # call nests under the current (attempt) span instead of starting a trace of its own.
        job = loop.run_in_executor(
            self._pool, contextvars.copy_context().run, self._converse, timeout, params
        )
        try:
            response = await asyncio.wait_for(job, timeout)
        except TimeoutError:
            raise self._timeout(model) from None
        except _SDK_ERRORS as exc:
            raise self._map_error(exc, model) from None

        blocks = ((response.get("output") or {}).get("message") or {}).get("content") or []
        texts: list[str] = []
        tool_calls: list[ToolCall] = []
        for block in blocks:
            if "text" in block:
                texts.append(block["text"])
            elif "toolUse" in block:
                use = block["toolUse"]
                tool_calls.append(
                    ToolCall(
                        id=use.get("toolUseId") or f"call_{len(tool_calls)}",
                        function=FunctionCall(
                            name=use.get("name", ""),
                            arguments=json.dumps(use.get("input", {}), ensure_ascii=False),
                        ),
                    )
                )
        text = "".join(texts) or None
        raw_usage = response.get("usage")
        if raw_usage:
            usage = Usage.of(raw_usage.get("inputTokens", 0), raw_usage.get("outputTokens", 0))
        else:
            usage = Usage.of(
                estimate_input_tokens(request.messages, request.tools),
                estimate_tokens(text or ""),
                estimated=True,
            )
        return Completion(
            message=AssistantMessage(content=text, tool_calls=tool_calls),
            finish_reason=_STOP.get(response.get("stopReason") or "end_turn", "stop"),
            usage=usage,
            model=model.model,
            notes=notes,
        )

    def _converse(self, timeout_s: float, params: dict[str, Any]) -> dict[str, Any]:
        return self._client_for(timeout_s).converse(**params)

    async def stream(self, model: ModelConfig, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        params, notes = self._params(model, request)
        timeout = model.timeout_s
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        handle = _StreamHandle()

        def put(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening
                handle.cancelled.set()

        job = loop.run_in_executor(
            self._pool, contextvars.copy_context().run, self._pump, timeout, params, handle, put
        )
        job.add_done_callback(_swallow)
        self._streams.add(handle)

        stop_reason: str | None = None
        usage: Usage | None = None
        received = 0
        text_parts: list[str] = []
        pending: dict[int, dict[str, Any]] = {}  # contentBlockIndex -> tool use being assembled
        emitted = 0

        def tool_delta(slot: dict[str, Any]) -> ToolCallDelta:
            nonlocal emitted
            delta = ToolCallDelta(
                index=emitted,
                tool_call=ToolCall(
                    id=slot["id"] or f"call_{emitted}",
                    function=FunctionCall(
                        name=slot["name"], arguments="".join(slot["input"]) or "{}"
                    ),
                ),
            )
            emitted += 1
            return delta

        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    raise self._timeout(model) from None
                if kind == "end":
                    break
                if kind == "error":
                    if received and isinstance(value, _BROKEN_STREAM):
                        break  # cut off after it started: a truncated stream, not a failure
                    raise self._map_error(value, model)
                received += 1
                event: dict[str, Any] = value
                if "contentBlockDelta" in event:
                    body = event["contentBlockDelta"]
                    delta = body.get("delta") or {}
                    if delta.get("text"):
                        text_parts.append(delta["text"])
                        yield TextDelta(text=delta["text"])
                    elif "toolUse" in delta:
                        slot = pending.setdefault(
                            body.get("contentBlockIndex", 0), {"id": "", "name": "", "input": []}
                        )
                        slot["input"].append(delta["toolUse"].get("input") or "")
                elif "contentBlockStart" in event:
                    body = event["contentBlockStart"]
                    use = (body.get("start") or {}).get("toolUse")
                    if use is not None:
                        pending[body.get("contentBlockIndex", 0)] = {
                            "id": use.get("toolUseId", ""),
                            "name": use.get("name", ""),
                            "input": [],
                        }
                elif "contentBlockStop" in event:
                    slot = pending.pop(event["contentBlockStop"].get("contentBlockIndex", 0), None)
                    if slot is not None:
                        yield tool_delta(slot)
                elif "messageStop" in event:
                    stop_reason = event["messageStop"].get("stopReason") or "end_turn"
                elif "metadata" in event:
                    raw_usage = event["metadata"].get("usage")
                    if raw_usage:
                        usage = Usage.of(
                            raw_usage.get("inputTokens", 0), raw_usage.get("outputTokens", 0)
                        )
        finally:
            handle.cancel()
            self._streams.discard(handle)

        if not received:
            raise ProviderError(
                ErrorKind.SERVER_ERROR,
                "the provider ended the stream before sending anything",
                provider=self.name,
                model=model.model,
            )
        for index in sorted(pending):
            yield tool_delta(pending[index])
        if usage is None:
            usage = Usage.of(
                estimate_input_tokens(request.messages, request.tools),
                estimate_tokens("".join(text_parts)),
                estimated=True,
            )
        yield StreamFinish(
            finish_reason=_STOP.get(stop_reason or "end_turn", "stop"),
            usage=usage,
            model=model.model,
            truncated=stop_reason is None,
            notes=notes,
        )

    def _pump(
        self,
        timeout_s: float,
        params: dict[str, Any],
        handle: _StreamHandle,
        put: Callable[[tuple[str, Any]], None],
    ) -> None:
        """In a pool thread: open the stream and forward its events until done or cancelled."""
        stream: Any = None
        try:
            if handle.cancelled.is_set():
                return
            response = self._client_for(timeout_s).converse_stream(**params)
            stream = response["stream"]
            handle.attach(stream)
            for event in stream:
                if handle.cancelled.is_set():
                    return
                put(("event", event))
            put(("end", None))
        except Exception as exc:
            if not handle.cancelled.is_set():
                put(("error", exc))
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    async def aclose(self) -> None:
        for handle in list(self._streams):
            handle.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._clients_lock:
            clients = list(self._clients.values())
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()

    # ---- errors ----

    def _timeout(self, model: ModelConfig) -> ProviderError:
        return ProviderError(
            ErrorKind.TIMEOUT,
            f"the provider did not answer within {model.timeout_s:g}s",
            provider=self.name,
            model=model.model,
        )

    def _map_error(self, exc: BaseException, model: ModelConfig) -> ProviderError:
        return map_bedrock_error(exc, provider=self.name, model=model.model)


_SDK_ERRORS = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    botocore.eventstream.ParserError,
    urllib3.exceptions.HTTPError,
)
# A connection that broke while the event stream was being read.
_BROKEN_STREAM = (
    urllib3.exceptions.ProtocolError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ResponseStreamingError,
)


def _swallow(job: asyncio.Future[Any]) -> None:
    if not job.cancelled():
        job.exception()  # the worker reports through the queue; just mark it retrieved


def map_bedrock_error(exc: BaseException, *, provider: str, model: str) -> ProviderError:
    """Classify a boto3/botocore (or urllib3, mid-stream) exception from a Bedrock call."""

    def make(kind: ErrorKind, message: str, **kw: Any) -> ProviderError:
        return ProviderError(kind, message, provider=provider, model=model, **kw)

    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        key = code.lower()
        meta = exc.response.get("ResponseMetadata") or {}
        in_stream = isinstance(exc, botocore.exceptions.EventStreamError)
        status = None if in_stream else meta.get("HTTPStatusCode")
        text = str(error.get("Message") or "") or f"Bedrock answered {code or status}"
        if key in _AUTH or (not key and status in (401, 403)):
            # Never echo the provider's text: it may quote the access key or the account.
            return make(
                ErrorKind.AUTHENTICATION,
                "the provider rejected the configured AWS credentials",
                status=status,
            )
        if key in _RATE_LIMITED or (status == 429 and key not in _SERVER):
            headers = meta.get("HTTPHeaders") or {}
            return make(
                ErrorKind.RATE_LIMITED,
                text,
                status=status,
                retry_after=parse_retry_after(headers.get("retry-after")),
            )
        if key in _TIMEOUT or status == 408:
            return make(ErrorKind.TIMEOUT, text, status=status)
        if key in _SERVER or (status is not None and status >= 500):
            return make(ErrorKind.SERVER_ERROR, text, status=status)
        if key in _NOT_FOUND or status == 404:
            return make(ErrorKind.NOT_FOUND, text, status=status)
        if key in _VALIDATION and _CONTEXT_HINT.search(text):
            return make(ErrorKind.CONTEXT_LENGTH, text, status=status)
        if status == 424:
            return make(ErrorKind.SERVER_ERROR, text, status=status)
        return make(ErrorKind.BAD_REQUEST, text, status=status)
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError | botocore.exceptions.ReadTimeoutError):
        return make(ErrorKind.TIMEOUT, "the provider did not answer in time")
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError):
        return make(ErrorKind.TIMEOUT, "connecting to the provider timed out")
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return make(ErrorKind.AUTHENTICATION, "no usable AWS credentials were found")
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return make(ErrorKind.BAD_REQUEST, f"the request does not fit Bedrock Converse: {exc}")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return make(ErrorKind.SERVER_ERROR, "could not connect to the provider")
    if isinstance(exc, _BROKEN_STREAM):
        return make(ErrorKind.SERVER_ERROR, "the connection to the provider broke")
    if isinstance(exc, botocore.eventstream.ParserError):
        return make(ErrorKind.SERVER_ERROR, "the provider sent an unreadable event stream")
    return make(ErrorKind.SERVER_ERROR, "the provider call failed")


_CREDENTIAL_ERRORS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.NoAuthTokenError,
)


# ---- canonical -> Converse -------------------------------------------------------------------


def _tool_input(arguments: str) -> dict[str, Any]:
    """Converse wants a tool call's input as a JSON object, not OpenAI's JSON text."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def _converse_messages(
    messages: list[Message],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System blocks, and user/assistant turns with consecutive same-role turns merged."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return  # Converse refuses empty turns and blank text blocks
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for message in messages:
        if message.role == "system":
            if message.content:
                system.append({"text": message.content})
        elif message.role == "user":
            add("user", [{"text": message.content}] if message.content else [])
        elif message.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if message.content:
                blocks.append({"text": message.content})
            for call in message.tool_calls or ():
                use = {
                    "toolUseId": call.id,
                    "name": call.function.name,
                    "input": _tool_input(call.function.arguments),
                }
                blocks.append({"toolUse": use})
            add("assistant", blocks)
        else:  # tool results travel in a user turn
            result = {
                "toolUseId": message.tool_call_id,
                "content": [{"text": message.content or _EMPTY_TOOL_RESULT}],
            }
            add("user", [{"toolResult": result}])
    return system, turns


def _tool_spec(name: str, description: str | None, schema: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "inputSchema": {"json": schema}}
    if description:
        spec["description"] = description
    return {"toolSpec": spec}


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        if name:
            return {"tool": {"name": name}}
    return None


def _tool_config(request: ChatRequest, notes: list[str]) -> dict[str, Any] | None:
    # Converse refuses toolUse/toolResult blocks in the history unless toolConfig is present.
    history_tools: list[str] = []
    for message in request.messages:
        for call in message.tool_calls or ():
            if call.function.name not in history_tools:
                history_tools.append(call.function.name)
    has_tool_blocks = bool(history_tools) or any(m.role == "tool" for m in request.messages)

    if request.tools:
        specs = [
            _tool_spec(t.function.name, t.function.description, t.function.parameters)
            for t in request.tools
        ]
        if request.tool_choice == "none":
            if has_tool_blocks:
                notes.append(
                    "tool_choice 'none' is not supported by Bedrock Converse; the tools were sent "
                    "(the conversation holds tool calls) with no tool choice"
                )
                return {"tools": specs}
            notes.append(
                "tool_choice 'none' is not supported by Bedrock Converse; the tools were not sent"
            )
            return None
        config: dict[str, Any] = {"tools": specs}
        choice = _tool_choice(request.tool_choice)
        if choice is not None:
            config["toolChoice"] = choice
        return config
    if request.tool_choice is not None:
        notes.append("tool_choice dropped: the request has no tools")
    if history_tools:
        notes.append(
            "the conversation holds tool calls but the request has no tools; tools named in it "
            "were declared with an open schema, as Bedrock Converse requires"
        )
        return {
            "tools": [
                _tool_spec(name, None, {"type": "object", "properties": {}})
                for name in history_tools
            ]
        }
    return None
