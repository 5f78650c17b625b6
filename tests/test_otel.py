"""OpenTelemetry spans with the real SDK: the span tree of batches, retries, fallbacks, tools; OTLP export."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed: "
                                                "pip install -e '.[otel]'")

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import greenagents as ga
from greenagents import hooks
from greenagents.testing import Simulator
from tests.agents import SentimentAgent, at
from tests.otlp import receiver
from tests.test_celery import ROOT, redis_url

assert redis_url  # a fixture of the Celery tests: one redis-server for the session

FAST = ga.Retry(max=3, backoff="fixed", base=0.01, jitter=False)
_exporter = InMemorySpanExporter()
_extra: list[SpanProcessor] = []  # processors of one test (a provider cannot remove one)


class _Fanout(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        for processor in _extra:
            processor.on_end(span)


_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))
_provider.add_span_processor(_Fanout())
trace.set_tracer_provider(_provider)  # once per process: OpenTelemetry refuses a second one
tracer = trace.get_tracer("tests")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _exporter.clear()
    ga.configure(otel=True)
    yield _exporter


def children(all_spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    found = [s for s in all_spans if s.parent is not None
             and s.parent.span_id == parent.context.span_id]
    return sorted(found, key=lambda s: s.start_time or 0)


def named(all_spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in all_spans if s.name.startswith(prefix)]


def test_a_batch_is_one_span_per_call_under_the_callers_span(sim: Simulator,
                                                             spans: InMemorySpanExporter) -> None:
    agent = at(SentimentAgent, sim.base_url)
    with tracer.start_as_current_span("request") as request:
        results = ga.batch([(agent, {"text": f"t{i}"}) for i in range(5)] + [(abs, (-1,), {})])
    assert all(r.ok for r in results)
    done = spans.get_finished_spans()
    root = next(s for s in done if s.name == "request")
    calls = children(done, root)
    assert sorted(s.name for s in calls) == ["call abs"] + ["invoke_agent SentimentAgent"] * 5
    assert {s.context.trace_id for s in done} == {request.get_span_context().trace_id}
    agent_call = next(s for s in calls if s.name.startswith("invoke_agent"))
    attrs = dict(agent_call.attributes or {})
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["greenagents.attempts"] == 1 and attrs["greenagents.cost_usd"] > 0
    assert attrs["gen_ai.usage.input_tokens"] > 0 and "greenagents.index" in attrs
    (chat,) = children(done, agent_call)
    chat_attrs = dict(chat.attributes or {})
    assert chat.name == "chat gpt-4o-mini" and chat.kind == trace.SpanKind.CLIENT
    assert chat_attrs["gen_ai.system"] == "openai"
    assert chat_attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat_attrs["gen_ai.response.model"]
    assert chat_attrs["gen_ai.usage.output_tokens"] > 0
    assert list(chat_attrs["gen_ai.response.finish_reasons"]) == ["stop"]
    assert "gen_ai.input.messages" not in chat_attrs, "content only when opted in"


@pytest.mark.sim(faults={"rate_limit": 1.0}, fault_attempts=1, retry_after=0.01)
def test_retries_are_sibling_attempts_with_the_error_and_the_wait(
        sim: Simulator, spans: InMemorySpanExporter) -> None:
    assert at(SentimentAgent, sim.base_url, retries=FAST).call(text="x").ok
    done = spans.get_finished_spans()
    (call,) = named(done, "invoke_agent")
    first, second = children(done, call)
    assert dict(first.attributes or {})["error.type"] == "RateLimited"
    assert dict(first.attributes or {})["http.response.status_code"] == 429
    assert first.status.status_code == trace.StatusCode.ERROR
    assert second.status.status_code != trace.StatusCode.ERROR
    assert dict(call.attributes or {})["greenagents.attempts"] == 2
    assert dict(call.attributes or {})["greenagents.retry_wait_s"] > 0
    assert [e.name for e in call.events] == ["greenagents.wait"]


def test_fallbacks_are_attempts_on_each_provider(sim_factory: Any,
                                                 spans: InMemorySpanExporter) -> None:
    down, backup = sim_factory(faults={"server_error": 1.0}), sim_factory()
    agent = at(SentimentAgent, down.base_url, retries=ga.Retry(max=1, base=0.01, jitter=False),
               fallbacks=(("anthropic/claude-haiku-4-5", backup.anthropic_url),))
    assert agent.call(text="x").ok
    done = spans.get_finished_spans()
    (call,) = named(done, "invoke_agent")
    attempts = children(done, call)
    assert [dict(s.attributes or {})["gen_ai.system"] for s in attempts] == [
        "openai", "openai", "anthropic"]
    assert dict(call.attributes or {})["gen_ai.response.model"] == "claude-haiku-4-5"
    assert call.status.status_code != trace.StatusCode.ERROR


def test_failed_call_marks_its_span(sim: Simulator, spans: InMemorySpanExporter) -> None:
    result = ga.batch([(int, ("x",), {})])[0]
    assert not result.ok
    (call,) = spans.get_finished_spans()
    assert call.status.status_code == trace.StatusCode.ERROR
    assert dict(call.attributes or {})["error.type"] == "ValueError"


def test_a_cache_hit_is_marked_on_its_call_span(sim: Simulator, spans: InMemorySpanExporter,
                                                tmp_path: Any) -> None:
    ga.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    agent = at(SentimentAgent, sim.base_url, cache=True)
    assert agent.call(text="same").ok and agent.call(text="same").cached
    calls = [s for s in spans.get_finished_spans() if s.name.startswith("invoke_agent")]
    assert [dict(s.attributes or {}).get("greenagents.cache_hit") for s in calls] == [None, True]


def test_agents_inside_a_function_nest_under_its_span(sim: Simulator,
                                                      spans: InMemorySpanExporter) -> None:
    agent = at(SentimentAgent, sim.base_url)

    def review(text: str) -> str:
        return str(agent.run(text=text).label)

    assert ga.each(["a", "b"], review)[0].ok
    done = spans.get_finished_spans()
    outer = named(done, "call ")
    assert len(outer) == 2
    for span in outer:
        (inner,) = children(done, span)
        assert inner.name == "invoke_agent SentimentAgent"
        assert [c.name for c in children(done, inner)] == ["chat gpt-4o-mini"]


SECRET = "sk-live-0123456789abcdef"


def test_content_only_when_opted_in_and_secrets_masked(sim: Simulator,
                                                       spans: InMemorySpanExporter) -> None:
    ga.configure(otel=True, otel_capture_content=True)
    assert at(SentimentAgent, sim.base_url).call(text=f"my key is {SECRET}, fine").ok
    (chat,) = named(spans.get_finished_spans(), "chat")
    attrs = dict(chat.attributes or {})
    assert "my key is sk-***" in attrs["gen_ai.input.messages"]
    assert SECRET not in attrs["gen_ai.input.messages"]
    assert "assistant" in attrs["gen_ai.output.messages"]


def test_turn_and_tool_call_events_make_spans(spans: InMemorySpanExporter) -> None:
    """The tools loop emits these; this is the tree it gets."""
    def agent_with_a_tool() -> None:
        hooks.emit(hooks.TurnStarted(number=1, model="openai/gpt-4o"))
        hooks.emit(hooks.ToolCallStarted(id="c1", name="get_weather", arguments={"city": "Oslo"}))
        hooks.emit(hooks.ToolCallEnded(id="c1", name="get_weather", duration_s=0.1))
        hooks.emit(hooks.TurnEnded(number=1, model="openai/gpt-4o", tool_calls=1))

    ga.batch([(agent_with_a_tool, {})])
    done = spans.get_finished_spans()
    (call,) = named(done, "call ")
    (turn,) = children(done, call)
    (tool,) = children(done, turn)
    assert turn.name == "turn 1" and tool.name == "execute_tool get_weather"
    assert dict(tool.attributes or {})["gen_ai.tool.name"] == "get_weather"


def test_a_tool_using_agent_is_a_tree_of_turns_attempts_and_tool_runs(
        sim: Simulator, spans: InMemorySpanExporter) -> None:
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        return f"sunny in {city}"

    def get_time(city: str) -> str:
        """Local time in a city."""
        raise RuntimeError("clock broken")

    agent = type("TripAgent", (ga.Agent,), {"model": "openai/gpt-4o-mini",
                                            "base_url": sim.base_url,
                                            "tools": (get_weather, get_time)})
    with tracer.start_as_current_span("request") as request:
        assert agent.call("Oslo").ok
    done = spans.get_finished_spans()
    (call,) = named(done, "invoke_agent")
    assert call.parent is not None and call.parent.span_id == request.get_span_context().span_id
    assert not named(done, "call "), "a tool run is no call of its own"
    first, second = children(done, call)
    assert (first.name, second.name) == ("turn 1", "turn 2")
    assert dict(first.attributes or {})["greenagents.tool_calls"] == 2
    chat, *ran = children(done, first)
    assert chat.name == "chat gpt-4o-mini"
    tools = {s.name: s for s in ran}
    assert tools.keys() == {"execute_tool get_weather", "execute_tool get_time"}
    assert dict(tools["execute_tool get_time"].attributes or {})["error.type"] == "RuntimeError"
    assert [s.name for s in children(done, second)] == ["chat gpt-4o-mini"]
    assert all(not children(done, tool) for tool in tools.values())


def test_off_means_no_spans(sim: Simulator, spans: InMemorySpanExporter) -> None:
    ga.configure(otel=False)
    assert not hooks.active
    ga.batch([(at(SentimentAgent, sim.base_url), {"text": "x"})])
    assert spans.get_finished_spans() == ()


def test_spans_reach_an_otlp_http_receiver(sim: Simulator, spans: InMemorySpanExporter) -> None:
    with receiver() as otlp:
        exporter = OTLPSpanExporter(endpoint=otlp.endpoint)
        _extra.append(SimpleSpanProcessor(exporter))
        try:
            ga.batch([(at(SentimentAgent, sim.base_url), {"text": f"t{i}"}) for i in range(3)])
        finally:
            _extra.pop().shutdown()
    names = sorted(s["name"] for s in otlp.spans)
    assert names == ["chat gpt-4o-mini"] * 3 + ["invoke_agent SentimentAgent"] * 3
    chat = next(s for s in otlp.spans if s["name"].startswith("chat"))
    assert chat["attributes"]["gen_ai.system"] == "openai"
    assert chat["parent_id"] in {s["span_id"] for s in otlp.spans}


@pytest.fixture
def traced_workers(redis_url: str) -> Iterator[Any]:
    import redis

    from greenagents.celery.local import Workers

    redis.Redis.from_url(redis_url).flushdb()
    with Workers(redis_url, env={"PYTHONPATH": str(ROOT)}, app_module="tests.otel_worker") as pool:
        yield pool


def test_trace_context_reaches_celery_workers(traced_workers: Any, sim: Simulator,
                                              spans: InMemorySpanExporter) -> None:
    import greenagents.celery as ga_celery

    with receiver() as otlp:
        traced_workers.start(1, OPENAI_BASE_URL=sim.base_url, GREENAGENTS_OTEL="1",
                             OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=otlp.endpoint)
        with tracer.start_as_current_span("dispatch") as dispatch:
            results = ga_celery.batch(traced_workers.app,
                                      [(SentimentAgent, {"text": f"t{i}"}) for i in range(3)])
        assert all(r.ok for r in results)
        traced_workers.stop()
    trace_id = f"{dispatch.get_span_context().trace_id:032x}"
    calls = [s for s in otlp.spans if s["name"] == "invoke_agent SentimentAgent"]
    assert len(calls) == 3 and {s["trace_id"] for s in calls} == {trace_id}
    assert {s["parent_id"] for s in calls} == {f"{dispatch.get_span_context().span_id:016x}"}
    chats = [s for s in otlp.spans if s["name"] == "chat gpt-4o-mini"]
    assert sorted(s["parent_id"] for s in chats) == sorted(s["span_id"] for s in calls)
