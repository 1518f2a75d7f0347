"""What the pipeline asks the teacher and what it gets back: Request and Response.

Their own module so that the client (client.py), the Batch API path
(batch.py) and the step modules all share them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from baldistill.teacher.answers import key_material

EMPTY = "empty answer"
NO_TEXT_BEFORE_MAX_TOKENS = "no text before max_tokens"


@dataclass(frozen=True)
class Request:
    """One chat completion; `sample` tells apart repeated draws of a sampled prompt."""

    messages: tuple[dict, ...]
    temperature: float
    max_tokens: int
    sample: int | None = None

    @classmethod
    def user(cls, prompt: str, temperature: float, max_tokens: int, sample: int | None = None) -> Request:
        return cls(({"role": "user", "content": prompt},), temperature, max_tokens, sample)

    def material(self, model: str) -> dict:
        """What the answer depends on: the cache key's input, stored beside the answer."""
        return key_material(model, list(self.messages), self.temperature, self.max_tokens, self.sample)

    def body(self, model: str) -> dict:
        """The chat-completion request body sent on the wire."""
        # A sampled request carries its sample index as the seed: servers that honour
        # `seed` (OpenAI, vLLM, llama.cpp) then make synthesis reproducible, and
        # repeated draws of one prompt stay distinct requests on the wire too.
        seed = {} if self.sample is None else {"seed": self.sample}
        return {
            "model": model,
            "messages": list(self.messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **seed,
        }


def unusable(answer: dict) -> str | None:
    """Why an answer has no text to use (None: it has): empty content, or a model (e.g. a
    reasoning one) that spent max_tokens before writing any. Asking again the same way
    fails the same way (seeded or greedy), so these are not retried blindly (transport.py)."""
    if str(answer.get("content") or "").strip():
        return None
    return NO_TEXT_BEFORE_MAX_TOKENS if answer.get("finish_reason") == "length" else EMPTY


@dataclass(frozen=True)
class Response:
    """An answer to one request; `failure` says why it has no usable text (None: it has)."""

    key: str
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    failure: str | None = None

    @classmethod
    def of(cls, key: str, answer: dict, *, cached: bool) -> Response:
        return cls(
            key=key,
            content=answer.get("content") or "",
            finish_reason=answer.get("finish_reason"),
            prompt_tokens=int(answer.get("prompt_tokens", 0)),
            completion_tokens=int(answer.get("completion_tokens", 0)),
            cached=cached,
            failure=unusable(answer),
        )
