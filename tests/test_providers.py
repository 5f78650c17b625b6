"""Providers: request building, response parsing, endpoint resolution, and complete() over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from greenagents import http
from greenagents.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    ProviderError,
    RateLimited,
    ServerError,
)
from greenagents.providers import (
    AnthropicProvider,
    Completion,
    OpenAIProvider,
    complete,
    resolve,
    strict_schema,
)
from greenagents.result import Usage
from tests.test_http import LocalServer
from tests.test_http import server as server  # the fixture, re-exported for pytest

SECRET = "sk-proj-SECRET9876"  # key-shaped, not a real one
ANT_SECRET = "sk-ant-test-SECRET"  # key-shaped, not a real one

# Recorded shapes (trimmed) of real answers.
OPENAI_OK = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "positive", "refusal": None}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
}
OPENAI_TOOL = {
    "model": "gpt-4o-mini", "usage": {"prompt_tokens": 5, "completion_tokens": 7},
    "choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "c1", "type": "function", "function": {
                     "name": "output", "arguments": "{\"label\":\"positive\"}"}}]}}],
}
OPENAI_401 = {"error": {"message": f"Incorrect API key provided: {SECRET}.",
                        "type": "invalid_request_error", "code": "invalid_api_key"}}
ANTHROPIC_TEXT = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 4},
}
ANTHROPIC_TOOL = {
    "model": "claude-haiku-4-5", "stop_reason": "tool_use",
    "content": [{"type": "tool_use", "id": "t1", "name": "Sentiment",
                 "input": {"label": "négatif", "score": 0.2}}],
    "usage": {"input_tokens": 20, "output_tokens": 9},
}
ANTHROPIC_529 = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


class Sentiment(BaseModel):
    """The sentiment of a text."""

    label: Literal["positive", "negative"]
    score: float = 0.5
    note: str | None = None


def _resp(status: int, payload: Any, headers: dict[str, str] | None = None) -> http.HttpResponse:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return http.HttpResponse(status, headers or {}, data)


# -- strict schemas ----------------------------------------------------------------------------

def test_strict_schema_closes_objects_and_requires_all() -> None:
    class Item(BaseModel):
        name: str
        qty: int = 1

    class Cat(BaseModel):
        kind: Literal["cat"] = "cat"

    class Dog(BaseModel):
        kind: Literal["dog"] = "dog"

    class Order(BaseModel):
        items: list[Item]
        main: Item = Field(description="main item")
        pet: Annotated[Cat | Dog, Field(discriminator="kind")]
        note: str | None = None

    strict = strict_schema(Order.model_json_schema())
    assert strict is not None
    assert strict["additionalProperties"] is False
    assert strict["required"] == ["items", "main", "pet", "note"]
    assert strict["$defs"]["Item"]["required"] == ["name", "qty"]
    assert all(d["additionalProperties"] is False for d in strict["$defs"].values())
    assert "oneOf" not in strict["properties"]["pet"] and "anyOf" in strict["properties"]["pet"]
    assert "default" not in json.dumps(strict) and "discriminator" not in json.dumps(strict)
    assert Order.model_json_schema()["required"] == ["items", "main", "pet"]  # input not mutated


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"counts": {"type": "object",
                                                 "additionalProperties": {"type": "integer"}}}},
    {"type": "object", "properties": {"x": {}}},
    {"type": "object", "properties": {"s": {"type": "string", "maxLength": 3}}},
    {"type": "array", "items": {"type": "string"}},
])
def test_strict_schema_falls_back(schema: dict[str, Any]) -> None:
    assert strict_schema(schema) is None


def test_openai_request_uses_strict_schema_or_falls_back() -> None:
    provider = OpenAIProvider(api_key=SECRET)
    body = provider.build("gpt-4o-mini", [], schema=Sentiment.model_json_schema(),
                          schema_name="Sentiment").body
    spec = body["response_format"]["json_schema"]
    assert body["response_format"]["type"] == "json_schema"
    assert (spec["name"], spec["strict"]) == ("Sentiment", True)
    assert spec["schema"]["required"] == ["label", "score", "note"]

    class Counts(BaseModel):
        counts: dict[str, int]

    spec = provider.build("gpt-4o-mini", [], schema=Counts.model_json_schema()).body[
        "response_format"]["json_schema"]
    assert spec["strict"] is False and spec["schema"] == Counts.model_json_schema()


# -- OpenAI ------------------------------------------------------------------------------------

def test_openai_build() -> None:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Classify."},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}]}]
    request = OpenAIProvider(api_key=SECRET).build("gpt-4o-mini", messages, temperature=0.0,
                                                   max_tokens=50)
    assert request.url == "https://api.openai.com/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.body == {"model": "gpt-4o-mini", "messages": messages, "temperature": 0.0,
                            "max_tokens": 50}
    assert SECRET not in repr(request)
    reasoning = OpenAIProvider().build("o4-mini", [], max_tokens=50)
    assert reasoning.body["max_completion_tokens"] == 50 and "authorization" not in reasoning.headers


def test_openai_parse() -> None:
    provider = OpenAIProvider()
    assert provider.parse(_resp(200, OPENAI_OK)) == Completion(
        "positive", Usage(12, 1), "gpt-4o-mini-2024-07-18", "stop")
    tool = provider.parse(_resp(200, OPENAI_TOOL))
    assert (tool.text, tool.finish_reason) == ('{"label":"positive"}', "tool_calls")
    bare = {"choices": [{"message": {"content": "hi"}}]}  # a compatible server without usage
    assert provider.parse(_resp(200, bare)) == Completion("hi", Usage(0, 0), "", None)


def test_openai_auth_error_is_redacted() -> None:
    provider = OpenAIProvider(api_key=SECRET)
    with pytest.raises(AuthError) as info:
        provider.parse(_resp(401, OPENAI_401))
    assert "Incorrect API key provided" in str(info.value)
    assert "check OPENAI_API_KEY" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


@pytest.mark.parametrize("provider", [OpenAIProvider(), AnthropicProvider()])
def test_invalid_json_200_is_retryable(provider: OpenAIProvider | AnthropicProvider) -> None:
    with pytest.raises(ServerError, match="not valid JSON"):
        provider.parse(_resp(200, b'{"choices": [{"mess'))


@pytest.mark.parametrize("provider", [OpenAIProvider(), AnthropicProvider()])
def test_wrong_shape_200_is_not_retryable(provider: OpenAIProvider | AnthropicProvider) -> None:
    with pytest.raises(ProviderError, match="without the expected fields") as info:
        provider.parse(_resp(200, {"hello": "world"}))
    assert not info.value.retryable and str(provider.base_url_env) in str(info.value)


def test_non_json_error_body_is_quoted() -> None:
    with pytest.raises(ServerError, match=r"Bad Gateway.*<html>"):
        OpenAIProvider().parse(_resp(502, b"<html>bad gateway</html>"))


# -- Anthropic ---------------------------------------------------------------------------------

def test_anthropic_build() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
        {"role": "assistant", "content": "Un chat."},
    ]
    request = AnthropicProvider(api_key=ANT_SECRET).build(
        "claude-haiku-4-5", messages, schema=Sentiment.model_json_schema(),
        schema_name="Sentiment", temperature=0.2, max_tokens=100)
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers == {"content-type": "application/json",
                               "anthropic-version": "2023-06-01", "x-api-key": ANT_SECRET}
    body = request.body
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert (body["max_tokens"], body["temperature"]) == (100, 0.2)
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.png"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBOR"}}]},
        {"role": "assistant", "content": "Un chat."}]
    assert body["tools"] == [{"name": "Sentiment", "description": "The sentiment of a text.",
                              "input_schema": Sentiment.model_json_schema()}]
    assert body["tool_choice"] == {"type": "tool", "name": "Sentiment"}
    assert ANT_SECRET not in repr(request)


FAILED_TOOL_TURN: list[dict[str, Any]] = [
    {"role": "user", "content": "weather?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city": "a"}'}},
        {"id": "c2", "type": "function", "function": {"name": "w", "arguments": '{"city": "b"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "c2", "content": "Error: it broke", "is_error": True}]
TOOL_SPEC = {"name": "w", "description": "Weather.", "parameters": {"type": "object"}}


def test_a_failed_tool_result_is_flagged_is_error_on_anthropic_only() -> None:
    claude = AnthropicProvider().build("claude-haiku-4-5", FAILED_TOOL_TURN, tools=[TOOL_SPEC])
    assert claude.body["messages"][-1] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "Error: it broke",
         "is_error": True}]}
    # Chat Completions has no such field: the flag is dropped, the text says it
    gpt = OpenAIProvider().build("gpt-4o-mini", FAILED_TOOL_TURN, tools=[TOOL_SPEC])
    assert gpt.body["messages"][-1] == {"role": "tool", "tool_call_id": "c2",
                                        "content": "Error: it broke"}
    assert FAILED_TOOL_TURN[-1]["is_error"] is True  # the caller's message is left as it was


def test_anthropic_parse() -> None:
    provider = AnthropicProvider()
    assert provider.parse(_resp(200, ANTHROPIC_TEXT)) == Completion(
        "Hello world", Usage(14, 3), "claude-haiku-4-5-20251001", "end_turn")
    tool = provider.parse(_resp(200, ANTHROPIC_TOOL))
    assert json.loads(tool.text) == {"label": "négatif", "score": 0.2}
    assert (tool.usage, tool.finish_reason) == (Usage(20, 9), "tool_use")


def test_anthropic_errors() -> None:
    provider = AnthropicProvider(api_key=ANT_SECRET)
    with pytest.raises(ServerError, match="529 Overloaded: Overloaded"):
        provider.parse(_resp(529, ANTHROPIC_529))
    limited = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}
    with pytest.raises(RateLimited) as info:
        provider.parse(_resp(429, limited, {"retry-after": "7"}))
    assert info.value.retry_after == 7.0
    echo = {"type": "error", "error": {"type": "authentication_error",
                                       "message": f"invalid x-api-key {ANT_SECRET}"}}
    with pytest.raises(AuthError, match="check ANTHROPIC_API_KEY") as auth:
        provider.parse(_resp(401, echo))
    assert ANT_SECRET not in str(auth.value)


# -- resolution --------------------------------------------------------------------------------

_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
        "OLLAMA_HOST")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def test_resolve_openai(env: pytest.MonkeyPatch) -> None:
    env.setenv("OPENAI_API_KEY", SECRET)
    endpoint = resolve("gpt-4o-mini")
    assert (endpoint.provider.name, endpoint.model) == ("openai", "gpt-4o-mini")
    assert (endpoint.base_url, endpoint.api_key) == ("https://api.openai.com/v1", SECRET)
    env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1/")
    assert resolve("openai/gpt-4o-mini").base_url == "http://127.0.0.1:8000/v1"
    explicit = resolve("openai/meta-llama/Llama-3-8B", base_url="http://10.0.0.2:9000/v1")
    assert (explicit.model, explicit.base_url) == ("meta-llama/Llama-3-8B", "http://10.0.0.2:9000/v1")


def test_resolve_anthropic(env: pytest.MonkeyPatch) -> None:
    env.setenv("ANTHROPIC_API_KEY", ANT_SECRET)
    endpoint = resolve("anthropic/claude-haiku-4-5")
    assert isinstance(endpoint.provider, AnthropicProvider)
    assert (endpoint.base_url, endpoint.key_env) == ("https://api.anthropic.com", "ANTHROPIC_API_KEY")


@pytest.mark.parametrize(("host", "url"), [
    (None, "http://127.0.0.1:11434/v1"),
    ("gpu-box", "http://gpu-box:11434/v1"),
    ("0.0.0.0:8080", "http://0.0.0.0:8080/v1"),
    ("https://ollama.internal", "https://ollama.internal:11434/v1"),
])
def test_resolve_ollama(env: pytest.MonkeyPatch, host: str | None, url: str) -> None:
    if host:
        env.setenv("OLLAMA_HOST", host)
    endpoint = resolve("ollama/llama3")
    assert (endpoint.base_url, endpoint.api_key, endpoint.model) == (url, None, "llama3")
    assert isinstance(endpoint.provider, OpenAIProvider)


@pytest.mark.parametrize(("model", "var"), [("openai/gpt-4o", "OPENAI_API_KEY"),
                                            ("anthropic/claude-haiku-4-5", "ANTHROPIC_API_KEY")])
def test_missing_key_on_public_api(env: pytest.MonkeyPatch, model: str, var: str) -> None:
    with pytest.raises(ConfigError, match=f"set {var}, or point .*_BASE_URL"):
        resolve(model)
    assert resolve(model, base_url="http://127.0.0.1:8000").api_key is None


def test_unknown_provider_lists_known(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="known providers: anthropic, ollama, openai"):
        resolve("mistral/large")
    with pytest.raises(ConfigError, match="names no model"):
        resolve("openai/")


def test_repr_never_shows_the_key(env: pytest.MonkeyPatch) -> None:
    env.setenv("OPENAI_API_KEY", SECRET)
    endpoint = resolve("openai/gpt-4o-mini")
    for text in (repr(endpoint), str(endpoint), repr(endpoint.provider)):
        assert SECRET not in text
    assert "set from OPENAI_API_KEY" in repr(endpoint)


# -- complete() over HTTP ----------------------------------------------------------------------

@pytest.mark.usefixtures("http_transport")
def test_complete_openai_round_trip(server: LocalServer, env: pytest.MonkeyPatch) -> None:
    env.setenv("OPENAI_API_KEY", SECRET)
    server.reply = (200, {}, json.dumps(OPENAI_OK).encode())
    endpoint = resolve("openai/gpt-4o-mini", base_url=f"{server.url}/v1")
    completion = complete(endpoint, [{"role": "user", "content": "I love it"}],
                          schema=Sentiment.model_json_schema(), schema_name="Sentiment")
    assert completion.text == "positive" and completion.usage == Usage(12, 1)
    path, headers, body = server.requests[-1]
    assert path == "/v1/chat/completions"
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert json.loads(body)["response_format"]["json_schema"]["name"] == "Sentiment"


@pytest.mark.usefixtures("http_transport")
def test_complete_anthropic_round_trip(server: LocalServer, env: pytest.MonkeyPatch) -> None:
    env.setenv("ANTHROPIC_BASE_URL", server.url)
    server.reply = (200, {}, json.dumps(ANTHROPIC_TOOL).encode())
    endpoint = resolve("anthropic/claude-haiku-4-5")
    completion = complete(endpoint, [{"role": "user", "content": "hmm"}],
                          schema=Sentiment.model_json_schema(), max_tokens=64)
    assert json.loads(completion.text)["label"] == "négatif"
    path, headers, body = server.requests[-1]
    assert path == "/v1/messages" and "x-api-key" not in headers
    assert headers["anthropic-version"] == "2023-06-01" and json.loads(body)["max_tokens"] == 64


@pytest.mark.usefixtures("http_transport")
def test_complete_errors_never_contain_the_key(server: LocalServer,
                                               env: pytest.MonkeyPatch) -> None:
    env.setenv("OPENAI_API_KEY", SECRET)
    endpoint = resolve("openai/gpt-4o-mini", base_url=f"{server.url}/v1")
    for status, error in ((401, AuthError), (404, BadRequest), (500, ServerError)):
        server.reply = (status, {}, json.dumps(OPENAI_401).encode())
        with pytest.raises(error) as info:
            complete(endpoint, [{"role": "user", "content": "hi"}])
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    http.close_pools()
    dead = resolve("openai/gpt-4o-mini", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ProviderError, match="check OPENAI_BASE_URL") as refused:
        complete(dead, [{"role": "user", "content": "hi"}])
    assert SECRET not in str(refused.value)


def test_a_tuple_of_tool_specs_is_converted_once_and_never_changed() -> None:
    specs = ({"name": "get_weather", "description": "Weather.",
              "parameters": {"type": "object", "properties": {}}},)
    openai, anthropic = OpenAIProvider(), AnthropicProvider()
    first = openai.build("m", [], tools=specs).body["tools"]
    assert openai.build("m", [], tools=specs).body["tools"] is first  # made once per tuple
    assert first == [{"type": "function", "function": specs[0]}]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    for _ in range(2):  # the forced output tool joins a copy, never the shared array
        body = anthropic.build("claude-haiku-4-5", [], tools=specs, schema=schema).body
        assert [t["name"] for t in body["tools"]] == ["get_weather", "output"]
    body = anthropic.build("claude-haiku-4-5", [], tools=specs).body
    assert [t["name"] for t in body["tools"]] == ["get_weather"]
    assert "tools" not in anthropic.build("claude-haiku-4-5", []).body
