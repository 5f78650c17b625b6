"""The simulator over real HTTP on 127.0.0.1, driven by the official SDKs and by ``requests``.

The test process is monkey-patched (see conftest); the simulator serves from its own OS thread
and hub, and the unpatched case runs in a subprocess.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import anthropic
import gevent.pool
import openai
import pydantic
import pytest
import requests

from greenagents import limits, tokens
from greenagents.testing import FAULTS, Simulator
from tests.conftest import run_python


class Sentiment(pydantic.BaseModel):
    label: Literal["positive", "negative", "neutral"]
    score: float = pydantic.Field(ge=0, le=1)
    reasons: list[str] = pydantic.Field(min_length=1)


class Lookup(pydantic.BaseModel):
    city: str
    days: int = pydantic.Field(ge=1, le=7)


def oai(sim: Simulator, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=sim.api_key or "sk-test", **options)


def claude(sim: Simulator, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.anthropic_url, api_key=sim.api_key or "sk-test",
                               **options)


def post(sim: Simulator, body: Any, headers: dict[str, str] | None = None,
         path: str = "/chat/completions", **options: Any) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(sim.base_url + path, data=data, headers=headers or {}, **options)


def chat(text: str = "hello there") -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


USER: Any = [{"role": "user", "content": "I love this product"}]


# --- OpenAI -----------------------------------------------------------------------------------

def test_openai_text_echoes_prompt_deterministically(sim: Simulator) -> None:
    client = oai(sim)
    first = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    second = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    text = first.choices[0].message.content or ""
    assert "I love this product" in text
    assert text == second.choices[0].message.content
    assert first.usage is not None and first.usage.completion_tokens == tokens.estimate(text)
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert sim.stats()["by_model"] == {"gpt-4o-mini": 2}


def test_openai_parse_with_pydantic_model(sim: Simulator) -> None:
    completion = oai(sim).chat.completions.parse(model="gpt-4o", messages=USER,
                                                 response_format=Sentiment)
    assert isinstance(completion.choices[0].message.parsed, Sentiment)


def test_openai_json_object(sim: Simulator) -> None:
    completion = oai(sim).chat.completions.create(
        model="gpt-4o", messages=USER, response_format={"type": "json_object"})
    assert "I love this product" in json.loads(completion.choices[0].message.content or "")["answer"]


def test_openai_forced_tool_call_matches_schema(sim: Simulator) -> None:
    tool = openai.pydantic_function_tool(Lookup, name="lookup")
    completion = oai(sim).chat.completions.create(
        model="gpt-4o", messages=USER, tools=[tool],
        tool_choice={"type": "function", "function": {"name": "lookup"}})
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    Lookup.model_validate_json(call.function.arguments)


def test_openai_auto_tool_answers_text_after_tool_result(sim: Simulator) -> None:
    tool = openai.pydantic_function_tool(Lookup, name="lookup")
    messages: Any = [*USER, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "lookup", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    completion = oai(sim).chat.completions.create(model="gpt-4o", messages=messages,
                                                  tools=[tool])
    assert completion.choices[0].message.content and not completion.choices[0].message.tool_calls


def test_openai_stream_with_usage(sim: Simulator) -> None:
    client = oai(sim)
    whole = client.chat.completions.create(model="gpt-4o", messages=USER)
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage == whole.usage and len(chunks) > 3


def test_openai_stream_tool_call(sim: Simulator) -> None:
    tool = openai.pydantic_function_tool(Lookup, name="lookup")
    with oai(sim).chat.completions.stream(model="gpt-4o", messages=USER, tools=[tool],
                                          tool_choice="required") as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.tool_calls[0].function.parsed_arguments, Lookup)


@pytest.mark.sim(fault_attempts=1)
def test_openai_sdk_retries_429_honouring_retry_after(sim: Simulator) -> None:
    client = oai(sim, max_retries=2)
    started = time.monotonic()
    completion = client.chat.completions.create(
        model="gpt-4o", messages=USER,
        extra_headers={"X-Sim-Fault": "rate_limit", "X-Sim-Retry-After": "0.4"})
    assert completion.choices[0].message.content
    assert time.monotonic() - started >= 0.4
    stats = sim.stats()
    assert stats["by_status"] == {"429": 1, "200": 1}
    assert stats["by_fault"] == {"rate_limit": 1}


def test_rate_limit_headers_and_body(sim: Simulator) -> None:
    reply = post(sim, chat(), {"X-Sim-Fault": "rate_limit", "X-Sim-Retry-After": "2.5"})
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "3" and reply.headers["retry-after-ms"] == "2500"
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"


# --- Anthropic --------------------------------------------------------------------------------

def test_anthropic_text(sim: Simulator) -> None:
    message = claude(sim).messages.create(model="claude-haiku-4-5", max_tokens=100,
                                          messages=USER)
    block = message.content[0]
    assert block.type == "text" and "I love this product" in block.text
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == tokens.estimate(block.text)


def test_anthropic_forced_tool(sim: Simulator) -> None:
    tool = {"name": "lookup", "description": "Weather.", "input_schema": Lookup.model_json_schema()}
    message = claude(sim).messages.create(model="claude-haiku-4-5", max_tokens=100,
                                          messages=USER, tools=[tool],
                                          tool_choice={"type": "tool", "name": "lookup"})
    block = message.content[0]
    assert message.stop_reason == "tool_use" and block.type == "tool_use"
    assert block.name == "lookup"
    Lookup.model_validate(block.input)


def test_anthropic_stream(sim: Simulator) -> None:
    client = claude(sim)
    whole = client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=USER)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=100,
                                messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_anthropic_parse_structured_output(sim: Simulator) -> None:
    parsed = claude(sim).messages.parse(model="claude-haiku-4-5", max_tokens=200,
                                        messages=USER, output_format=Sentiment)
    assert isinstance(parsed.parsed_output, Sentiment)


@pytest.mark.parametrize("fault, status, kind", [("overloaded", 529, anthropic.InternalServerError),
                                                 ("rate_limit", 429, anthropic.RateLimitError),
                                                 ("quota", 400, anthropic.BadRequestError)])
def test_anthropic_error_shapes(sim: Simulator, fault: str, status: int, kind: type) -> None:
    with pytest.raises(kind) as caught:
        claude(sim, max_retries=0).messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=USER,
            extra_headers={"X-Sim-Fault": fault})
    assert caught.value.status_code == status
    assert caught.value.body["type"] == "error"


# --- faults -----------------------------------------------------------------------------------

def test_openai_quota_is_a_429_with_its_own_code(sim: Simulator) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        oai(sim, max_retries=0).chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers={"X-Sim-Fault": "quota"})
    assert caught.value.status_code == 429 and caught.value.code == "insufficient_quota"
    assert "quota" in caught.value.message


@pytest.mark.parametrize("fault, status", [("server_error", 500), ("overloaded", 503)])
def test_openai_server_errors(sim: Simulator, fault: str, status: int) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        oai(sim, max_retries=0).chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers={"X-Sim-Fault": fault})
    assert caught.value.status_code == status


def test_reset_is_a_connection_error(sim: Simulator) -> None:
    with pytest.raises(openai.APIConnectionError):
        oai(sim, max_retries=0).chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers={"X-Sim-Fault": "reset"})
    assert sim.stats()["by_status"] == {"dropped": 1}


def test_truncated_is_an_incomplete_read(sim: Simulator) -> None:
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        post(sim, chat(), {"X-Sim-Fault": "truncated"})


def test_truncated_stream_fails_the_sdk(sim: Simulator) -> None:
    with pytest.raises(openai.APIConnectionError):
        list(oai(sim, max_retries=0).chat.completions.create(
            model="gpt-4o", messages=USER, stream=True,
            extra_headers={"X-Sim-Fault": "truncated"}))


def test_hang_times_out_without_blocking_the_server(sim: Simulator) -> None:
    with pytest.raises(openai.APITimeoutError):
        oai(sim, max_retries=0, timeout=0.3).chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers={"X-Sim-Fault": "hang"})
    assert post(sim, chat()).status_code == 200
    deadline = time.monotonic() + 5
    while sim.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats()["in_flight"] == 0  # the hung request ended when the client hung up


def test_malformed_is_invalid_json(sim: Simulator) -> None:
    reply = post(sim, chat(), {"X-Sim-Fault": "malformed"})
    assert reply.status_code == 200
    with pytest.raises(requests.exceptions.JSONDecodeError):
        reply.json()


def test_schema_invalid_fails_pydantic(sim: Simulator) -> None:
    with pytest.raises(pydantic.ValidationError):
        oai(sim).chat.completions.parse(model="gpt-4o", messages=USER, response_format=Sentiment,
                                        extra_headers={"X-Sim-Fault": "schema_invalid"})


@pytest.mark.sim(faults={"rate_limit": 0.3}, fault_attempts=1, retry_after=0.0)
def test_fault_attempts_first_try_fails_then_succeeds(sim: Simulator) -> None:
    first = [post(sim, chat(f"prompt {i}")).status_code for i in range(200)]
    second = [post(sim, chat(f"prompt {i}")).status_code for i in range(200)]
    assert 30 <= first.count(429) <= 90
    assert set(second) == {200}


def test_fault_rolls_are_reproducible(sim_factory: Any) -> None:
    def statuses(seed: int) -> list[int]:
        sim = sim_factory(faults={"server_error": 0.5}, seed=seed)
        return [post(sim, chat(f"p{i % 10}")).status_code for i in range(40)]

    assert statuses(1) == statuses(1) != statuses(2)


# --- limits, auth, bad requests, steering, stats ---------------------------------------------

@pytest.mark.sim(rpm=3)
def test_rpm_gives_429_with_accurate_retry_after(sim: Simulator) -> None:
    assert [post(sim, chat()).status_code for _ in range(3)] == [200] * 3
    time.sleep(1.0)
    reply = post(sim, chat())
    assert reply.status_code == 429
    assert 57_000 <= int(reply.headers["retry-after-ms"]) <= 59_100
    assert reply.headers["Retry-After"] == "59"


@pytest.mark.sim(tpm=100)
def test_tpm_budget(sim: Simulator) -> None:
    statuses = [post(sim, chat("x" * 120)).status_code for _ in range(4)]
    assert statuses[0] == 200 and statuses[-1] == 429


def test_the_client_estimates_prompt_tokens_as_the_simulator_counts_them(sim: Simulator) -> None:
    """A tpm limit set to the simulator's own must pace to its count, not trip its 429s."""
    messages = [{"role": "system", "content": "Classify the sentiment of the text, in one word."},
                {"role": "user", "content": [{"type": "text", "text": "I love this product " * 9}]}]
    answer = oai(sim).chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == limits.estimate_tokens(messages)
    claude_answer = claude(sim).messages.create(
        model="m", max_tokens=5, system=messages[0]["content"], messages=messages[1:])  # type: ignore[arg-type]
    assert claude_answer.usage.input_tokens == limits.estimate_tokens(messages)


