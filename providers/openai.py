"""OpenAI and any OpenAI-compatible server (vLLM, Ollama, LM Studio, …) through `AsyncOpenAI`.

The client is built once per provider entry, with the SDK's own retries off: retrying is the
failover policy's job, and doing it twice would hammer a failing upstream.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import httpx2

try:  # the SDK's aiohttp transport (the `aiohttp` extra)
    import aiohttp
except ImportError:  # pragma: no cover
    aiohttp = None  # type: ignore[assignment]
import openai
import orjson
import pydantic
from openai._base_client import AsyncAPIClient, BaseClient
from openai._constants import RAW_RESPONSE_HEADER
from openai._httpx2 import request_exceptions, stream_consumed_exceptions, timeout_exceptions
from openai._legacy_response import LegacyAPIResponse
from openai._models import FinalRequestOptions
from openai._streaming import AsyncStream, ServerSentEvent, SSEDecoder
from openai._types import NotGiven
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import SecretStr

from app.chat import (
    AssistantMessage,
    ChatRequest,
    Completion,
    FinishReason,
    FunctionCall,
    StreamEvent,
    StreamFinish,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from app.errors import ErrorKind, ProviderError, parse_retry_after
from app.instrumentors import settle_stream
from app.steps import WAITING, Resumed, first_step
from providers.aiohttp_send import AiohttpSend, body_of
from providers.base import (
    ModelConfig,
    Provider,
    ProviderConfig,
    estimate_input_tokens,
    estimate_tokens,
)
from providers.openai_chunks import (
    Chunk,
    StreamedAnswer,
    held_values,
    parse_json,
    take_text_directly,
)

log = logging.getLogger("llm_router")

# After the finish reason, how long to wait for the usage chunk and the terminator before the
# stream is finalised anyway (a server that never closes its stream must not hold the caller).
AFTER_FINISH_S = 1.0
# After the usage chunk only `[DONE]` and the body's end are left: read, they let the connection
# go back to the pool (closed unread, it is dropped, and the next call opens another: a new TLS
# handshake to a real provider). They come with the usage chunk or just after; past this, the
# stream is finalised without them.
AFTER_USAGE_S = 0.1
# After `[DONE]`, how long the rest of the body (usually nothing but its end) may take to come.
DRAIN_S = 0.1

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


# Reasoning models (o-series, GPT-5) refuse `max_tokens` (they take `max_completion_tokens`) and any
# sampling parameter but the default; their chat variants (`gpt-5-chat-latest`) do not.
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def is_reasoning_model(model_id: str) -> bool:
    return model_id.startswith(_REASONING_PREFIXES) and "-chat" not in model_id


def _refuses_stream_options(exc: openai.OpenAIError) -> bool:
    """A 400 from a server that does not know `stream_options` (older vLLM or Azure versions)."""
    if not isinstance(exc, openai.BadRequestError):
        return False
    detail = _error_detail(exc)
    return "stream_options" in f"{detail.get('message', '')} {detail.get('param', '')}"


class OpenAIConfig(ProviderConfig):
    type: Literal["openai"] = "openai"
    api_key: SecretStr | None = None
    base_url: str | None = None
    organization: str | None = None
    max_connections: int = 100
    # aiohttp keeps its pool fast under concurrency, where httpx's degrades (bench/run.py);
    # either way the call goes through the SDK, so its instrumentor still sees it.
    transport: Literal["aiohttp", "httpx"] = "aiohttp"


class OpenAIProvider(Provider):
    config_model = OpenAIConfig
    config: OpenAIConfig

    def __init__(self, name: str, config: OpenAIConfig) -> None:
        super().__init__(name, config)
        self.client = self._build_client(config)
        # Cleared the first time the server refuses `stream_options`: not asked again.
        self._stream_usage = True
        # A malformed chunk is skipped, not fatal (the SDK's decoder would end the stream).
        self.client._make_sse_decoder = _TolerantSSEDecoder  # type: ignore[method-assign]
        self.client._process_response_data = _validating(  # type: ignore[method-assign]
            self.client._process_response_data
        )
        self.client._prepare_url = _memoised_urls(self.client._prepare_url, self.client)  # type: ignore[method-assign]
        pool = self.client._client
        if hasattr(pool, "_merge_url"):
            pool._merge_url = _memoised_urls(pool._merge_url, pool)
        if _PrebuiltRequests.fits(self.client):
            self.client._build_request = _PrebuiltRequests(self.client)  # type: ignore[method-assign]
        self.client._send_request = _direct_send(self.client)  # type: ignore[method-assign]
        _skip_idle_hooks(self.client)
        # Every option given, so the SDK deep-copies no default per call; each call copies this.
        # An idempotency key too, where the client sends none (OpenAI's): the SDK would make
        # one (a uuid4) per call for nothing.
        unsent = (
            {} if getattr(self.client, "_idempotency_header", True) else {"idempotency_key": ""}
        )
        self._chat_options = FinalRequestOptions.construct(
            method="post",
            url="/chat/completions",
            headers={RAW_RESPONSE_HEADER: "true"},
            max_retries=0,
            params={},
            **unsent,
        )
        self._stream_options = FinalRequestOptions.construct(
            method="post", url="/chat/completions", headers={}, max_retries=0, params={}, **unsent
        )
        self._plain_call = _PlainCall(self.client)
        self._traced_call = _TracedCall(self._plain_call)

    def _build_client(self, config: Any) -> openai.AsyncOpenAI:
        api_key = config.api_key.get_secret_value() if config.api_key else None
        return openai.AsyncOpenAI(
            # Servers such as Ollama take any key; the SDK refuses to start without one.
            api_key=api_key or "unused",
            base_url=config.base_url,
            organization=config.organization,
            max_retries=0,
            http_client=http_client(config.transport, config.max_connections),
        )

    def _model_id(self, model: ModelConfig) -> str:
        return model.model

    def _params(self, model: ModelConfig, request: ChatRequest) -> tuple[dict[str, Any], list[str]]:
        notes: list[str] = []
        params: dict[str, Any] = {
            "model": self._model_id(model),
            "messages": [m.model_dump(exclude_none=True) for m in request.messages],
            "timeout": model.timeout_s,
        }
        reasoning = is_reasoning_model(model.model)
        max_tokens = request.max_tokens or model.max_tokens
        if max_tokens is not None:
            params["max_completion_tokens" if reasoning else "max_tokens"] = max_tokens
        for field in ("temperature", "top_p", "stop", "user"):
            value = getattr(request, field)
            if value is None:
                continue
            if reasoning and field in ("temperature", "top_p"):
                notes.append(f"{field} dropped: {model.model} accepts only its default")
                continue
            params[field] = value
        if request.tools:
            params["tools"] = [t.model_dump(exclude_none=True) for t in request.tools]
            if request.tool_choice is not None:
                params["tool_choice"] = request.tool_choice
        elif request.tool_choice is not None:
            notes.append("tool_choice dropped: the request has no tools")
        return params, notes

    async def complete(self, model: ModelConfig, request: ChatRequest) -> Completion:
        params, notes = self._params(model, request)
        try:
            body = await self._post_chat(params)
        except openai.OpenAIError as exc:
            raise self._map_error(exc, model) from None
        except (orjson.JSONDecodeError, httpx2.HTTPError):
            raise ProviderError(
                ErrorKind.SERVER_ERROR,
                "the provider sent a response that could not be read",
                provider=self.name,
                model=model.model,
            ) from None
        choices = body.get("choices") if isinstance(body, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise ProviderError(
                ErrorKind.SERVER_ERROR, "the provider returned no choices", provider=self.name
            )
        choice = choices[0]
        message = choice.get("message") or {}
        tool_calls = [
            ToolCall(
                id=str(call.get("id") or f"call_{index}"),
                function=FunctionCall(
                    name=str(call["function"].get("name") or ""),
                    arguments=call["function"].get("arguments") or "{}",
                ),
            )
            for index, call in enumerate(message.get("tool_calls") or ())
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        ]
        text = message.get("content")
        reported = body.get("usage")
        if isinstance(reported, dict) and "prompt_tokens" in reported:
            usage = Usage.of(
                int(reported.get("prompt_tokens") or 0), int(reported.get("completion_tokens") or 0)
            )
        else:
            usage = Usage.of(
                estimate_input_tokens(request.messages, request.tools),
                estimate_tokens(text or ""),
                estimated=True,
            )
        return Completion(
            message=AssistantMessage(content=text, tool_calls=tool_calls),
            finish_reason=_FINISH.get(choice.get("finish_reason") or "stop", "stop"),
            usage=usage,
            model=body.get("model") or model.model,
            notes=notes,
        )

    async def _post_chat(self, params: dict[str, Any]) -> Any:
        """POST /chat/completions through the SDK's client, without its per-call overhead.

        `create` spends more time transforming its typed parameters (a no-op for the plain
        JSON built here) and building response models than on the request itself, and `post`
        rebuilds its request options from keyword arguments on every call. The client's
        `request`, given `ChatCompletion` as the type and options copied from a template made
        once, is the call the OpenInference instrumentor sees from `create`; the raw-response
        header keeps the SDK from building response models for us. Where nothing wraps
        `request`, or only OpenInference does, `_PlainCall` and `_TracedCall` stand for it.
        """
        if self.config.instrumentation == "traceloop":
            # Traceloop patches `create` itself, so the call must go through it to be seen;
            # the raw response still skips building the response models.
            raw = await self.client.chat.completions.with_raw_response.create(**params)
            return orjson.loads(raw.http_response.content)
        timeout = params.pop("timeout")
        options = self._chat_options.model_copy(update={"json_data": params, "timeout": timeout})
        if self._plain_call.usable():
            return orjson.loads(await self._plain_call(options))
        traced = self._traced_call.wrapper()
        if traced is not None:
            raw = await traced(self._traced_call, self.client, (ChatCompletion, options), {})
        else:
            raw = await self.client.request(ChatCompletion, options)
        return orjson.loads(raw.http_response.content)

    async def stream(self, model: ModelConfig, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        params, notes = self._params(model, request)
        params["stream"] = True
        if self._stream_usage:
            params["stream_options"] = {"include_usage": True}
        try:
            chunks = await self._post_stream(params)
        except openai.OpenAIError as exc:
            if "stream_options" not in params or not _refuses_stream_options(exc):
                raise self._map_error(exc, model) from None
            # The server predates `stream_options`: ask again without it (and never again).
            self._stream_usage = False
            del params["stream_options"]
            notes.append("stream_options dropped: the server refuses it, so usage may be estimated")
            try:
                chunks = await self._post_stream(params)
            except openai.OpenAIError as retry_exc:
                raise self._map_error(retry_exc, model) from None

        answered_model = model.model
        finish: str | None = None
        usage: Usage | None = None
        text_parts: list[str] = []
        # Tool calls arrive as fragments keyed by index; they are yielded whole.
        pending: dict[int, dict[str, str]] = {}
        as_dict = _model_dict if self.config.instrumentation == "traceloop" else _chunk_dict
        try:
            async with chunks:
                iterator = aiter(chunks)
                while True:
                    if finish is None:  # no bound of its own (the stream's limits apply)
                        try:
                            chunk = await anext(iterator)
                        except StopAsyncIteration:
                            break
                    elif (chunk := await _next_chunk(iterator, _patience(finish, usage))) is None:
                        break
                    data = as_dict(chunk)
                    if (answered := data.get("model")) and isinstance(answered, str):
                        answered_model = answered
                    reported = data.get("usage")
                    if isinstance(reported, dict):
                        usage = Usage.of(
                            int(reported.get("prompt_tokens") or 0),
                            int(reported.get("completion_tokens") or 0),
                        )
                    for choice in data.get("choices") or ():
                        if not isinstance(choice, dict):
                            continue
                        delta = choice.get("delta")
                        if isinstance(delta, dict):
                            if text := delta.get("content"):
                                text_parts.append(text)
                                yield TextDelta(text=text)
                            for fragment in delta.get("tool_calls") or ():
                                if isinstance(fragment, dict):
                                    _add_fragment(pending, fragment)
                        if reason := choice.get("finish_reason"):
                            finish = reason
                # Read to its end, a traced stream has ended its span: its accumulator goes
                # before leaving `async with`, whose exit would work the output out again.
                settle_stream(chunks)
        except openai.OpenAIError as exc:
            raise self._map_error(exc, model) from None
        finally:
            settle_stream(chunks)

        for index in sorted(pending):
            slot = pending[index]
            yield ToolCallDelta(
                index=index,
                tool_call=ToolCall(
                    id=slot["id"] or f"call_{index}",
                    function=FunctionCall(name=slot["name"], arguments=slot["arguments"] or "{}"),
                ),
            )
        if usage is None:
            usage = Usage.of(
                estimate_input_tokens(request.messages, request.tools),
                estimate_tokens("".join(text_parts)),
                estimated=True,
            )
        yield StreamFinish(
            finish_reason=_FINISH.get(finish or "stop", "stop"),
            usage=usage,
            model=answered_model,
            truncated=finish is None,
            notes=notes,
        )

    async def _post_stream(self, params: dict[str, Any]) -> Any:
        """POST /chat/completions with `stream`, answering the stream of its chunks.

        As `_post_chat` for a completion: the client's `request` is the call its OpenInference
        instrumentor sees from `create`, without `create`'s transforming of the parameters. Its
        stream class here leaves each chunk as parsed JSON (`_ChunkStream`), where the SDK's own
        builds a pydantic model of every chunk. Traceloop wraps `create` and reads the models
        of the chunks it yields, so for it the call goes through `create`. Where nothing wraps
        `request`, or only OpenInference does, `_PlainCall` and `_TracedCall` stand for it.
        """
        if self.config.instrumentation == "traceloop":
            return await self.client.chat.completions.create(**params)
        params = dict(params)
        timeout = params.pop("timeout")
        options = self._stream_options.model_copy(update={"json_data": params, "timeout": timeout})
        if self._plain_call.usable():
            return await self._plain_call.stream(options)
        traced = self._traced_call.wrapper()
        how = {"stream": True, "stream_cls": _ChunkStream}
        if traced is not None:
            chunks = await traced(self._traced_call, self.client, (ChatCompletion, options), how)
        else:
            chunks = await self.client.request(ChatCompletion, options, **how)
        _validated_output(chunks)
        return chunks

    async def aclose(self) -> None:
        await self.client.close()

    def _map_error(self, exc: openai.OpenAIError, model: ModelConfig) -> ProviderError:
        return map_openai_error(exc, provider=self.name, model=model.model)


def _validating(process: Callable[..., Any]) -> Callable[..., Any]:
    """The client's response parsing, through pydantic-core's validation where the data fits.

    The SDK builds its response models with `construct_type`, a pure-Python walk of the model's
    fields: ~220 µs for a small chat completion here, against ~10 µs to validate the same data.
    The OpenInference instrumentor parses every response it records (the raw responses the
    adapter reads with orjson too), and the SDK's streams parse every chunk, so this is paid per
    call. Data that does not validate, from a server only loosely OpenAI-compatible, takes the
    SDK's own lenient path, as before.
    """

    def process_response_data(*, data: object, cast_to: Any, response: Any) -> Any:
        if (
            type(data) is dict
            and isinstance(cast_to, type)
            and issubclass(cast_to, openai.BaseModel)
            and not hasattr(cast_to, "build")  # the SDK's own builder protocol: its call
        ):
            try:
                return cast_to.model_validate(data)
            except pydantic.ValidationError:
                pass
        return process(data=data, cast_to=cast_to, response=response)

    return process_response_data


def _validated_output(stream: Any) -> None:
    """Where OpenInference's stream wrapper will rebuild the whole answer as a `ChatCompletion`
    (its accumulator, when the stream ends), let it be built by validation (`StreamedAnswer`),
    and let the chunks it reads leave out what it already holds (`held_values`). Another
    layout of the wrapper, or no instrumentor, is left as it is."""
    accumulator = getattr(stream, "_self_response_accumulator", None)
    if getattr(accumulator, "_chat_completion_type", None) is ChatCompletion:
        accumulator._chat_completion_type = StreamedAnswer  # type: ignore[union-attr]
        inner = getattr(stream, "__wrapped__", None)
        if type(inner) is _ChunkStream:
            inner._held = held_values(accumulator)
            if inner._held is not None:
                take_text_directly(accumulator)


def _memoised_urls(merge: Callable[[Any], Any], owner: Any) -> Callable[[Any], Any]:
    """A client's URL merging, remembered per URL string.

    The SDK parses the path it is given and joins it to its base URL on every call, then the
    HTTP client parses the joined URL again: ~7 % of a request's CPU for the same few URLs.
    httpx URLs are immutable, so one can be shared; a changed base URL clears what was kept.
    """
    cache: dict[str, Any] = {}
    base = owner.base_url

    def merged(url: Any) -> Any:
        nonlocal base
        if not isinstance(url, str):
            return merge(url)
        if owner.base_url is not base:
            cache.clear()
            base = owner.base_url
        hit = cache.get(url)
        if hit is None:
            hit = merge(url)
            if len(cache) < 64:  # a provider calls a handful of paths: never grow past that
                cache[url] = hit
        return hit

    return merged


def _direct_send(client: openai.AsyncOpenAI) -> Callable[..., Any]:
    """The client's `_send_request`, straight to its HTTP client when that is all it does.

    `AsyncOpenAI._send_request` goes through two functions of the SDK's and a retry wrapper
    that act only for workload-identity auth (a token per request, one retry on 401) or a
    provider runtime (a response normaliser); with neither, what is left is the base client's
    `self._client.send(...)`. Four coroutines a call fewer. Either of them set, or an
    attribute renamed, and the call takes the SDK's own path. On the SDK's aiohttp transport a
    call, whole or streamed, skips the HTTP client's layers too (`providers/aiohttp_send.py`).
    """
    sdk_send = client._send_request
    pool = getattr(client, "_client", None)
    direct = AiohttpSend(pool) if isinstance(pool, httpx2.AsyncClient) else None

    async def send_request(request: httpx2.Request, *, stream: bool, **kwargs: Any) -> Any:
        if (
            getattr(client, "_workload_identity_auth", True) is None
            and getattr(client, "_provider_runtime", True) is None
        ):
            if direct is not None and client._client is pool:
                transport = direct.transport_for(request, kwargs)
                if transport is not None:
                    return await direct.send(
                        request, transport, kwargs.get("follow_redirects"), stream=stream
                    )
            return await client._client.send(request, stream=stream, **kwargs)
        return await sdk_send(request, stream=stream, **kwargs)

    return send_request


class _PlainCall:
    """The adapter's `AsyncOpenAI.request` calls (a raw response, or a stream read by
    `_ChunkStream`), where nothing watches or changes them.

    With no retries, hooks that are idle and the raw response or a stream asked for, what the
    client's `request` does around building and sending the request is bookkeeping: copying its
    options twice, a retry loop that runs once, an auth property that imports its
    implementation, debug logging, and wrapping the response (for a caller who reads its bytes,
    or, through a response object and its parse, in the stream class). Here the request is
    built and sent by the client's own methods and its errors raised as `request` raises them:
    a timeout as `APITimeoutError`, a failed connection as `APIConnectionError` (each from the
    httpx error), a status outside 2xx as the client's status error for it.

    Only where `request` is the SDK's own, unwrapped (an instrumentor patches it to record the
    call: then it runs, and records it), on a plain `AsyncOpenAI` with idle hooks, once the
    client knows its platform (the first call finds it out), and while the SDK's debug log is
    off. Otherwise the call goes through `request`.
    """

    __slots__ = ("_client",)

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self._client = client

    def usable(self) -> bool:
        """Whether this call may stand for `request`: the SDK's own, on a plain client."""
        # not patched, here or on the base
        return openai.AsyncOpenAI.request is _SDK_REQUEST and self.plain_client()

    def plain_client(self) -> bool:
        """Whether the client is one whose `request`, unwrapped, does only what this call does."""
        client = self._client
        return (
            type(client) is openai.AsyncOpenAI
            and "request" not in vars(client)
            and client._platform is not None
            and not getattr(client, "_idempotency_header", True)  # else `request` makes a key
            and getattr(client, "_provider_runtime", True) is None
            and getattr(client, "_api_key_provider", True) is None
            and getattr(client, "workload_identity", True) is None
            and getattr(client, "_workload_identity_auth", True) is None
            and not _SDK_LOG.isEnabledFor(logging.DEBUG)
        )

    async def __call__(self, options: FinalRequestOptions) -> bytes:
        return (await self.response(options)).content

    async def stream(self, options: FinalRequestOptions) -> _ChunkStream:
        """What `request(ChatCompletion, options, stream=True, stream_cls=_ChunkStream)` answers:
        the stream class around the response, its body not yet read."""
        return _ChunkStream(
            cast_to=ChatCompletionChunk,
            response=await self.response(options, stream=True),
            client=self._client,
            options=options,
        )

    async def response(
        self, options: FinalRequestOptions, *, stream: bool = False
    ) -> httpx2.Response:
        """The response to a call with these options, read unless `stream`; errors as `request`
        raises them (the body of a streamed error read first, as `request` reads it)."""
        client = self._client
        request = client._build_request(options, retries_taken=0)
        try:
            response = await client._send_request(request, stream=stream)
        except timeout_exceptions() as err:
            raise openai.APITimeoutError(request=request) from err
        except openai.OpenAIError:
            raise
        except request_exceptions() as err:
            raise openai.APIConnectionError(request=request) from err
        if not response.is_success:  # what `raise_for_status` raises for
            if not response.is_closed:
                await response.aread()
            raise client._make_status_error_from_response(response) from None
        return response


