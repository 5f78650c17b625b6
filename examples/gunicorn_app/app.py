"""A Flask app whose endpoints run greenagents agents: one per request, or five at once.

Serve it with gevent workers (see ``gunicorn.conf.py`` and the README beside this file)::

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 gunicorn -c gunicorn.conf.py

- ``GET /sentiment?text=...``: one agent call per request; thousands of requests wait on the
  model at once, each in its own greenlet of the gevent worker.
- ``GET|POST /analyze``: five analysis agents on one text through ``ga.batch``: the request
  takes about as long as the slowest agent, not the sum of the five.
- ``GET|POST /stream``: the summary as Server-Sent Events, word by word as the model writes it
  (``SummaryAgent.stream``); a client that goes away cancels its model call.
- ``GET /trip?city=...``: a tool-using agent; its tools are plain ``requests`` calls to a tool
  service at ``TOOLS_URL``, one turn's two calls at once, every request's calls waiting together.

The app neither patches nor knows its server: under gunicorn's gevent worker the process is
patched (by ``gunicorn.conf.py``) and the batch runs in greenlets; under a thread server
(``-k gthread``) the same batch runs in real threads, with a ``NotPatchedWarning`` saying so.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any, Literal

import requests
from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, Field

import greenagents as ga

MODEL = "openai/gpt-4o-mini"  # at OPENAI_BASE_URL (any OpenAI-compatible server), key OPENAI_API_KEY
# The tools' HTTP service, e.g. `python -m greenagents.testing.toolserver --port 8001 --latency 1`
TOOLS_URL = os.environ.get("TOOLS_URL", "http://127.0.0.1:8001")


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0, le=1)


class Category(BaseModel):
    topic: Literal["shipping", "quality", "price", "service", "other"]


class Keywords(BaseModel):
    keywords: list[str] = Field(max_length=5)


class Language(BaseModel):
    code: str = Field(description="ISO 639-1 code of the text's language, e.g. 'en'")


class SentimentAgent(ga.Agent):
    model = MODEL
    instructions = "Classify the sentiment of the text."
    output = Sentiment

    def prompt(self, text: str) -> str:
        return text


class SummaryAgent(ga.Agent):
    model = MODEL
    instructions = "Summarise the text in one sentence."

    def prompt(self, text: str) -> str:
        return text


class CategoryAgent(ga.Agent):
    model = MODEL
    instructions = "Say which topic the customer review is mainly about."
    output = Category

    def prompt(self, text: str) -> str:
        return text


class KeywordsAgent(ga.Agent):
    model = MODEL
    instructions = "List at most five keywords of the text."
    output = Keywords

    def prompt(self, text: str) -> str:
        return text


class LanguageAgent(ga.Agent):
    model = MODEL
    instructions = "Detect the language of the text."
    output = Language

    def prompt(self, text: str) -> str:
        return text


def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
    """Current weather for a city."""
    return requests.get(f"{TOOLS_URL}/weather/{city}", params={"unit": unit}, timeout=30).text


def find_hotels(city: str, nights: int = 1) -> str:
    """Hotels in a city, for a number of nights."""
    return requests.get(f"{TOOLS_URL}/hotels", params={"city": city, "nights": nights},
                        timeout=30).text


class TripAgent(ga.Agent):
    model = MODEL
    instructions = "Plan a weekend: check the weather and find a hotel, then suggest a plan."
    tools = (get_weather, find_hotels)  # plain blocking functions; one turn's calls run at once

    def prompt(self, city: str) -> str:
        return f"A weekend in {city}."


ANALYSES: dict[str, type[ga.Agent]] = {
    "sentiment": SentimentAgent,
    "summary": SummaryAgent,
    "category": CategoryAgent,
    "keywords": KeywordsAgent,
    "language": LanguageAgent,
}

app = Flask(__name__)


def _text() -> str:
    body = request.get_json(silent=True) or {}
    return str(body.get("text") or request.args.get("text", ""))


def _jsonable(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


@app.get("/sentiment")
def sentiment() -> tuple[Response, int]:
    """One agent call: the request's greenlet waits on the model, the worker serves others."""
    result = SentimentAgent.call(text=_text())
    if not result.ok:
        return jsonify(error=f"{type(result.error).__name__}: {result.error}"), 502
    return jsonify(_jsonable(result.value)), 200


@app.route("/analyze", methods=["GET", "POST"])
def analyze() -> tuple[Response, int]:
    """Five agents on one text, concurrently: about one model latency in all, not five."""
    text, started = _text(), time.perf_counter()
    results = ga.batch([(agent, {"text": text}) for agent in ANALYSES.values()],
                       max_concurrent=len(ANALYSES))
    outcomes = dict(zip(ANALYSES, results, strict=True))
    answers = {name: _jsonable(r.value) for name, r in outcomes.items() if r.ok}
    failures = {name: f"{type(r.error).__name__}: {r.error}" for name, r in outcomes.items() if not r.ok}
    body = {"analyses": answers, "errors": failures, "seconds": time.perf_counter() - started}
    return jsonify(body), 502 if failures else 200


@app.get("/trip")
def trip() -> tuple[Response, int]:
    """A tool-using agent: model turn, both tools at once (HTTP to TOOLS_URL), model turn."""
    result = TripAgent.call(city=request.args.get("city", "Lisbon"))
    if not result.ok:
        return jsonify(error=f"{type(result.error).__name__}: {result.error}"), 502
    return jsonify(plan=result.value, turns=result.turns, tool_calls=len(result.tool_calls),
                   tool_errors=result.tool_errors), 200


def _sse(data: Any, event: str | None = None) -> str:
    return (f"event: {event}\n" if event else "") + f"data: {json.dumps(data)}\n\n"


@app.route("/stream", methods=["GET", "POST"])
def stream() -> Response:
    """The summary as Server-Sent Events: one ``data:`` (a JSON string) per delta, then ``event:
    done`` (tokens, cost) or ``event: error``.

    When the client hangs up, gunicorn closes this generator on its next write; leaving the
    ``with`` block closes the stream, which cancels the model call (its connection is closed).
    """
    answer = SummaryAgent.stream(text=_text())

    def events() -> Iterator[str]:
        with answer:
            try:
                for delta in answer:
                    yield _sse(delta)
            except ga.errors.GreenAgentsError as exc:
                yield _sse(f"{type(exc).__name__}: {exc}", "error")
                return
            result = answer.result
            tokens = result.usage.total_tokens if result.usage else None
            yield _sse({"tokens": tokens, "cost_usd": result.cost_usd}, "done")

    return Response(events(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