@pytest.mark.sim(api_key="sk-secret-123")
def test_api_key_required(sim: Simulator) -> None:
    assert oai(sim).chat.completions.create(model="m", messages=USER)
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=sim.base_url, api_key="wrong").chat.completions.create(
            model="m", messages=USER)
    assert caught.value.status_code == 401 and "wrong" not in str(caught.value.body)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        anthropic.Anthropic(base_url=sim.anthropic_url, api_key="wrong").messages.create(
            model="m", max_tokens=5, messages=USER)
    assert denied.value.body["error"]["type"] == "authentication_error"
    assert claude(sim).messages.create(model="m", max_tokens=5, messages=USER)


@pytest.mark.parametrize("body, status", [(b"{not json", 400), ({"messages": USER}, 400),
                                          ({"model": "m"}, 400)])
def test_bad_requests_get_provider_errors(sim: Simulator, body: Any, status: int) -> None:
    reply = post(sim, body)
    assert reply.status_code == status and reply.json()["error"]["type"] == "invalid_request_error"
    anthropic_reply = post(sim, body, path="/messages")
    assert anthropic_reply.json()["type"] == "error"


def test_unknown_path_wrong_method_and_bad_steering(sim: Simulator) -> None:
    assert requests.get(sim.base_url + "/nope").status_code == 404
    assert requests.get(sim.base_url + "/chat/completions").status_code == 405
    reply = post(sim, chat(), {"X-Sim-Fault": "gremlins"})
    assert reply.status_code == 400 and "rate_limit" in reply.json()["error"]["message"]
    assert post(sim, chat()).status_code == 200


