"""Endpoints that answer at once, with no model turn: OpenAI embeddings, Anthropic token counts.

Vectors are deterministic (same text, model and size, same vector; unit length), so retrieval
code can be tested against them; ``dimensions`` shortens them as OpenAI's v3 models do, and
``encoding_format="base64"`` (what the ``openai`` SDK asks for by default) packs float32s.

>>> vector = embeddings({"model": "text-embedding-3-small", "input": "hi", "dimensions": 4,
...                      "encoding_format": "float"})["data"][0]["embedding"]
>>> len(vector), round(sum(x * x for x in vector), 6)
(4, 1.0)
>>> count_tokens_body({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]})
{'input_tokens': 5}
"""

from __future__ import annotations

import base64
import math
import random
import struct
from collections.abc import Callable
from typing import Any

from greenagents import tokens
from greenagents.testing.shapes import InvalidRequest, digest, message_prompt

__all__ = ["ROUTES", "count_tokens_body", "embeddings"]

#: Full size per model family, as the providers document it; any other model gets 1536.
_SIZES = {"text-embedding-3-large": 3072, "text-embedding-3-small": 1536,
          "text-embedding-ada-002": 1536}


def _vector(model: str, text: str, size: int) -> list[float]:
    rng = random.Random(digest("embedding", model, text))
    values = [rng.gauss(0.0, 1.0) for _ in range(size)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(i, int) for i in raw):
        return [" ".join(map(str, raw))]  # one input given as token ids
    if isinstance(raw, list) and raw and all(isinstance(i, (str, list)) for i in raw):
        return [i if isinstance(i, str) else " ".join(map(str, i)) for i in raw]
    raise InvalidRequest("'input' must be a string, a list of strings, or token ids.")


def embeddings(body: Any) -> dict[str, Any]:
    """``POST /v1/embeddings``: one deterministic unit vector per input."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise InvalidRequest("you must provide a model parameter")
    model, texts = body["model"], _inputs(body.get("input"))
    size = body.get("dimensions")
    size = _SIZES.get(model, 1536) if size is None else size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise InvalidRequest("'dimensions' must be a positive integer.")
    encode = body.get("encoding_format", "float")
    if encode not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.")
    data = []
    for index, text in enumerate(texts):
        vector: Any = _vector(model, text, size)
        if encode == "base64":
            vector = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    count = sum(tokens.estimate(text) for text in texts)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": count, "total_tokens": count}}


def count_tokens_body(body: Any) -> dict[str, Any]:
    """``POST /v1/messages/count_tokens``: the estimate a messages call with this body would use."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise InvalidRequest("messages: Field required")
    system = body.get("system") or ""
    prompt_system = system if isinstance(system, str) else " ".join(
        part.get("text", "") for part in system if isinstance(part, dict))
    _, count = message_prompt(body["messages"], prompt_system)
    return {"input_tokens": count}


#: Path -> handler of a JSON body; the server registers these (POST only).
ROUTES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "/v1/embeddings": embeddings,
    "/v1/messages/count_tokens": count_tokens_body,
}
