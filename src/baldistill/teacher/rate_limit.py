"""Client-side rate limits (`teacher.rpm`, `teacher.tpm`) and the server's own signals.

Providers cap requests and tokens per minute and answer 429 beyond them;
hammering into 429s wastes attempts and, with retries exhausted, fails a
step. So the client holds its own pace and listens to the server:

* rpm / tpm: a token bucket each, refilled continuously at limit/60 per
  second; the request bucket holds one request, the token bucket one
  second's worth. A smooth pace, not a burst of a whole minute's allowance:
  providers enforce limits over short windows too (OpenAI quantizes per
  second), and a burst would meet a 429 at once.
  A request's tokens are estimated as OpenAI's limiter counts them: its
  prompt at 4 bytes a token plus its max_tokens.
* `x-ratelimit-remaining-requests` / `-tokens` at 0: nothing more is sent
  until the matching `x-ratelimit-reset-*` ("1s", "6m0s", "250ms") has passed.
* a 429's `retry-after`: every request waits it out, not only the refused one.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence

from baldistill.teacher.spending import message_bytes

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def reset_seconds(value: str | None) -> float | None:
    """OpenAI's x-ratelimit-reset-* ("1s", "6m0s", "20ms", or a bare number of seconds)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parts = _DURATION.findall(value.strip())
        return sum(float(n) * _SECONDS[unit] for n, unit in parts) if parts else None


def request_tokens(messages: Sequence[dict], max_tokens: int) -> int:
    """What a rate limiter counts for a request: the prompt at ~4 bytes a token, plus max_tokens."""
    return math.ceil(message_bytes(messages) / 4) + max_tokens


class Bucket:
    """`per_minute` units a minute, refilled continuously, holding at most `capacity`
    (default: one second's worth)."""

    def __init__(self, per_minute: float, now: float, capacity: float | None = None):
        self.rate = per_minute / 60.0
        self.capacity = capacity if capacity is not None else max(1.0, self.rate)
        self.level, self.stamp = self.capacity, now

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until `amount` units can be taken (amounts above capacity wait for a full bucket)."""
        self._refill(now)
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= min(amount, self.capacity)


class RateLimiter:
    """Paces one step's requests: rpm/tpm buckets (None: unlimited) and the server's signals."""

    def __init__(self, rpm: int | None, tpm: int | None, clock: Callable[[], float] = time.monotonic):
        now = clock()
        self.clock = clock
        self.requests = Bucket(rpm, now, capacity=1.0) if rpm else None  # evenly spaced, never two at once
        self.tokens = Bucket(tpm, now) if tpm else None
        self.paused_until = 0.0
        self.waited = 0.0  # seconds requests spent held back (for reports and the bench)
        # One limiter serves a step's batches, each in its own event loop (asyncio.run):
        # the turn lock is made anew in each loop; the pause and buckets carry over.
        self._turn: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def delay(self, tokens: int, now: float) -> float:
        """Seconds a request of `tokens` must wait before it may be sent."""
        waits = [self.paused_until - now]
        waits += [b.wait(n, now) for b, n in ((self.requests, 1), (self.tokens, tokens)) if b is not None]
        return max(0.0, *waits)

    def take(self, tokens: int, now: float) -> None:
        for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
            if bucket is not None:
                bucket.take(amount, now)

    async def acquire(self, tokens: int) -> None:
        """Wait for this request's turn (first come, first served), then count it."""
        if self._loop is not asyncio.get_running_loop():
            self._turn, self._loop = asyncio.Lock(), asyncio.get_running_loop()
        async with self._turn:
            while (wait := self.delay(tokens, self.clock())) > 0:
                self.waited += wait
                await asyncio.sleep(wait)
            self.take(tokens, self.clock())

    def pause(self, seconds: float | None) -> None:
        """Hold every request for `seconds` (a 429's retry-after, or a reset the server announced)."""
        if seconds:
            self.paused_until = max(self.paused_until, self.clock() + seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Follow the server's x-ratelimit-* headers: none left means wait for the reset."""
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            if remaining is not None and remaining.strip() in ("0", "0.0"):
                self.pause(reset_seconds(headers.get(f"x-ratelimit-reset-{kind}")) or 1.0)