def test_latency_header_and_models(sim: Simulator) -> None:
    started = time.monotonic()
    assert post(sim, chat(), {"X-Sim-Latency": "0.3"}).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert "gpt-4o-mini" in [m.id for m in oai(sim).models.list()]
    assert claude(sim).models.list().data


@pytest.mark.sim(latency=0.5)
def test_peak_in_flight_reflects_concurrency(sim: Simulator) -> None:
    pool = gevent.pool.Pool(50)
    replies = pool.map(lambda i: post(sim, chat(f"call {i}")), range(50))
    assert {r.status_code for r in replies} == {200}
    stats = requests.get(sim.url + "/_sim/stats").json()
    assert stats["peak_in_flight"] == 50 and stats["requests"] == 50 and stats["in_flight"] == 0
    assert requests.post(sim.url + "/_sim/reset").json()["requests"] == 0
    assert sim.stats()["peak_in_flight"] == 0


@pytest.mark.sim(latency=0.2, token_latency=0.01)
def test_token_latency_paces_output(sim: Simulator) -> None:
    started = time.monotonic()
    completion = oai(sim).chat.completions.create(model="m", messages=USER)
    assert completion.usage is not None
    assert time.monotonic() - started >= 0.2 + 0.01 * completion.usage.completion_tokens


