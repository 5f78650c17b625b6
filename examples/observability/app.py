"""A Flask app whose requests fan out to agents, with traces and metrics: see README.md beside it.

- ``GET /review?text=...``: three agents on the text through ``ga.batch``; one trace shows the
  request, its three calls and their attempts.
- ``GET /metrics``: Prometheus metrics of every gunicorn worker (multiprocess mode).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from opentelemetry import trace
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import greenagents as ga
from greenagents import prometheus

MODEL = "openai/gpt-4o-mini"  # at OPENAI_BASE_URL, key OPENAI_API_KEY


class SentimentAgent(ga.Agent):
    model = MODEL
    instructions = "Classify the sentiment of the text in one word."

    def prompt(self, text: str) -> str:
        return text


class SummaryAgent(ga.Agent):
    model = MODEL
    instructions = "Summarise the text in one sentence."

    def prompt(self, text: str) -> str:
        return text


class TitleAgent(ga.Agent):
    model = MODEL
    instructions = "Give the text a title of at most five words."

    def prompt(self, text: str) -> str:
        return text


flask_app = Flask(__name__)
tracer = trace.get_tracer(__name__)  # opentelemetry-instrumentation-flask would make this span


@flask_app.get("/review")
def review() -> dict[str, Any]:
    text = request.args.get("text", "")
    with tracer.start_as_current_span("GET /review"):  # the calls' spans are its children
        results = ga.batch([(agent, {"text": text})
                            for agent in (SentimentAgent, SummaryAgent, TitleAgent)])
    return {"ok": all(r.ok for r in results), "answers": [r.value for r in results]}


app = DispatcherMiddleware(flask_app, {"/metrics": prometheus.wsgi_app()})