class _TracedCall:
    """The adapter's calls through OpenInference's wrapper of `AsyncOpenAI.request`, with
    `_PlainCall` standing for the SDK's `request` inside it.

    Traced, the instrumentor's wrapper records the call around the SDK's `request`, whose own
    pipeline (options copied twice, a retry loop run once, debug logging, the response wrapped)
    is as idle as `_PlainCall` finds it. wrapt calls a wrapper as `wrapper(wrapped, instance,
    args, kwargs)`; here the wrapper is called that way with this object as `wrapped`, so it
    sees the same client, arguments and keyword arguments, records the same span, and gets
    what `request` answers: to a raw-response call a `LegacyAPIResponse` (`_RawCompletion`),
    which it parses to read the output attributes from; to a streamed one the `_ChunkStream`,
    which it wraps to read the chunks as they pass.

    Only where `AsyncOpenAI.request` is a single wrapt `FunctionWrapper` of the SDK's own
    `request`, with no `enabled` switch, whose wrapper is OpenInference's `_AsyncRequest`
    (`_openinference_wrapper`), and where `_PlainCall` finds the client plain. Anything else
    (another instrumentor, two wrappers, the SDK patched) goes through `request`.
    """

    __slots__ = ("_plain", "_seen", "_wrapper")

    def __init__(self, plain: _PlainCall) -> None:
        self._plain = plain
        self._seen: Any = _UNSEEN  # `AsyncOpenAI.request` as last looked at
        self._wrapper: Callable[..., Any] | None = None  # OpenInference's wrapper in it, if so

    def wrapper(self) -> Callable[..., Any] | None:
        """The instrumentor's wrapper to call with this object as `wrapped`, or None when the
        call must go through the client's `request`. Its shape is worked out once per
        `request` found on the class (so again after the instrumentor is removed)."""
        found = vars(openai.AsyncOpenAI).get("request")
        if found is not self._seen:
            self._wrapper = _openinference_wrapper(found)
            self._seen = found
        if self._wrapper is None or AsyncAPIClient.request is not _SDK_REQUEST:
            return None
        return self._wrapper if self._plain.plain_client() else None

    async def __call__(
        self,
        cast_to: type[ChatCompletion],
        options: FinalRequestOptions,
        *,
        stream: bool = False,
        stream_cls: type[_ChunkStream] | None = None,
    ) -> Any:
        """What the SDK's `request` answers for the two calls the adapter makes: a raw-response
        call (`_RawCompletion`), and a stream read by `_ChunkStream`."""
        if stream:
            if stream_cls is not _ChunkStream:  # pragma: no cover - the adapter passes no other
                raise TypeError(f"no stream of class {stream_cls!r} here")
            return await self._plain.stream(options)
        return _RawCompletion(
            raw=await self._plain.response(options),
            cast_to=cast_to,
            client=self._plain._client,
            stream=False,
            stream_cls=None,
            options=options,
        )