def test_invalid_knobs_are_rejected() -> None:
    with pytest.raises(ValueError, match="valid faults: " + ", ".join(FAULTS)):
        Simulator(faults={"gremlins": 0.1})
    with pytest.raises(ValueError, match="sum to at most 1"):
        Simulator(faults={"reset": 0.6, "hang": 0.6})
    with pytest.raises(ValueError, match="latency_p99"):
        Simulator(latency=1.0, latency_p99=0.5)


def test_stop_frees_the_port() -> None:
    with Simulator() as sim:
        port = int(sim.url.rsplit(":", 1)[1])
    with Simulator(port=port) as again:
        assert post(again, chat()).status_code == 200


def test_process_form_and_cli_line() -> None:
    with Simulator(faults={"rate_limit": 1.0}, api_key="k").start_process() as sim:
        reply = requests.post(sim.base_url + "/chat/completions", json=chat(),
                              headers={"Authorization": "Bearer k"})
        assert reply.status_code == 429 and sim.stats()["by_fault"] == {"rate_limit": 1}
    assert sim.process.poll() is not None


def test_unpatched_process_with_plain_requests() -> None:
    result = run_python("""
        import requests
        from greenagents.testing import Simulator
        with Simulator(latency=0.05) as sim:
            body = {"model": "m", "messages": [{"role": "user", "content": "plain"}]}
            reply = requests.post(sim.base_url + "/chat/completions", json=body, timeout=5)
            print(reply.json()["choices"][0]["message"]["content"])
        from gevent import monkey
        assert not monkey.is_module_patched("socket")
    """, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"plain"' in result.stdout


def test_imports_stay_light() -> None:
    result = run_python("""
        import sys
        import greenagents.testing, greenagents.testing.pytest_plugin
        assert "ssl" not in sys.modules and "gevent" not in sys.modules, sorted(sys.modules)
    """)
    assert result.returncode == 0, result.stderr


@pytest.mark.sim(faults={"rate_limit": 0.5}, fault_attempts=1)
def test_faults_follow_the_conversation_not_the_clients_encoding(sim: Simulator) -> None:
    # Benchmarks compare clients that say the same thing in different JSON (an agent adds a
    # schema, an SDK its own fields): they must meet the same faults.
    def statuses(extra: dict[str, Any]) -> list[int]:
        sim.reset()  # forget attempt counts: both runs are first tries
        return [requests.post(f"{sim.base_url}/chat/completions", timeout=10, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"call {i}"}],
            **extra}).status_code for i in range(30)]

    plain = statuses({})
    assert 0 < plain.count(429) < 30
    assert statuses({"temperature": 0.2, "response_format": {"type": "json_object"}}) == plain
