"""OpenTelemetry spans for calls, attempts, turns and tool calls, after the GenAI conventions.

Turned on by ``ga.configure(otel=True)`` (or ``GREENAGENTS_OTEL=1``); needs the ``otel`` extra
(``pip install 'greenagents[otel]'``). Spans go to the global tracer provider — whatever your
process set up (the SDK with an OTLP exporter, ``opentelemetry-instrument``, a vendor's
distro) — so LangSmith, Langfuse, Datadog, Honeycomb or Grafana receive them as they receive
the rest of your traces::

    import greenagents.monkey
    import greenagents as ga
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    ga.configure(otel=True)

The tree: a span per call (``invoke_agent SentimentAgent`` for an agent, ``call module.fn`` for
any callable in ``ga.batch``), a ``chat <model>`` child per attempt (retries and fallbacks each
have one), and, for agents with tools, ``turn <n>`` and ``execute_tool <name>`` children. The
caller's current span is the parent: the runtime runs each call in a copy of the caller's
``contextvars`` context, and ``greenagents.celery`` carries it to the workers in the messages'
headers. Waits (retry backoffs, cooldowns, rate-limit budgets) are span events on the call, and
their totals are attributes.

Prompts and answers go on the attempt spans only when asked for — ``otel_capture_content=True``
or the conventions' ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` — as
``gen_ai.input.messages`` / ``gen_ai.output.messages``, with anything shaped like an API key
(and the keys in ``*_API_KEY`` variables) masked.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import __version__, hooks
from .config import settings
from .errors import redact

__all__ = ["KINDS", "extract", "inject", "listener"]

tracer = trace.get_tracer("greenagents", __version__)

KINDS = (hooks.CallStarted, hooks.CallEnded, hooks.AttemptStarted, hooks.AttemptEnded,
         hooks.WaitEnded, hooks.CooldownStarted, hooks.TurnStarted, hooks.TurnEnded,
         hooks.ToolCallStarted, hooks.ToolCallEnded)

_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def _capturing() -> bool:
    return settings().otel_capture_content or os.environ.get(_CONTENT_ENV, "").lower() == "true"


def _masked(value: Any) -> str:
    keys = [v for k, v in os.environ.items() if k.endswith("_API_KEY") and len(v) >= 8]
    return redact(json.dumps(value, default=str, ensure_ascii=False), *keys)


def _open(call: hooks.CallInfo | None, key: str, name: str, kind: SpanKind,
          attributes: Mapping[str, Any]) -> None:
    """Start a span, current until :func:`_close` with the same ``key`` (in the same context)."""
    span = tracer.start_span(name, kind=kind, attributes=attributes)
    token = context.attach(trace.set_span_in_context(span))
    if call is not None:
        call.data[key] = (span, token)


def _close(call: hooks.CallInfo | None, key: str) -> Span | None:
    opened = call.data.pop(key, None) if call is not None else None
    if opened is None:
        return None
    span, token = opened
    with contextlib.suppress(Exception):  # whatever happened to the context, the span ends
        context.detach(token)
    return span  # type: ignore[no-any-return]


def _fail(span: Span, error: BaseException | str | None) -> None:
    if error is None:
        return
    name = error if isinstance(error, str) else type(error).__name__
    span.set_attribute("error.type", name)
    span.set_status(Status(StatusCode.ERROR, name if isinstance(error, str) else redact(str(error))))


def _model_name(model: str | None) -> str:
    return (model or "").partition("/")[2] or (model or "")


def _on_call_end(call: hooks.CallInfo, result: Any) -> None:
    span = _close(call, "otel.call")
    if span is None:
        return
    attributes: dict[str, Any] = {"greenagents.attempts": result.attempts,
                                  "greenagents.duration_s": result.duration_s}
    if result.model:
        attributes["greenagents.model"] = result.model
        attributes["gen_ai.response.model"] = _model_name(result.model)
    if result.usage is not None:
        attributes["gen_ai.usage.input_tokens"] = result.usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = result.usage.completion_tokens
    if result.cost_usd is not None:
        attributes["greenagents.cost_usd"] = result.cost_usd
    if result.cached:
        attributes["greenagents.cache_hit"] = True
    waited = sum(getattr(entry, "wait_s", 0.0) for entry in result.history)  # ToolCalls: none
    if waited:
        attributes["greenagents.retry_wait_s"] = waited
    for kind in ("cooldown", "rate_limit"):
        if f"otel.{kind}" in call.data:
            attributes[f"greenagents.{kind}_wait_s"] = call.data[f"otel.{kind}"]
    span.set_attributes(attributes)
    _fail(span, result.error)
    span.end()


def listener(event: hooks.Event) -> None:
    """The hooks listener behind ``otel=True``."""
    call = event.call
    if isinstance(event, hooks.CallStarted) and call is not None:
        short = call.target.rpartition(".")[2]
        attributes: dict[str, Any] = {"greenagents.target": call.target}
        if call.index is not None:
            attributes["greenagents.index"] = call.index
        if call.agent:
            attributes.update({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": short})
        _open(call, "otel.call", f"invoke_agent {short}" if call.agent else f"call {call.target}",
              SpanKind.INTERNAL, attributes)
    elif isinstance(event, hooks.CallEnded) and call is not None:
        _on_call_end(call, event.result)
    elif isinstance(event, hooks.AttemptStarted):
        model = _model_name(event.model)
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": event.provider,
                      "gen_ai.provider.name": event.provider, "gen_ai.request.model": model,
                      "greenagents.attempt": event.number}
        if _capturing():
            attributes["gen_ai.input.messages"] = _masked(list(event.messages))
        _open(call, "otel.attempt", f"chat {model}", SpanKind.CLIENT, attributes)
    elif isinstance(event, hooks.AttemptEnded):
        span = _close(call, "otel.attempt")
        if span is None:
            return
        if event.response_model:
            span.set_attribute("gen_ai.response.model", event.response_model)
        if event.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [event.finish_reason])
        if event.usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", event.usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", event.usage.completion_tokens)
        if event.attempt.status is not None:
            span.set_attribute("http.response.status_code", event.attempt.status)
        if event.text is not None and _capturing():
            span.set_attribute("gen_ai.output.messages", _masked(
                [{"role": "assistant", "content": event.text}]))
        _fail(span, event.error)
        span.end()
    elif isinstance(event, hooks.WaitEnded) and event.kind != "slot":
        trace.get_current_span().add_event("greenagents.wait", {
            "greenagents.wait.kind": event.kind, "greenagents.wait.scope": event.scope,
            "greenagents.wait.seconds": event.seconds})
        if call is not None and event.kind in ("cooldown", "rate_limit"):
            key = f"otel.{event.kind}"
            call.data[key] = call.data.get(key, 0.0) + event.seconds
    elif isinstance(event, hooks.CooldownStarted):
        trace.get_current_span().add_event("greenagents.cooldown", {
            "greenagents.cooldown.scope": event.scope,
            "greenagents.cooldown.seconds": event.seconds})
    else:
        _on_turn_or_tool(event)


def _on_turn_or_tool(event: hooks.Event) -> None:
    call = event.call
    if isinstance(event, hooks.TurnStarted):
        _open(call, f"otel.turn.{event.number}", f"turn {event.number}", SpanKind.INTERNAL,
              {"greenagents.turn": event.number,
               "gen_ai.request.model": _model_name(event.model)})
    elif isinstance(event, hooks.TurnEnded):
        span = _close(call, f"otel.turn.{event.number}")
        if span is not None:
            span.set_attribute("greenagents.tool_calls", event.tool_calls)
            _fail(span, event.error)
            span.end()
    elif isinstance(event, hooks.ToolCallStarted):
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": event.name,
                      "gen_ai.tool.call.id": event.id}
        if _capturing():
            attributes["gen_ai.tool.call.arguments"] = _masked(dict(event.arguments))
        _open(call, f"otel.tool.{event.id}", f"execute_tool {event.name}", SpanKind.INTERNAL,
              attributes)
    elif isinstance(event, hooks.ToolCallEnded):
        span = _close(call, f"otel.tool.{event.id}")
        if span is not None:
            _fail(span, event.error)
            span.end()


def inject(carrier: dict[str, Any]) -> None:
    """Write the current trace context into ``carrier`` (a Celery message's headers)."""
    propagate.inject(carrier)


def extract(carrier: Any) -> object:
    """Make the trace context carried by ``carrier`` (a task's request) current; a token for
    :func:`context.detach`."""
    remote = propagate.extract(carrier, getter=_AttributeGetter())
    return context.attach(remote)


class _AttributeGetter(Getter[Any]):
    """Reads propagation fields from a Celery request, where message headers become attributes."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = getattr(carrier, key, None)
        if value is None and isinstance(getattr(carrier, "headers", None), dict):
            value = carrier.headers.get(key)
        return None if value is None else [value] if isinstance(value, str) else list(value)

    def keys(self, carrier: Any) -> list[str]:
        return list(getattr(carrier, "__dict__", {}))