def _openinference_wrapper(found: Any) -> Callable[..., Any] | None:
    """OpenInference's `_AsyncRequest` when `found` (what `AsyncOpenAI` holds as `request`) is a
    wrapt `FunctionWrapper` of the SDK's own `request` around it and nothing else, else None.

    wrapt binds such a wrapper to the client it is read from and calls it as `wrapper(bound
    request, client, args, kwargs)`: with no `enabled` switch, for a plain function
    (`binding` "function"), read from an instance. Neither module is imported here: a wrapper
    of theirs means they are loaded."""
    wrapt = sys.modules.get("wrapt")
    oi_request = sys.modules.get("openinference.instrumentation.openai._request")
    oi_wrapper_class = getattr(oi_request, "_AsyncRequest", None)
    if (
        not _RAW_RESPONSE_AS_KNOWN
        or wrapt is None
        or oi_wrapper_class is None
        or type(found) is not wrapt.FunctionWrapper
    ):
        return None
    try:
        wrapper = found._self_wrapper
        if (
            found.__wrapped__ is not _SDK_REQUEST
            or type(wrapper) is not oi_wrapper_class
            or found._self_enabled is not None
            or found._self_binding != "function"
            or found._self_instance is not None
            or not inspect.iscoroutinefunction(type(wrapper).__call__)
        ):
            return None
    except AttributeError:  # another release of wrapt, laid out otherwise
        return None
    return wrapper


