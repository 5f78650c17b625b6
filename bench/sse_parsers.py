"""SSE framing, measured: greenagents' hand parser against the openai SDK's and httpx-sse's.

Not a figure (nothing to plot): the numbers are quoted in ``greenagents/sse.py``. Run with
``python -m bench.sse_parsers``; httpx-sse is measured when installed.
"""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import Callable, Iterator

from greenagents.sse import SSEParser

TOKENS = 200
ROUNDS = 200


def openai_stream(tokens: int = TOKENS) -> bytes:
    """An OpenAI-shaped chat.completion.chunk stream of ``tokens`` one-word deltas."""
    head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    events = [{**head, "choices": [{"index": 0, "delta": {"content": f"word{i} "},
                                    "finish_reason": None}]} for i in range(tokens)]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return body + b"data: [DONE]\n\n"


def splits(body: bytes, size: int) -> list[bytes]:
    return [body[i:i + size] for i in range(0, len(body), size)]


def ours(chunks: list[bytes]) -> list[tuple[str | None, bytes]]:
    parser = SSEParser()
    return [(e.name, e.data) for chunk in chunks for e in parser.feed(chunk)]


def openai_sdk(chunks: list[bytes]) -> list[tuple[str | None, bytes]]:
    from openai._streaming import SSEDecoder

    return [(e.event, e.data.encode()) for e in SSEDecoder().iter_bytes(iter(chunks))]


def httpx_sse_parser(chunks: list[bytes]) -> list[tuple[str | None, bytes]]:
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder

    text = codecs.getincrementaldecoder("utf-8")()
    lines, decoder = SSELineDecoder(), SSEDecoder()

    def events() -> Iterator[tuple[str | None, bytes]]:
        for chunk in chunks:
            for line in lines.decode(text.decode(chunk)):
                event = decoder.decode(line)
                if event is not None:
                    yield (event.event if event.event != "message" else None), event.data.encode()
    return list(events())


def per_event_us(parse: Callable[[list[bytes]], list[tuple[str | None, bytes]]],
                 chunks: list[bytes], count: int) -> float:
    start = time.perf_counter()
    for _ in range(ROUNDS):
        parse(chunks)
    return (time.perf_counter() - start) / ROUNDS / count * 1e6


def main() -> None:
    body = openai_stream()
    count = TOKENS + 1
    parsers: dict[str, Callable[[list[bytes]], list[tuple[str | None, bytes]]]] = {
        "greenagents": ours, "openai SDK": openai_sdk}
    try:
        import httpx_sse  # noqa: F401
        parsers["httpx-sse"] = httpx_sse_parser
    except ImportError:
        pass
    whole = [e + b"\n\n" for e in body.split(b"\n\n") if e]
    for name, parse in parsers.items():
        assert parse(whole) == ours(whole), name
        one = per_event_us(parse, whole, count)
        five = per_event_us(parse, [b"".join(whole[i:i + 5]) for i in range(0, len(whole), 5)],
                            count)
        small = per_event_us(parse, splits(body, 7), count)
        print(f"{name:12s} {one:5.2f} µs/event (one read per event)  {five:5.2f} (five per read)"
              f"  {small:5.2f} (7-byte reads)")


if __name__ == "__main__":
    main()
