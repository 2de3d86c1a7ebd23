"""One scripting interface over every provider fake, so that a test can say "answer this",
"call this tool" or "fail with that error class" once and run it against each provider type.

A `Driver` owns one fake (served on its own port), the YAML that points a gateway provider entry
at it, and the provider's wire shapes: what each error class looks like on that provider's wire,
and where a tool call and its result sit in that provider's request body.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, ClassVar

from app.errors import ErrorKind
from tests.fakes import anthropic_fake, bedrock_fake, gemini_fake, openai_fake
from tests.fakes.azure_openai_fake import AzureOpenAIFake
from tests.fakes.local_server_fake import LocalServerFake
from tests.fakes.server import serve_app

# What an upstream can answer; budget_exceeded is the gateway's own refusal, never a provider's.
UPSTREAM_ERRORS = frozenset(ErrorKind) - {ErrorKind.BUDGET_EXCEEDED}

RETRY_AFTER_S = 7  # what every scripted 429 asks the caller to wait


@dataclass(frozen=True)
class ToolExchange:
    """A tool call and its result as the provider saw them in the conversation it was sent."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    result_id: str
    result: str


class Driver(ABC):
    type: ClassVar[str]  # the provider `type:` in router.yaml
    name: ClassVar[str]  # the provider entry, which is also the model alias's name
    model: ClassVar[str]  # the model id in the alias (Azure: the model behind the deployment)
    price: ClassVar[tuple[float, float]]  # USD per million tokens the alias is billed at
    key: ClassVar[str]  # the credential the fake expects; it must never reach a caller
    filtered_finish: ClassVar[str | None]  # wire value of a content-filter finish, if any
    stream_usage: ClassVar[bool] = True  # whether a stream reports usage
    errors: ClassVar[frozenset[ErrorKind]]  # the error classes this provider has on its wire

    url: str

    def start(self, stack: ExitStack) -> Driver:
        self.url = stack.enter_context(serve_app(self.fake.app))
        return self

    @property
    @abstractmethod
    def fake(self) -> Any: ...

    @abstractmethod
    def provider_yaml(self) -> str:
        """The flow mapping of this provider's entry under `providers:`."""

    def model_yaml(self, **extra: Any) -> str:
        fields = {"provider": self.name, "model": self.model, **extra}
        return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in fields.items()) + "}"

    @abstractmethod
    def reset(self) -> None: ...

    @property
    @abstractmethod
    def calls(self) -> int:
        """How many requests the fake has received."""

    @property
    @abstractmethod
    def last_body(self) -> dict[str, Any]: ...

    @abstractmethod
    def answer(self, text: str, usage: tuple[int, int], *, stream: bool) -> None: ...

    @abstractmethod
    def tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None: ...

    @abstractmethod
    def filtered(self, *, stream: bool) -> None:
        """An answer the provider's safety system cut off (finish, not error)."""

    @abstractmethod
    def fail(self, kind: ErrorKind) -> None:
        """Queue this error class, in this provider's wire shape."""

    @abstractmethod
    def hang(self, seconds: float) -> None:
        """Queue an answer that comes only after `seconds`."""

    @abstractmethod
    def tool_exchange(self) -> ToolExchange:
        """The tool call and result in the last request's conversation, in this provider's shape."""


# ---- the OpenAI wire family -------------------------------------------------------------------


