"""The simulator's Batch APIs, driven by the official openai and anthropic SDKs."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import openai
import pytest

from greenagents.testing import Simulator

SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["a", "b"]}},
          "required": ["label"], "additionalProperties": False}


def _line(custom_id: str, content: str, **body: Any) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "gpt-4o-mini",
                                "messages": [{"role": "user", "content": content}], **body}})


def _openai(sim: Simulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="test", max_retries=0)


def _anthropic(sim: Simulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.anthropic_url, api_key="test", max_retries=0)


def _until(check: Any, limit: float = 10.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.mark.sim(batch_delay=0.3)
def test_openai_sdk_files_and_batches_round_trip(sim: Simulator) -> None:
    client = _openai(sim)
    lines = [_line("r0", "hello there"),
             _line("r1", "classify", response_format={"type": "json_schema", "json_schema": {
                 "name": "out", "schema": SCHEMA, "strict": True}})]
    file = client.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
    assert (file.purpose, file.bytes) == ("batch", len("\n".join(lines)))
    assert client.files.retrieve(file.id).id == file.id
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"job": "j1"})
    assert batch.status == "in_progress" and batch.request_counts.total == 2
    done = _until(lambda: (b := client.batches.retrieve(batch.id)).status == "completed" and b)
    assert done.request_counts.completed == 2 and done.metadata == {"job": "j1"}
    rows = {r["custom_id"]: r for r in map(json.loads,
                                           client.files.content(done.output_file_id).text.splitlines())}
    plain = rows["r0"]["response"]["body"]["choices"][0]["message"]["content"]
    assert plain.endswith('You said: "hello there".')  # the online answer logic
    structured = json.loads(rows["r1"]["response"]["body"]["choices"][0]["message"]["content"])
    assert structured["label"] in ("a", "b")
    assert [b.id for b in client.batches.list()] == [batch.id]
    assert sim.stats()["batches"] == {"files": 1, "openai_batches": 1,
                                      "anthropic_batches": 0, "cancels": 0}


@pytest.mark.sim(batch_delay=0.3)
def test_anthropic_sdk_message_batches_round_trip(sim: Simulator) -> None:
    client = _anthropic(sim)
    tool = {"name": "out", "description": "answer", "input_schema": SCHEMA}
    requests: list[Any] = [
        {"custom_id": "t", "params": {"model": "claude-haiku-4-5", "max_tokens": 50,
                                      "messages": [{"role": "user", "content": "hi you"}]}},
        {"custom_id": "s", "params": {"model": "claude-haiku-4-5", "max_tokens": 50,
                                      "messages": [{"role": "user", "content": "x"}],
                                      "tools": [tool], "tool_choice": {"type": "tool", "name": "out"}}},
    ]
    batch = client.messages.batches.create(requests=requests)
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 2
    done = _until(lambda: (b := client.messages.batches.retrieve(batch.id)).processing_status
                  == "ended" and b)
    assert done.request_counts.succeeded == 2 and done.results_url
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["t"].type == "succeeded"
    assert results["t"].message.content[0].text.endswith('You said: "hi you".')  # type: ignore[union-attr]
    assert results["s"].message.content[0].input["label"] in ("a", "b")  # type: ignore[union-attr]
    assert [b.id for b in client.messages.batches.list()] == [batch.id]


@pytest.mark.sim(batch_delay=30)
def test_cancel_in_both_dialects(sim: Simulator) -> None:
    oa, an = _openai(sim), _anthropic(sim)
    file = oa.files.create(file=("in.jsonl", _line("r0", "x").encode()), purpose="batch")
    batch = oa.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert oa.batches.cancel(batch.id).status == "cancelled"
    message_batch = an.messages.batches.create(requests=[{"custom_id": "a", "params": {
        "model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}}])
    ended = an.messages.batches.cancel(message_batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 1
    assert [r.result.type for r in an.messages.batches.results(message_batch.id)] == ["canceled"]
    assert sim.stats()["batches"]["cancels"] == 2


@pytest.mark.sim(batch_row_failure=0.3, batch_row_expiry=0.2, seed=3)
def test_row_failures_and_expiry_land_in_the_error_file(sim: Simulator) -> None:
    client = _openai(sim)
    data = "\n".join(_line(f"r{i}", f"text {i}") for i in range(40)).encode()
    file = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    done = client.batches.retrieve(batch.id)
    assert done.status == "expired"  # some rows expired: OpenAI reports the whole batch so
    errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    output = client.files.content(done.output_file_id).text.splitlines()
    assert len(errors) + len(output) == 40 and done.request_counts.failed == len(errors)
    kinds = {("expired" if e["error"] else e["response"]["status_code"]) for e in errors}
    assert kinds == {"expired", 500}
    assert next(e for e in errors if e["error"])["error"]["code"] == "batch_expired"


@pytest.mark.sim(batch_max_rows=2, batch_max_bytes=2000)
def test_limits_answer_with_the_providers_errors(sim: Simulator) -> None:
    client = _openai(sim)
    with pytest.raises(openai.BadRequestError, match="File is too large"):
        client.files.create(file=("big.jsonl", b"x" * 2001), purpose="batch")
    data = "\n".join(_line(f"r{i}", "x") for i in range(3)).encode()
    file = client.files.create(file=("in.jsonl", data), purpose="batch")
    failed = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
    assert failed.status == "failed" and failed.errors is not None
    assert failed.errors.data is not None and failed.errors.data[0].code == "too_many_requests"
    params = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user",
                                                                         "content": "x"}]}
    with pytest.raises(anthropic.BadRequestError, match="at most 2 requests"):
        _anthropic(sim).messages.batches.create(
            requests=[{"custom_id": str(i), "params": params} for i in range(3)])  # type: ignore[misc]
    with pytest.raises(anthropic.APIStatusError, match="maximum size") as big:
        _anthropic(sim).messages.batches.create(
            requests=[{"custom_id": "x", "params": {**params, "system": "y" * 3000}}])  # type: ignore[misc]
    assert big.value.status_code == 413


def test_batch_endpoints_need_the_api_key(sim_factory: Any) -> None:
    sim = sim_factory(api_key="right")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=sim.base_url, api_key="wrong", max_retries=0).batches.list()
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=sim.base_url, api_key="right", max_retries=0).batches.retrieve("nope")