class _RawCompletion(LegacyAPIResponse[ChatCompletion]):
    """The SDK's raw response to a chat completion, parsed by validating its bytes.

    The SDK parses a raw response's body with the standard library's `json` into a dict and
    hands it to the client's `_process_response_data` (for this adapter: `_validating`, which
    validates the dict). Validating the JSON bytes with pydantic-core gives the same model in
    about half the time; a body it refuses (a lone surrogate, say) takes the SDK's way, as
    does any other type asked for.
    """

    def _parse(self, *, to: Any = None) -> Any:
        if to is None and self._cast_to is ChatCompletion and not self._stream:
            try:
                return ChatCompletion.model_validate_json(self.http_response.content)
            except pydantic.ValidationError:
                pass
        return super()._parse(to=to)


def _raw_response_as_known() -> bool:
    """Whether `LegacyAPIResponse` is built, parsed and read as `_RawCompletion` and
    `_TracedCall` use it: the keyword arguments the SDK's client passes it (any other with a
    default), a `_parse(to=...)` to stand in for (were `parse` to stop calling it, parsing would
    only be slower), and the attributes read. Another release laid out otherwise leaves the
    traced call to the SDK's `request`."""
    try:
        built = inspect.signature(LegacyAPIResponse.__init__).parameters
        parsed = inspect.signature(LegacyAPIResponse._parse).parameters
    except (AttributeError, TypeError, ValueError):  # pragma: no cover
        return False
    known = {"self", "raw", "cast_to", "client", "stream", "stream_cls", "options"}
    annotations = getattr(LegacyAPIResponse, "__annotations__", {})
    return (
        built.keys() >= known
        and all(
            p.default is not inspect.Parameter.empty for n, p in built.items() if n not in known
        )
        and "to" in parsed
        and {"_cast_to", "_stream", "http_response"} <= annotations.keys()
    )