class _OpenAIFamily(Driver):
    filtered_finish = "content_filter"
    content_filter_code = "content_policy_violation"
    _fake: openai_fake.OpenAIFake

    @property
    def fake(self) -> openai_fake.OpenAIFake:
        return self._fake

    def reset(self) -> None:
        self._fake.script.clear()
        self._fake.log.clear()

    @property
    def calls(self) -> int:
        return len(self._fake.log)

    @property
    def last_body(self) -> dict[str, Any]:
        return self._fake.log[-1].body

    def answer(self, text: str, usage: tuple[int, int], *, stream: bool) -> None:
        if stream:
            self._fake.push(openai_fake.Stream(chunks=_pieces(text), usage=usage))
        else:
            self._fake.push(openai_fake.Reply(text=text, usage=usage))

    def tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        call = [{"name": name, "arguments": json.dumps(arguments)}]
        if stream:
            self._fake.push(openai_fake.Stream(chunks=[], tool_calls=call, finish="tool_calls"))
        else:
            self._fake.push(openai_fake.Reply(text=None, tool_calls=call, finish="tool_calls"))

    def filtered(self, *, stream: bool) -> None:
        if stream:
            self._fake.push(openai_fake.Stream(chunks=["I can"], finish="content_filter"))
        else:
            self._fake.push(openai_fake.Reply(text="I can", finish="content_filter"))

    def fail(self, kind: ErrorKind) -> None:
        fail = openai_fake.Fail
        scripts = {
            ErrorKind.RATE_LIMITED: fail(
                429,
                "Rate limit reached for requests",
                code="rate_limit_exceeded",
                type="requests",
                headers={"retry-after": str(RETRY_AFTER_S)},
            ),
            ErrorKind.TIMEOUT: fail(408, "Request timed out.", type="timeout"),
            ErrorKind.SERVER_ERROR: fail(500, "The server had an error processing your request."),
            ErrorKind.BAD_REQUEST: fail(
                400, "Invalid value for 'messages[0].role'.", type="invalid_request_error"
            ),
            ErrorKind.AUTHENTICATION: fail(
                401,
                f"Incorrect API key provided: {self.key}.",
                code="invalid_api_key",
                type="invalid_request_error",
            ),
            ErrorKind.CONTEXT_LENGTH: fail(
                400,
                "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 130512 tokens.",
                code="context_length_exceeded",
                type="invalid_request_error",
            ),
            ErrorKind.CONTENT_FILTERED: fail(
                400,
                "The prompt was flagged by the safety system.",
                code=self.content_filter_code,
                type="invalid_request_error",
            ),
            ErrorKind.NOT_FOUND: fail(
                404,
                f"The model `{self.model}` does not exist or you do not have access to it.",
                code="model_not_found",
                type="invalid_request_error",
            ),
        }
        self._fake.push(scripts[kind])

    def hang(self, seconds: float) -> None:
        self._fake.push(openai_fake.Hang(seconds))

    def tool_exchange(self) -> ToolExchange:
        messages = self.last_body["messages"]
        call = next(m for m in messages if m.get("tool_calls"))["tool_calls"][0]
        result = next(m for m in messages if m["role"] == "tool")
        return ToolExchange(
            call["id"],
            call["function"]["name"],
            json.loads(call["function"]["arguments"]),
            result["tool_call_id"],
            result["content"],
        )


class OpenAIDriver(_OpenAIFamily):
    type, name, model = "openai", "gpt", "gpt-4o-mini"
    price = (0.15, 0.60)
    key = "sk-openai-test-secret"
    errors = UPSTREAM_ERRORS

    def __init__(self) -> None:
        self._fake = openai_fake.OpenAIFake("openai")

    def provider_yaml(self) -> str:
        return f'{{type: openai, base_url: "{self.url}/v1", api_key: {self.key}}}'


class AzureDriver(_OpenAIFamily):
    """The alias names the model (`gpt-4o`, which prices it) and its `deployment`."""

    type, name, model = "azure_openai", "azure-gpt", "gpt-4o"
    deployment = "chat-prod"
    answered_model = "gpt-4o-2024-11-20"
    price = (2.50, 10.00)
    key = "azure-test-secret-key"
    content_filter_code = "content_filter"
    errors = UPSTREAM_ERRORS

    def __init__(self, api_version: str = "2024-10-21") -> None:
        self.api_version = api_version
        self._fake = AzureOpenAIFake(
            {self.deployment: self.answered_model, "mini-prod": "gpt-4o-mini-2024-07-18"},
            api_key=self.key,
        )

    def provider_yaml(self) -> str:
        return (
            f'{{type: azure_openai, endpoint: "{self.url}", api_key: {self.key}, '
            f'api_version: "{self.api_version}"}}'
        )

    def model_yaml(self, **extra: Any) -> str:
        return super().model_yaml(deployment=self.deployment, **extra)


class LocalDriver(_OpenAIFamily):
    """An OpenAI-compatible self-hosted server (Ollama-like): no key, no stream usage."""

    type, name, model = "openai", "local", "llama3.2:3b"
    price = (0.05, 0.10)  # not in the bundled table: the alias declares it
    key = "ollama"
    stream_usage = False
    errors = frozenset({ErrorKind.SERVER_ERROR, ErrorKind.BAD_REQUEST, ErrorKind.NOT_FOUND})

    def __init__(self, *, refuse_stream_options: bool = False) -> None:
        self._fake = LocalServerFake(refuse_stream_options=refuse_stream_options)

    def provider_yaml(self) -> str:
        return f'{{type: openai, base_url: "{self.url}/v1", api_key: {self.key}}}'

    def model_yaml(self, **extra: Any) -> str:
        return super().model_yaml(input_price=self.price[0], output_price=self.price[1], **extra)


# ---- Anthropic ----------------------------------------------------------------------------------


