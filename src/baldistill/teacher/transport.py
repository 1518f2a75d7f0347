"""The wire: HTTP attempts through the `openai` SDK and the retry loop around them.

Why not the SDK's own retries: we must retry failures the SDK treats as
success (malformed JSON), honour Retry-After dates, and journal and price
every attempt before and after it is sent (an `AttemptMeter`, client.py), so
the SDK runs with max_retries=0 and this module owns the loop. 408, 409, 429,
5xx, connection errors, timeouts and unreadable bodies are retried with
exponential backoff and jitter (or after the server's Retry-After, capped);
400, 401, 403 and 404 fail at once with one line saying what to check.

An answer with no usable text (empty content, or finish_reason "length"
before any text: a reasoning model that spent max_tokens thinking) is billed
and, greedy or seeded, comes back the same when asked the same way: it is
asked once more, then returned as it is, for the step to drop the row and
count why (messages.py `unusable`), never retried up to max_retries times.

What each attempt tells the meter: an answer with usage was billed at that
usage; an error status was not billed; a timeout, a dropped connection or an
unreadable body leaves its fate unknown (the provider may have answered and
billed it), so it keeps its worst case.

Rate limits (rate_limit.py): with a RateLimiter each attempt waits for its
turn under teacher.rpm / teacher.tpm, every answer's x-ratelimit-* headers are
followed, and a 429's retry-after holds back every request, not only its own.

The API key lives only inside the SDK client and is scrubbed from every error
message, even when a server echoes it back.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

import openai

from baldistill.core.errors import BaldistillError
from baldistill.teacher.messages import unusable
from baldistill.teacher.rate_limit import RateLimiter, request_tokens
from baldistill.teacher.usage import Usage

FATAL_HINTS = {
    400: "the server rejected the request; check teacher.model and teacher.max_tokens",
    401: "check the API key in ${env}",
    403: "the API key in ${env} is not allowed to use this model",
    404: "check teacher.base_url and teacher.model",
}
MAX_RETRY_AFTER = 300.0
UNUSABLE_TRIES = 2  # an answer without text is asked once more, not max_retries times


class AttemptMeter(Protocol):
    """What the retry loop tells about each attempt (client.py's `_Meter` journals and prices them)."""

    async def before(self) -> Any:
        """Reserve and journal the attempt about to be sent; returns its ticket (may raise: the cap refuses)."""

    async def billed(self, ticket: Any, answer: dict) -> None:
        """An answer with its usage that is not kept (it is asked again)."""

    async def unbilled(self, ticket: Any) -> None:
        """An error status: nothing billed."""

    async def lost(self, ticket: Any) -> None:
        """No usage came back: possibly billed, up to its worst case."""

    def unknown(self, ticket: Any) -> None:
        """`lost`, for an attempt cancelled while in flight (synchronous: a cancelled task awaits nothing)."""


@dataclass(frozen=True)
class Answered:
    """The attempt whose answer is kept: `priced` if the server sent its usage."""

    answer: dict
    ticket: Any
    priced: bool


class Unreadable(Exception):
    """A 200 whose body is not a chat completion: the server may have billed it."""


class Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's wish in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(reason)
        self.retry_after, self.status = retry_after, status


@dataclass(frozen=True)
class RetryPolicy:
    """How often a request is tried again, and how long to wait in between."""

    max_retries: int = 6
    backoff: float = 0.5  # the first delay in seconds; it doubles per attempt, jittered
    max_backoff: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After if the server gave one (capped), else exponential backoff with jitter."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)


class Transport:
    """One SDK client for one batch: at most `concurrency` requests in flight,
    each attempt cut off after `timeout` seconds. Use as `async with`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        concurrency: int,
        timeout: float,
        retry: RetryPolicy,
        api_key_env: str,
        limiter: RateLimiter | None = None,
    ):
        self.base_url, self.timeout, self.retry, self.api_key_env = base_url, timeout, retry, api_key_env
        self.limiter = limiter
        self._api_key = api_key  # only to scrub it from error messages
        self._sdk = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
        self._slots = asyncio.Semaphore(concurrency)

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r})"

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sdk.close()

    async def ask(self, body: dict, usage: Usage, meter: AttemptMeter) -> Answered:
        """The kept answer to the chat completion `body`, retrying transient failures; every
        attempt goes through `meter` and is counted in `usage`. Raises BaldistillError (one
        line) when the request is refused or retries run out."""
        last, empty = "no attempt", 0
        tokens = request_tokens(body["messages"], body.get("max_tokens") or 0)
        for attempt in range(self.retry.max_retries + 1):
            if attempt:
                usage.retries += 1
            retry_after = None
            async with self._slots:
                # Inside the slot: a 429 that sets a pause is seen by the next request to get one.
                if self.limiter is not None:
                    await self.limiter.acquire(tokens)
                ticket = await meter.before()
                usage.http_attempts += 1
                try:
                    text = await asyncio.wait_for(self._post(body), self.timeout)
                except BaldistillError:  # refused for good
                    await meter.unbilled(ticket)
                    raise
                except Transient as exc:
                    await self._failed(exc, ticket, meter, usage)
                    last, retry_after = str(exc), exc.retry_after
                    text = None
                except asyncio.TimeoutError:
                    await meter.lost(ticket)
                    last, text = f"no answer within teacher.timeout={self.timeout:g}s", None
                except BaseException:  # cancelled while in flight: it may still be answered and billed
                    meter.unknown(ticket)
                    raise
            if text is not None:
                try:
                    answer, priced = read_completion(text)
                except Unreadable as exc:
                    await meter.lost(ticket)
                    last = str(exc)
                else:
                    why = unusable(answer)
                    empty += why is not None
                    if why is None or empty >= UNUSABLE_TRIES or attempt == self.retry.max_retries:
                        return Answered(answer, ticket, priced)
                    await (meter.billed(ticket, answer) if priced else meter.lost(ticket))
                    last = why
            if attempt < self.retry.max_retries:
                await asyncio.sleep(self.retry.delay(attempt, retry_after))
        raise BaldistillError(
            f"teacher request failed after {self.retry.max_retries + 1} attempt(s) at {self.base_url}: "
            f"{scrub(last, self._api_key)}"
        )

    async def _failed(self, exc: Transient, ticket: Any, meter: AttemptMeter, usage: Usage) -> None:
        """A transient failure: an error status was not billed; a lost connection may have been."""
        if exc.status is None:
            await meter.lost(ticket)
            return
        await meter.unbilled(ticket)
        if exc.status == 429:
            usage.rate_limited += 1
            if self.limiter is not None:  # everyone waits, not only this request
                self.limiter.pause(exc.retry_after)

    async def _post(self, body: dict) -> str:
        """One HTTP attempt; returns the raw body, or raises Transient / BaldistillError."""
        try:
            raw = await self._sdk.chat.completions.with_raw_response.create(**body)
            if self.limiter is not None:
                self.limiter.observe(raw.headers)
            return raw.text
        except openai.APIStatusError as exc:
            status = exc.status_code
            if self.limiter is not None:
                self.limiter.observe(exc.response.headers)
            if status in (408, 409, 429) or status >= 500:
                retry_after = retry_after_seconds(exc.response.headers.get("retry-after"))
                raise Transient(f"HTTP {status}", retry_after, status) from None
            raise BaldistillError(self._fatal_message(status, exc)) from None
        except openai.APIConnectionError as exc:  # includes the SDK's own timeout
            raise Transient(f"connection error ({type(exc).__name__}: {exc})") from None

    def _fatal_message(self, status: int, exc: openai.APIStatusError) -> str:
        hint = FATAL_HINTS.get(status, "the server refused the request").replace("${env}", f"${self.api_key_env}")
        detail = " ".join(_server_message(exc).split())[:200]
        message = f"teacher refused the request: HTTP {status} from {self.base_url}: {detail} ({hint})"
        return scrub(message, self._api_key)


def scrub(text: str, secret: str | None) -> str:
    """`text` on one line, with `secret` (the API key) masked."""
    text = " ".join(str(text).split())
    return text.replace(secret, "***") if secret else text


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        return str(error.get("message", error) if isinstance(error, dict) else error)
    return str(body or exc.message)


def read_completion(text: str) -> tuple[dict, bool]:
    """(answer fields, whether the body carried its usage) of a chat-completion body;
    raises Unreadable for one that is not. The content may be empty (see `unusable`)."""
    try:
        obj = json.loads(text)
        choice = obj["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise Unreadable("malformed JSON in the response") from None
    if content is not None and not isinstance(content, str):
        raise Unreadable("malformed JSON in the response")
    usage = obj.get("usage")
    priced = isinstance(usage, dict) and usage.get("prompt_tokens") is not None
    usage = usage if isinstance(usage, dict) else {}
    answer = {
        "content": content or "",
        "finish_reason": choice.get("finish_reason"),
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }
    return answer, priced


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date (RFC 9110); None if absent/invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