_RAW_RESPONSE_AS_KNOWN = _raw_response_as_known()


_SDK_LOG = logging.getLogger("openai._base_client")
# The client's `request` as the SDK defines it (a wrapper, e.g. an instrumentor's, is none).
_SDK_REQUEST = AsyncAPIClient.request
if hasattr(_SDK_REQUEST, "__wrapped__"):  # pragma: no cover - patched before this import
    _SDK_REQUEST = None


def _skip_idle_hooks(client: openai.AsyncOpenAI) -> None:
    """The client's per-call hooks `_prepare_options` and `_prepare_request`, skipped while they
    have nothing to do.

    `AsyncOpenAI`'s act only for a provider runtime, an API key given as a function, or workload
    identity, and otherwise end in the base client's, which return the options as given and do
    nothing; each imports its implementation on every call on the way. With none of those set
    (checked per call, as they are) the hooks are not called; a subclass with hooks of its own
    (Azure's), or an attribute renamed, keeps the SDK's.
    """
    cls = type(client)
    if (
        cls._prepare_options is not openai.AsyncOpenAI._prepare_options
        or cls._prepare_request is not openai.AsyncOpenAI._prepare_request
    ):
        return
    sdk_options = client._prepare_options
    sdk_request = client._prepare_request

    def idle() -> bool:
        return (
            getattr(client, "_provider_runtime", True) is None
            and getattr(client, "_api_key_provider", True) is None
            and getattr(client, "workload_identity", True) is None
        )

    async def prepare_options(options: FinalRequestOptions) -> FinalRequestOptions:
        if idle():
            return options
        return await sdk_options(options)

    async def prepare_request(request: httpx2.Request) -> None:
        if idle():
            return
        await sdk_request(request)

    client._prepare_options = prepare_options  # type: ignore[method-assign]
    client._prepare_request = prepare_request  # type: ignore[method-assign]