class AnthropicDriver(Driver):
    type, name, model = "anthropic", "claude", "claude-sonnet-5"
    price = (2.00, 10.00)
    key = "sk-ant-test-secret-0123"
    filtered_finish = "refusal"
    errors = UPSTREAM_ERRORS - {ErrorKind.CONTENT_FILTERED}  # a refusal is a finish

    def __init__(self) -> None:
        self._fake = anthropic_fake.AnthropicFake(api_key=self.key)

    @property
    def fake(self) -> anthropic_fake.AnthropicFake:
        return self._fake

    def provider_yaml(self) -> str:
        return f'{{type: anthropic, base_url: "{self.url}", api_key: {self.key}}}'

    def reset(self) -> None:
        self._fake._script.clear()
        self._fake.requests.clear()

    @property
    def calls(self) -> int:
        return len(self._fake.requests)

    @property
    def last_body(self) -> dict[str, Any]:
        return self._fake.last.body

    def answer(self, text: str, usage: tuple[int, int], *, stream: bool) -> None:
        self._fake.queue(
            anthropic_fake.Reply.answer(text, input_tokens=usage[0], output_tokens=usage[1])
        )

    def tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        self._fake.queue(anthropic_fake.Reply.tool_use(name, arguments, id="toolu_01rt"))

    def filtered(self, *, stream: bool) -> None:
        self._fake.queue(anthropic_fake.Reply.answer("I can", stop_reason="refusal"))

    def fail(self, kind: ErrorKind) -> None:
        fail = anthropic_fake.Reply.fail
        scripts = {
            ErrorKind.RATE_LIMITED: fail(429, "Rate limited", retry_after=RETRY_AFTER_S),
            ErrorKind.TIMEOUT: fail(504, "Request timed out"),
            ErrorKind.SERVER_ERROR: fail(529, "Overloaded"),
            ErrorKind.BAD_REQUEST: fail(400, "messages.0.content: Field required"),
            ErrorKind.AUTHENTICATION: fail(401, f"invalid x-api-key {self.key}"),
            ErrorKind.CONTEXT_LENGTH: fail(400, "prompt is too long: 215000 tokens > 200000"),
            ErrorKind.NOT_FOUND: fail(404, f"model: {self.model}"),
        }
        self._fake.queue(scripts[kind])

    def hang(self, seconds: float) -> None:
        self._fake.queue(anthropic_fake.Reply.answer("late", delay=seconds))

    def tool_exchange(self) -> ToolExchange:
        turns = self.last_body["messages"]
        use = next(b for t in turns if t["role"] == "assistant" for b in t["content"])
        result = next(b for b in turns[-1]["content"] if b["type"] == "tool_result")
        return ToolExchange(
            use["id"], use["name"], use["input"], result["tool_use_id"], result["content"]
        )


# ---- Gemini -------------------------------------------------------------------------------------


class GeminiDriver(Driver):
    type, name, model = "gemini", "gemini", "gemini-2.5-flash"
    price = (0.30, 2.50)
    key = "gemini-test-secret-key"
    filtered_finish = "SAFETY"
    errors = UPSTREAM_ERRORS  # a blocked prompt is an error: promptFeedback.blockReason

    def __init__(self) -> None:
        self._fake = gemini_fake.GeminiFake()

    @property
    def fake(self) -> gemini_fake.GeminiFake:
        return self._fake

    def provider_yaml(self) -> str:
        return f'{{type: gemini, base_url: "{self.url}", api_key: {self.key}}}'

    def reset(self) -> None:
        self._fake.reset()

    @property
    def calls(self) -> int:
        return len(self._fake.requests)

    @property
    def last_body(self) -> dict[str, Any]:
        return self._fake.last["body"]

    def answer(self, text: str, usage: tuple[int, int], *, stream: bool) -> None:
        meta = {
            "promptTokenCount": usage[0],
            "candidatesTokenCount": usage[1],
            "totalTokenCount": sum(usage),
        }
        self._fake.push(gemini_fake.Reply(text=text, usage=meta, model_version=self.model))

    def tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        call = gemini_fake.FunctionCallSpec(name, arguments, id="call_gem01")
        self._fake.push(gemini_fake.Reply(text=None, function_calls=[call]))

    def filtered(self, *, stream: bool) -> None:
        self._fake.push(gemini_fake.Reply(text="I can", finish_reason="SAFETY"))

    def fail(self, kind: ErrorKind) -> None:
        reply = gemini_fake.Reply
        scripts = {
            ErrorKind.RATE_LIMITED: reply(
                status=429,
                error_message="Resource has been exhausted (e.g. check quota).",
                error_details=[gemini_fake.retry_info(f"{RETRY_AFTER_S}s")],
            ),
            ErrorKind.TIMEOUT: reply(status=504, error_message="Deadline expired."),
            ErrorKind.SERVER_ERROR: reply(status=503, error_message="The model is overloaded."),
            ErrorKind.BAD_REQUEST: reply(status=400, error_message="Invalid JSON payload."),
            ErrorKind.AUTHENTICATION: reply(
                status=400,
                error_message=f"API key not valid: {self.key}",
                error_details=[gemini_fake.error_info("API_KEY_INVALID")],
            ),
            ErrorKind.CONTEXT_LENGTH: reply(
                status=400,
                error_message="The input token count (1200000) exceeds the maximum number of "
                "tokens allowed (1048576).",
            ),
            ErrorKind.CONTENT_FILTERED: reply(block_reason="SAFETY"),
            ErrorKind.NOT_FOUND: reply(
                status=404, error_message=f"models/{self.model} is not found for API version"
            ),
        }
        self._fake.push(scripts[kind])

    def hang(self, seconds: float) -> None:
        self._fake.push(gemini_fake.Reply(text="late", delay=seconds))

    def tool_exchange(self) -> ToolExchange:
        contents = self.last_body["contents"]
        call = next(p["functionCall"] for c in contents for p in c["parts"] if "functionCall" in p)
        result = next(
            p["functionResponse"] for c in contents for p in c["parts"] if "functionResponse" in p
        )
        return ToolExchange(
            call["id"], call["name"], call["args"], result["id"], result["response"]["output"]
        )


