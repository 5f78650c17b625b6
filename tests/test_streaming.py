"""Agent.stream against the simulator over real HTTP: deltas, results, retries, limits, closing."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
from pathlib import Path

import gevent
import gevent.event
import pytest

import greenagents as ga
from greenagents import errors, http, tracking
from greenagents.streaming import Done, TextDelta
from greenagents.testing import Simulator

from .agents import Sentiment, SentimentAgent, SummaryAgent, at
from .test_http import LocalServer, server  # noqa: F401  # the fixture: a server that answers whole

pytestmark = pytest.mark.usefixtures("http_transport")  # every test over urllib3 and geventhttpclient
LONG = {"answer_words": 50, "token_latency": 0.02}  # a 1 s answer of 50 deltas


def _url(sim: Simulator, agent: type[ga.Agent]) -> str:
    return sim.anthropic_url if (agent.model or "").startswith("anthropic/") else sim.base_url


def _await_status(sim: Simulator, status: str, count: int = 1) -> dict[str, int]:
    for _ in range(100):
        seen: dict[str, int] = sim.stats()["by_status"]
        if seen.get(status, 0) >= count:
            return seen
        gevent.sleep(0.05)
    raise AssertionError(f"the simulator never saw {count} {status!r}: {sim.stats()}")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_deltas_add_up_to_the_result_of_a_call(sim: Simulator, provider: str) -> None:
    agent = at(SummaryAgent, "", model=f"{provider}/sim-model")
    agent = at(agent, _url(sim, agent))
    stream = agent.stream(text="the quick brown fox jumps over the lazy dog")
    deltas = list(stream)
    called = agent.call(text="the quick brown fox jumps over the lazy dog")
    assert len(deltas) > 5 and all(isinstance(d, str) and d for d in deltas)
    result = stream.result
    assert result.ok and result.value == "".join(deltas) == stream.text == called.value
    assert result.usage == called.usage and result.usage.prompt_tokens > 0
    assert result.model == f"{provider}/sim-model" and result.attempts == 1
    assert sim.stats()["by_status"] == {"200": 2}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_structured_output_streams_its_json_and_validates_at_the_end(
        sim: Simulator, provider: str) -> None:
    agent = at(SentimentAgent, "", model=f"{provider}/sim-model")
    stream = at(agent, _url(sim, agent)).stream(text="I love it")
    deltas = list(stream)
    assert len(deltas) > 1
    assert isinstance(stream.result.value, Sentiment)
    assert Sentiment.model_validate(json.loads("".join(deltas))) == stream.result.value


def test_partial_yields_the_json_so_far(sim: Simulator) -> None:
    stream = at(SentimentAgent, sim.anthropic_url, model="anthropic/m").stream(text="I love it")
    partials = list(stream.partial())
    assert len(partials) > 1 and all(isinstance(p, dict) for p in partials)
    assert partials[-1] == stream.result.value.model_dump()  # type: ignore[union-attr]
    assert len(partials[0]) <= len(partials[-1])


def test_result_without_iterating_reads_the_whole_stream(sim: Simulator) -> None:
    stream = at(SentimentAgent, sim.base_url).stream(text="fine")
    assert isinstance(stream.result.unwrap(), Sentiment)
    assert list(stream) == []  # a stream is read once


def test_a_stream_is_read_by_one_loop(sim: Simulator) -> None:
    stream = at(SummaryAgent, sim.anthropic_url).stream(text="hi")
    first = iter(stream)
    next(first)
    with pytest.raises(RuntimeError, match="read once"):
        next(iter(stream))
    assert "".join(first) and stream.result.ok


def test_events_are_typed_deltas_then_done(sim: Simulator) -> None:
    events = list(at(SummaryAgent, sim.anthropic_url).stream(text="hi").events())
    assert all(isinstance(e, TextDelta) for e in events[:-1])
    assert isinstance(events[-1], Done) and events[-1].result.ok
    assert events[-1].result.value == "".join(e.text for e in events[:-1])  # type: ignore[union-attr]


@pytest.mark.sim(faults={"rate_limit": 1.0}, fault_attempts=2, retry_after=0.01)
def test_failures_before_the_first_delta_are_retried(sim: Simulator) -> None:
    stream = at(SummaryAgent, sim.anthropic_url, retries=ga.Retry(max=3, base=0.01)).stream(text="hi")
    assert "".join(stream).endswith('"In at most 20 words: hi".')
    assert stream.result.ok and stream.result.attempts == 3
    assert [a.status for a in stream.result.history] == [429, 429, None]


@pytest.mark.sim(faults={"reset": 1.0}, fault_attempts=1)
def test_a_connection_reset_before_any_byte_is_retried(sim: Simulator) -> None:
    stream = at(SentimentAgent, sim.base_url, retries=ga.Retry(max=1, base=0.01)).stream(text="x")
    assert stream.result.ok and stream.result.attempts == 2


@pytest.mark.parametrize("fault", ["truncated", "malformed"])
def test_a_stream_broken_after_deltas_raises_and_is_not_retried(sim_factory, fault: str) -> None:
    sim = sim_factory(faults={fault: 1.0}, **LONG)
    stream = at(SummaryAgent, sim.anthropic_url, retries=3).stream(text="hi")
    received = []
    with pytest.raises(errors.ProviderError) as raised:
        for delta in stream:
            received.append(delta)
    assert 0 < len(received) < 50
    assert stream.result.error is raised.value and not stream.result.ok
    assert stream.result.value is None and stream.text == "".join(received)
    assert sim.stats()["requests"] == 1  # the caller had part of the answer: not retried
    assert stream.result.usage is not None and stream.result.usage.prompt_tokens > 0


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_leaving_the_loop_cancels_the_request(sim_factory, provider: str) -> None:
    sim = sim_factory(**LONG)
    agent = at(SummaryAgent, "", model=f"{provider}/sim-model")
    stream = at(agent, _url(sim, agent)).stream(text="hi")
    for count, _ in enumerate(stream, 1):
        if count == 3:
            break
    result = stream.result
    assert isinstance(result.error, errors.StreamClosed) and "after 3 deltas" in str(result.error)
    assert result.usage is not None and result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens >= 3  # reported, or one per delta seen
    assert _await_status(sim, "disconnected") == {"disconnected": 1}
    assert at(agent, _url(sim, agent)).call(text="again").ok  # the pool is still good


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_result_read_from_another_greenlet_waits_for_the_reader(sim_factory, provider: str) -> None:
    """Not a half-filled Result while the stream is being read: the whole one, once it ends."""
    sim = sim_factory(**LONG)
    agent = at(SummaryAgent, "", model=f"{provider}/sim-model")
    stream = at(agent, _url(sim, agent)).stream(text="hi")
    deltas: list[str] = []
    first = gevent.event.Event()

    def read() -> None:
        for delta in stream:
            deltas.append(delta)
            first.set()

    reader = gevent.spawn(read)
    assert first.wait(10)
    result = stream.result  # the reader is mid-stream: ~1 s of deltas to go
    assert result.ok and result.value == "".join(deltas) == stream.text and len(deltas) > 10
    assert result.usage is not None and result.usage.completion_tokens > 0
    reader.get(timeout=10)


def test_result_read_inside_the_reading_loop_says_when_it_is_ready(sim: Simulator) -> None:
    agent = at(SummaryAgent, "", model="openai/sim-model")
    stream = at(agent, _url(sim, agent)).stream(text="hi")
    with pytest.raises(RuntimeError, match="inside the loop reading the stream; it is ready "
                                           "once the loop ends"):
        for _ in stream:
            stream.result  # noqa: B018  # the read under test
    assert isinstance(stream.result.error, errors.StreamClosed)  # the loop was left early


def test_close_and_with_cancel_too(sim_factory) -> None:
    sim = sim_factory(**LONG)
    agent = at(SummaryAgent, sim.anthropic_url)
    with agent.stream(text="a") as first:
        next(iter(first))
    second = agent.stream(text="b")
    next(iter(second))
    second.close()
    assert isinstance(first.result.error, errors.StreamClosed)
    assert isinstance(second.result.error, errors.StreamClosed)
    _await_status(sim, "disconnected", 2)


def _events(words: list[str]) -> bytes:
    """An OpenAI stream of ``words`` as server-sent events."""
    chunks = [{"model": "m", "choices": [{"delta": {"content": word}, "finish_reason": None}]}
              for word in words]
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks).encode() + \
        b"data: [DONE]\n\n"


def _in_flight(sim: Simulator) -> None:
    for _ in range(100):
        if sim.stats()["in_flight"]:
            return
        gevent.sleep(0.02)
    raise AssertionError(f"the simulator never had a request in flight: {sim.stats()}")


def test_close_from_another_greenlet_while_opening_cancels_the_request(sim_factory) -> None:
    """The reader waits for the answer's first token; a server's other greenlet closes it (it
    raised RuntimeError: the stream's context was entered by the reader)."""
    sim = sim_factory(latency=1.0, **LONG)
    agent = at(SummaryAgent, sim.anthropic_url, retries=0)
    stream = agent.stream(text="hi")
    reader = gevent.spawn(list, stream)
    _in_flight(sim)
    stream.close()  # returns once the Result is settled
    assert isinstance(stream.result.error, errors.StreamClosed)
    assert "after 0 deltas" in str(stream.result.error)
    with pytest.raises(errors.StreamClosed):
        reader.get(timeout=5)
    assert stream.result.attempts == 1 and stream.result.history[0].error == "StreamClosed"
    _await_status(sim, "disconnected")  # the request was cancelled: its connection closed
    assert agent.call(text="again").ok


def test_close_from_another_greenlet_mid_stream(sim_factory) -> None:
    sim = sim_factory(**LONG)
    stream = at(SummaryAgent, sim.base_url, model="openai/m").stream(text="hi")
    received: list[str] = []
    reader = gevent.spawn(lambda: received.extend(stream))
    while not stream.text:
        gevent.sleep(0.01)
    stream.close()
    with pytest.raises(errors.StreamClosed):
        reader.get(timeout=5)
    assert isinstance(stream.result.error, errors.StreamClosed) and len(received) < 50
    _await_status(sim, "disconnected")


def test_a_finished_stream_gives_its_connection_back(server: LocalServer) -> None:  # noqa: F811
    server.reply = (200, {}, _events(["All ", "of ", "it."]))
    agent = at(SummaryAgent, server.url + "/sse/v1", model="openai/m")
    for _ in range(5):
        assert agent.stream(text="x").result.value == "All of it."
    assert server.connections == 1


@pytest.mark.sim(latency=2.0)
def test_first_token_timeout(sim: Simulator) -> None:
    agent = at(SummaryAgent, sim.anthropic_url, first_token_timeout=0.2, retries=0)
    started = time.monotonic()
    with pytest.raises(errors.Timeout):
        list(agent.stream(text="hi"))
    assert time.monotonic() - started < 1.5


def test_a_retry_deadline_bounds_the_whole_stream(sim_factory) -> None:
    sim = sim_factory(answer_words=50, token_latency=0.05)  # 2.5 s of tokens
    stream = at(SummaryAgent, sim.anthropic_url, retries=ga.Retry(max=1, deadline=0.5)).stream(
        text="hi")
    started = time.monotonic()
    with pytest.raises(errors.Timeout, match="time limit"):
        list(stream)
    assert time.monotonic() - started < 1.5 and 0 < len(stream.text.split()) < 50


def test_bad_inputs_raise_when_read_and_sit_on_the_result() -> None:
    stream = SentimentAgent.stream(txt="typo")
    with pytest.raises(errors.InputError, match="unknown input"):
        list(stream)
    assert isinstance(stream.result.error, errors.InputError)


def test_streams_are_tracked_also_when_cut_short(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(**LONG)
    db = tmp_path / "runs.db"
    ga.configure(tracking=f"sqlite:///{db}")
    agent = at(SummaryAgent, sim.anthropic_url)
    assert agent.stream(text="whole").result.ok
    with agent.stream(text="cut") as stream:
        next(iter(stream))
    tracking.flush()
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    whole, cut = connection.execute("SELECT * FROM calls ORDER BY id").fetchall()
    connection.close()
    assert whole["status"] == "ok" and whole["completion_tokens"] > cut["completion_tokens"] >= 1
    assert cut["status"] == "error" and cut["error_class"] == "StreamClosed"
    assert cut["prompt_tokens"] > 0 and cut["cost_usd"] > 0


def test_many_streams_at_once_share_the_hub(sim_factory) -> None:
    sim = sim_factory(latency=0.5, **LONG)
    agent = at(SummaryAgent, sim.anthropic_url)

    def read(i: int) -> int:
        return len(list(agent.stream(text=f"call {i}")))

    started = time.monotonic()
    counts = ga.each(range(200), read, max_concurrent=200)
    assert all(r.value == 50 for r in counts)
    assert time.monotonic() - started < 20  # one by one: 300 s


def test_a_server_that_ignores_stream_true_gives_one_delta(server: LocalServer) -> None:  # noqa: F811
    answer = {"model": "m", "choices": [{"message": {"role": "assistant", "content": "All of it."},
                                          "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    server.reply = (200, {}, json.dumps(answer).encode())
    stream = at(SummaryAgent, server.url + "/v1", model="openai/m").stream(text="hi")
    assert list(stream) == ["All of it."]
    assert stream.result.value == "All of it." and stream.result.usage.total_tokens == 7  # type: ignore[union-attr]
    assert json.loads(server.requests[0][2])["stream"] is True


def test_the_answer_size_cap_applies_to_streams(sim_factory) -> None:
    sim = sim_factory(answer_words=2000)
    ga.configure(max_response_bytes=20_000)
    stream = at(SummaryAgent, sim.anthropic_url).stream(text="hi")
    with pytest.raises(errors.ResponseTooLarge, match="max_response_bytes=20,000"):
        list(stream)
    assert len(stream.text) < 20_000 and not stream.result.ok


def test_a_streams_time_limit_does_not_stay_on_its_kept_alive_connection(
        server: LocalServer) -> None:  # noqa: F811
    """A stream bounds its reads by first_token_timeout (here 0.3 s); the next request on the
    same connection has its own timeout (5 s) and may take 0.6 s."""
    server.reply = (200, {}, _events(["All ", "of ", "it."]))
    agent = at(SummaryAgent, server.url + "/sse/late/v1", model="openai/m",
               first_token_timeout=0.3)
    assert agent.stream(text="x").result.ok
    assert http.post_json(f"{server.url}/slow", {"a": 1}, {}, timeout=5).status == 200
    assert server.connections == 1


def test_a_compressed_stream_is_decoded_and_capped_decoded(server: LocalServer) -> None:  # noqa: F811
    server.reply = (200, {}, _events(["All ", "of ", "it."]))
    agent = at(SummaryAgent, server.url + "/sse/gzip/v1", model="openai/m")
    assert agent.stream(text="x").result.value == "All of it."
    server.reply = (200, {}, _events(["x" * 100] * 1000))  # ~200 KB, ~1 KB compressed
    ga.configure(max_response_bytes=20_000)
    with pytest.raises(errors.ResponseTooLarge, match="max_response_bytes=20,000"):
        list(agent.stream(text="x"))


def test_the_simulator_times_a_first_token_when_it_writes_it(sim_factory) -> None:
    """Figure 9's "late" is the client's first delta minus this moment: a simulator behind
    schedule (here: every token due at once) writes its overdue events in one go, and the first
    token counts as sent then, not when it was due — else its own lag was the client's."""
    sim = sim_factory(answer_words=20_000, token_latency=0.0)
    started = time.monotonic()
    stream = at(SummaryAgent, sim.base_url, model="openai/m").stream(text="timed")
    next(iter(stream))
    got = time.monotonic()
    stream.close()
    root = sim.base_url.removesuffix("/v1")
    sent = json.loads(urllib.request.urlopen(f"{root}/_sim/first_tokens", timeout=10).read())
    assert started < sent["In at most 20 words: timed"] <= got
    assert got - sent["In at most 20 words: timed"] < (got - started) / 2