_UNSEEN = object()


class _PrebuiltRequests:
    """The client's `_build_request`, with everything but the body built once per kind of call.

    For a JSON POST the SDK merges its auth, default and per-call headers into an httpx `Headers`,
    serialises the body with the standard library, and hands the lot to httpx, which merges its
    own headers, parses and copies them twice more and works out their encoding: about a third
    of the SDK's own work on a call, and the same result every time for a given path, per-call
    headers and timeout. Here the SDK builds the first request of each kind itself (twice: a
    header it makes differently per call, or a request this class would not reproduce exactly,
    leaves that kind to the SDK for good), and later ones reuse its method, URL, headers and
    extensions around a body serialised by orjson. The client state the SDK reads its headers
    from (key, organization, project, platform, base URL, timeout) is part of the key, so a
    change builds anew; cookies the HTTP client holds are added per request, as httpx does.
    Anything else (files, query parameters, raw content, a body that is not a plain dict)
    goes through the SDK's own method.
    """

    __slots__ = ("_build", "_client", "_kinds")

    LIMIT = 64  # kinds of call kept: a provider makes a handful (paths, timeouts, headers)

    @staticmethod
    def fits(client: Any) -> bool:
        """For a client whose class builds requests as the SDK's base client does: a subclass
        that builds its own (Azure's reads the deployment from the body) keeps its method."""
        base = getattr(BaseClient, "_build_request", None)
        return base is not None and getattr(type(client), "_build_request", None) is base

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self._build = client._build_request
        self._client = client
        self._kinds: dict[Any, Any] = {}

    def __call__(self, options: FinalRequestOptions, *, retries_taken: int = 0) -> Any:
        json_data = options.json_data
        if (
            type(json_data) is not dict
            or options.extra_json is not None
            or options.files is not None
            or options.content is not None
            or options.params
        ):
            return self._build(options, retries_taken=retries_taken)
        client = self._client
        headers = options.headers
        try:
            if client._idempotency_header:  # a header with a key made per call
                return self._build(options, retries_taken=retries_taken)
            key = (
                options.method,
                options.url,
                tuple(headers.items()) if type(headers) is dict else headers,
                options.timeout,
                retries_taken,
                tuple(options.security.items()),
                client.api_key,
                client.organization,
                client.project,
                client._platform,
                # by identity (hashing a URL renders it): the kind keeps the URL alive, so
                # its id is not reused while the kind is kept
                id(client._base_url),
                # the client's timeout counts only when the call gives none (an httpx Timeout
                # is unhashable: such a call takes the SDK's way)
                client.timeout if isinstance(options.timeout, NotGiven) else None,
            )
            kind = self._kinds.get(key, _UNSEEN)
        except (AttributeError, TypeError):  # an unhashable part, or a renamed attribute
            return self._build(options, retries_taken=retries_taken)
        if kind is None:
            return self._build(options, retries_taken=retries_taken)
        if kind is _UNSEEN:
            return self._learn(key, options, retries_taken)
        try:
            body = orjson.dumps(json_data)
        except TypeError:  # what orjson cannot write (a huge int, a custom type): the SDK's way
            return self._build(options, retries_taken=retries_taken)
        return _from_kind(kind, body, client._client)

    def _learn(self, key: Any, options: FinalRequestOptions, retries_taken: int) -> Any:
        request = self._build(options, retries_taken=retries_taken)
        if len(self._kinds) >= self.LIMIT:
            self._kinds.clear()
        kind = None
        pool = self._client._client
        if not pool.cookies:  # a Cookie header is per request: learn from a request without
            again = self._build(options, retries_taken=retries_taken)
            if _same_request(request, again):
                kind = (*_kind_of(request), self._client._base_url)
                try:
                    rebuilt = _from_kind(kind, orjson.dumps(options.json_data), pool)
                except TypeError:
                    rebuilt = None
                if rebuilt is None or not _same_request(request, rebuilt):
                    kind = None
        self._kinds[key] = kind
        return request


def _kind_of(request: httpx2.Request) -> tuple[Any, ...]:
    """What `_from_kind` needs to build a request like `request` around another body."""
    headers = httpx2.Headers(request.headers)
    headers.pop("Content-Length", None)
    extensions = {k: dict(v) if type(v) is dict else v for k, v in request.extensions.items()}
    return (request.method, request.url, headers, request.headers.encoding, extensions)