# ---- Bedrock ------------------------------------------------------------------------------------


class BedrockDriver(Driver):
    type, name, model = "bedrock", "bedrock-claude", "us.anthropic.claude-haiku-4-5-20251001-v1:0"
    price = (1.00, 5.00)
    key = "bedrock-test-secret-access-key"
    access_key_id = "AKIAFAKEROUTERTEST01"
    filtered_finish = "guardrail_intervened"
    errors = UPSTREAM_ERRORS - {ErrorKind.CONTENT_FILTERED}  # a guardrail is a finish

    def __init__(self) -> None:
        self._fake = bedrock_fake.BedrockFake()

    @property
    def fake(self) -> bedrock_fake.BedrockFake:
        return self._fake

    def provider_yaml(self) -> str:
        return (
            f'{{type: bedrock, region: eu-west-1, endpoint_url: "{self.url}", '
            f"access_key_id: {self.access_key_id}, secret_access_key: {self.key}}}"
        )

    def reset(self) -> None:
        self._fake.reset()

    @property
    def calls(self) -> int:
        return len(self._fake.requests)

    @property
    def last_body(self) -> dict[str, Any]:
        return self._fake.requests[-1].body

    def answer(self, text: str, usage: tuple[int, int], *, stream: bool) -> None:
        self._fake.add_text(text, usage=usage)

    def tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        self._fake.add_tool_use(name, arguments, tool_use_id="tooluse_rt01")

    def filtered(self, *, stream: bool) -> None:
        self._fake.add_text("I can", stop_reason="guardrail_intervened")

    def fail(self, kind: ErrorKind) -> None:
        scripts = {
            ErrorKind.RATE_LIMITED: (
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
                {"retry-after": str(RETRY_AFTER_S)},
            ),
            ErrorKind.TIMEOUT: (408, "ModelTimeoutException", "Model has timed out.", {}),
            ErrorKind.SERVER_ERROR: (
                503,
                "ServiceUnavailableException",
                "Bedrock is unable to process your request.",
                {},
            ),
            ErrorKind.BAD_REQUEST: (400, "ValidationException", "Malformed input request.", {}),
            ErrorKind.AUTHENTICATION: (
                403,
                "UnrecognizedClientException",
                f"The security token included in the request is invalid: {self.access_key_id}",
                {},
            ),
            ErrorKind.CONTEXT_LENGTH: (
                400,
                "ValidationException",
                "Input is too long for requested model.",
                {},
            ),
            ErrorKind.NOT_FOUND: (
                404,
                "ResourceNotFoundException",
                "Could not resolve the foundation model from the provided model identifier.",
                {},
            ),
        }
        status, error_type, message, headers = scripts[kind]
        self._fake.add_error(status, error_type, message, headers=headers)

    def hang(self, seconds: float) -> None:
        self._fake.add_text("late", delay_s=seconds)

    def tool_exchange(self) -> ToolExchange:
        blocks = [b for m in self.last_body["messages"] for b in m["content"]]
        use = next(b["toolUse"] for b in blocks if "toolUse" in b)
        result = next(b["toolResult"] for b in blocks if "toolResult" in b)
        return ToolExchange(
            use["toolUseId"],
            use["name"],
            use["input"],
            result["toolUseId"],
            result["content"][0]["text"],
        )


def _pieces(text: str) -> list[str]:
    """Text as a streaming server would send it: a few pieces."""
    size = max(1, len(text) // 3)
    return [text[i : i + size] for i in range(0, len(text), size)]


ALL_DRIVERS: tuple[type[Driver], ...] = (
    OpenAIDriver,
    AzureDriver,
    AnthropicDriver,
    GeminiDriver,
    BedrockDriver,
    LocalDriver,
)