def _from_kind(kind: tuple[Any, ...], body: bytes, pool: Any) -> httpx2.Request:
    """A request as httpx builds it from `content=body` (same headers, in the same order)."""
    method, url, headers, encoding, extensions = kind[:5]
    request = httpx2.Request(
        method,
        url,
        headers=headers,
        stream=httpx2.ByteStream(body),
        extensions={k: dict(v) if type(v) is dict else v for k, v in extensions.items()},
    )
    request.headers.encoding = encoding
    cookies = pool.cookies
    if cookies:
        cookies.set_cookie_header(request)
    request.headers["Content-Length"] = str(len(body))
    request.read()
    return request


def _same_request(one: httpx2.Request, other: httpx2.Request) -> bool:
    """Same method, URL, headers (in order), extensions and body as JSON."""
    if (
        one.method != other.method
        or one.url != other.url
        or one.headers.multi_items() != other.headers.multi_items()
        or one.extensions != other.extensions
        or type(one.stream) is not type(other.stream)
    ):
        return False
    try:
        return parse_json(one.content) == parse_json(other.content)
    except ValueError:
        return one.content == other.content


def _patience(finish: str | None, usage: Usage | None) -> float | None:
    """How long the next chunk may take: unbounded until the finish reason (the stream's own
    first-token and idle limits apply), then AFTER_FINISH_S, and AFTER_USAGE_S once the usage
    is in."""
    if finish is None:
        return None
    return AFTER_FINISH_S if usage is None else AFTER_USAGE_S


async def _next_chunk(iterator: AsyncIterator[Any], within: float | None) -> Any | None:
    """The next chunk, or None at the end or when it did not come `within` seconds. A chunk
    already at hand (the usage chunk is read with the finish) is taken without a timer."""
    try:
        if within is None:
            return await anext(iterator)
        chunk, step, pending = first_step(iterator)
        if chunk is not WAITING:
            return chunk
        async with asyncio.timeout(within):
            return await Resumed(step, pending)
    except (StopAsyncIteration, TimeoutError):
        return None


async def _drain(raw: AsyncIterator[bytes]) -> None:
    """Read the rest of a body to its end, for at most DRAIN_S, so that its connection can go back
    to the pool. As the SDK's `drain_response_async`, without its anyio cancel scopes and a
    checkpoint per read: only a wait for the network is timed, and what is at hand is read
    until the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_S
    try:
        while loop.time() < deadline:
            data, step, pending = first_step(raw)
            if data is WAITING:
                async with asyncio.timeout_at(deadline):
                    await Resumed(step, pending)
    except (StopAsyncIteration, TimeoutError):  # the end (as nearly always), or not in time
        pass
    except (*request_exceptions(), *stream_consumed_exceptions()):
        pass  # the answer is complete: what its body's end does cannot fail it


class _TolerantSSEDecoder(SSEDecoder):
    """The SDK's SSE decoder, dropping an event whose data is not JSON instead of failing."""

    def decode(self, line: str) -> ServerSentEvent | None:
        event = super().decode(line)
        if event is None or event.data.startswith("[DONE]"):
            return event
        try:
            json.loads(event.data)
        except ValueError:
            log.warning("skipped a malformed stream chunk (%d bytes)", len(event.data))
            return None
        return event


def _chunk_dict(chunk: Chunk) -> dict[str, Any]:
    return chunk.data


def _model_dict(chunk: Any) -> dict[str, Any]:
    """A chunk model of the SDK's own stream (the Traceloop path) as the JSON it was built from."""
    return chunk.model_dump(exclude_unset=True)


class _ChunkStream(AsyncStream[ChatCompletionChunk]):
    """The SDK's stream of a chat completion, yielding each chunk as parsed JSON (`Chunk`).

    The SDK's own stream decodes each SSE line in Python and builds a pydantic model of every
    chunk, which costs more than the rest of the stream's handling together. This one splits the
    body into events itself (`_SSEEvents`) and parses their data with orjson; like the SDK's it
    ends at `[DONE]`, raises `APIError` on a chunk that carries an error, and raises the SDK's
    timeout and connection errors. A chunk that is not a JSON object is skipped (the SDK's
    decoder would end the stream), as `_TolerantSSEDecoder` does for the SDK's stream.
    """

    # What OpenInference's accumulator holds, where it reads this stream's chunks (`held_values`).
    _held: dict[str, Any] | None = None

    def __aiter__(self) -> Any:  # the SDK's adds a generator around `__anext__` for nothing
        return self

    def __anext__(self) -> Any:  # the SDK's awaits this in a coroutine of its own, per chunk
        return self._iterator.__anext__()  # type: ignore[attr-defined]

    async def close(self) -> None:
        # Closing the generator runs its `finally` now, rather than in a task the event loop
        # starts for each generator left suspended (as one is when the caller stops at usage).
        await self._iterator.aclose()  # type: ignore[attr-defined]
        await self.response.aclose()

    async def __stream__(self) -> AsyncIterator[Any]:  # type: ignore[override]
        response = self.response
        events = _SSEEvents()
        raw = body_of(response)
        try:
            while True:
                try:
                    received = await anext(raw, None)
                except timeout_exceptions() as err:
                    raise openai.APITimeoutError(request=response.request) from err
                except request_exceptions() as err:
                    raise openai.APIConnectionError(request=response.request) from err
                for event, data in events.feed(received) if received is not None else events.end():
                    if data.startswith(b"[DONE]"):
                        if response.http_version == "HTTP/1.1":  # read to the end: reusable
                            await _drain(raw)
                        return
                    if event is not None and event.startswith("thread."):
                        continue  # an Assistants event: none belongs to a chat completion
                    try:
                        parsed = parse_json(data)
                    except ValueError:
                        parsed = None
                    if not isinstance(parsed, dict):
                        log.warning("skipped a malformed stream chunk (%d bytes)", len(data))
                        continue
                    if parsed.get("error"):
                        error = parsed["error"]
                        message = error.get("message") if isinstance(error, dict) else None
                        if not message or not isinstance(message, str):
                            message = "An error occurred during streaming"
                        raise openai.APIError(message, response.request, body=error)
                    yield Chunk(parsed, data, self._held)
                if received is None:
                    return
        finally:
            await raw.aclose()
            await response.aclose()


class _SSEEvents:
    """Server-sent events from a byte stream, as the SDK's decoder reads them: lines end with
    CR, LF or CRLF; a blank line ends an event; its `data:` lines are joined by newlines;
    comments and other fields are ignored. What an event carries: its name and its data."""

    __slots__ = ("_data", "_event", "_partial")

    def __init__(self) -> None:
        self._partial = b""  # the start of a line not yet ended
        self._data: list[bytes] = []
        self._event: str | None = None

    def feed(self, received: bytes) -> list[tuple[str | None, bytes]]:
        buffer = self._partial + received if self._partial else received
        if b"\r" in buffer:
            held = b""
            if buffer.endswith(b"\r"):  # its LF may be the next read's first byte
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held
        lines = buffer.split(b"\n")
        self._partial = lines.pop()
        events: list[tuple[str | None, bytes]] = []
        for line in lines:
            if not line:
                if self._data or self._event:
                    events.append((self._event or None, b"\n".join(self._data)))
                    self._data = []
                    self._event = None
                continue
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field == b"data":
                self._data.append(value)
            elif field == b"event":
                self._event = value.decode("utf-8", "replace")
        return events

    def end(self) -> list[tuple[str | None, bytes]]:
        """What the end of the body completes: a last line ended by a lone CR."""
        return self.feed(b"\n") if self._partial.endswith(b"\r") else []


def map_openai_error(exc: openai.OpenAIError, *, provider: str, model: str) -> ProviderError:
    """Classify an `openai` SDK exception. Shared by the OpenAI and Azure OpenAI adapters."""

    def make(kind: ErrorKind, message: str, **kw: Any) -> ProviderError:
        return ProviderError(kind, message, provider=provider, model=model, **kw)

    if isinstance(exc, openai.APITimeoutError) and not _dropped_connection(exc):
        return make(ErrorKind.TIMEOUT, "the provider did not answer in time")
    if isinstance(exc, openai.APITimeoutError):
        return make(ErrorKind.SERVER_ERROR, "the provider closed the connection")
    if isinstance(exc, openai.APIConnectionError):
        return make(ErrorKind.SERVER_ERROR, "could not connect to the provider")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _error_detail(exc)
        code = str(detail.get("code") or "")
        text = str(detail.get("message") or f"the provider answered {status}")
        if status == 429:
            headers = exc.response.headers
            retry_after = parse_retry_after(headers.get("retry-after"))
            if retry_after is None and headers.get("retry-after-ms") is not None:
                ms = parse_retry_after(headers.get("retry-after-ms"))
                retry_after = ms / 1000 if ms is not None else None
            return make(ErrorKind.RATE_LIMITED, text, status=status, retry_after=retry_after)
        if status in (401, 403):
            # Never echo the provider's text: it may quote part of the key.
            return make(
                ErrorKind.AUTHENTICATION,
                "the provider rejected the configured credentials",
                status=status,
            )
        if status == 404:
            return make(ErrorKind.NOT_FOUND, text, status=status)
        if status == 408:
            return make(ErrorKind.TIMEOUT, text, status=status)
        if status >= 500:
            return make(ErrorKind.SERVER_ERROR, text, status=status)
        if code == "context_length_exceeded" or "context length" in text.lower():
            return make(ErrorKind.CONTEXT_LENGTH, text, status=status)
        if code in ("content_filter", "content_policy_violation"):
            return make(ErrorKind.CONTENT_FILTERED, text, status=status)
        return make(ErrorKind.BAD_REQUEST, text, status=status)
    if isinstance(exc, openai.APIResponseValidationError):
        return make(ErrorKind.SERVER_ERROR, "the provider sent a response that could not be read")
    return make(ErrorKind.SERVER_ERROR, "the provider call failed")


def _add_fragment(pending: dict[int, dict[str, str]], fragment: dict[str, Any]) -> None:
    """Add a streamed tool-call fragment to the call it belongs to."""
    slot = pending.setdefault(
        _fragment_index(fragment, pending), {"id": "", "name": "", "arguments": ""}
    )
    if call_id := fragment.get("id"):
        slot["id"] = call_id
    function = fragment.get("function")
    if isinstance(function, dict):
        slot["name"] += function.get("name") or ""
        slot["arguments"] += function.get("arguments") or ""


def _fragment_index(fragment: dict[str, Any], pending: dict[int, dict[str, str]]) -> int:
    """Which tool call a streamed fragment belongs to. Some servers (Ollama) send each call whole
    and without `index`: a fragment with a new id then starts the next call."""
    index = fragment.get("index")
    if index is not None:
        return int(index)
    if not pending:
        return 0
    last = max(pending)
    call_id = fragment.get("id")
    if call_id and pending[last]["id"] and call_id != pending[last]["id"]:
        return last + 1
    return last


def _error_detail(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner
    return {}


def http_client(transport: str, max_connections: int) -> Any:
    """The SDK's HTTP client on the chosen transport, pooled to `max_connections`."""
    limits = httpx2.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    if transport == "aiohttp":
        try:
            return openai.DefaultAioHttpClient(limits=limits)
        except RuntimeError:  # the aiohttp extra is not installed
            pass
    return openai.DefaultAsyncHttpxClient(limits=limits)


def _dropped_connection(exc: BaseException) -> bool:
    """True when a "timeout" is really a dropped connection.

    The SDK's aiohttp transport reports every aiohttp connection error, a reset or a server
    closing the socket included, as a connect timeout; the cause chain still tells them apart.
    """
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, TimeoutError):
            return False
        if aiohttp is not None and isinstance(cause, aiohttp.ClientConnectionError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
