"""teacher.rpm / teacher.tpm and the server's rate-limit signals: the pacing maths
on a simulated clock, and the client against a real loopback server (request
times are read on the server; only lower bounds, which a slow machine only widens)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baldistill.teacher.client import Request
from baldistill.teacher.rate_limit import Bucket, RateLimiter, request_tokens, reset_seconds

from support.teacher_fakeserver import Action, FakeTeacher
from support.teacher_helpers import make_client


@pytest.mark.parametrize(
    "text, seconds",
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3s", 3723.0), ("2.5", 2.5), ("", None), ("soon", None)],
)
def test_reset_headers_are_read_as_seconds(text, seconds):
    assert reset_seconds(text) == (pytest.approx(seconds) if seconds is not None else None)


@given(per_minute=st.integers(1, 10_000), gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=200))
def test_a_bucket_never_passes_its_rate_plus_one_seconds_worth(per_minute, gaps):
    """Taking whenever allowed, over any stretch of time: at most rate x time + capacity."""
    now, bucket, taken = 0.0, Bucket(per_minute, 0.0), 0
    for gap in gaps:
        now += gap + bucket.wait(1, now + gap)  # wait as the limiter would, then take
        bucket.take(1, now)
        taken += 1
    assert taken <= per_minute / 60 * now + bucket.capacity + 1e-6


def test_the_limiter_waits_for_the_slower_of_its_buckets_and_for_a_pause():
    clock = [0.0]
    limiter = RateLimiter(rpm=60, tpm=600, clock=lambda: clock[0])  # 1 request/s, 10 tokens/s
    assert limiter.delay(5, 0.0) == 0
    limiter.take(10, 0.0)  # the token bucket (capacity 10) is empty: 10 tokens need 1 s
    assert limiter.delay(5, 0.0) == pytest.approx(1.0)  # the request bucket: 1 s as well
    limiter.pause(3.0)
    assert limiter.delay(1, 0.0) == pytest.approx(3.0)
    limiter.observe({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6s"})
    assert limiter.delay(1, 0.0) == pytest.approx(6.0)


def test_request_tokens_count_the_prompt_and_max_tokens():
    assert request_tokens([{"role": "user", "content": "x" * 400}], 64) == 100 + 64


def requests(n: int) -> list[Request]:
    return [Request.user(f"question {i}", 0.0, 8) for i in range(n)]


def gaps(server: FakeTeacher) -> list[float]:
    times = sorted(s.started for s in server.seen)
    return [b - a for a, b in itertools.pairwise(times)]


def test_rpm_spaces_requests_on_the_wire(tmp_path):
    with FakeTeacher() as server:
        make_client(server.base_url, tmp_path, concurrency=4, rpm=120).run_batch(requests(5))
    assert len(server.seen) == 5
    assert min(gaps(server)) >= 0.45  # 120 a minute: one every 0.5 s, never a burst


def test_no_requests_left_holds_everything_until_the_reset(tmp_path):
    def plan(key, attempt, body):
        first = body["messages"][0]["content"] == "question 0"
        return Action(
            headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"} if first else {}
        )

    with FakeTeacher(plan) as server:
        client = make_client(server.base_url, tmp_path, concurrency=1)
        client.run_batch(requests(1))
        client.run_batch(requests(3)[1:])
    assert len(server.seen) == 3 and gaps(server)[0] >= 0.95


def test_a_429s_retry_after_holds_back_every_request(tmp_path):
    def plan(key, attempt, body):
        if body["messages"][0]["content"] == "question 0" and attempt == 0:
            return Action("status", 429, headers={"retry-after": "1"})
        return Action(delay=0.05)

    with FakeTeacher(plan) as server:
        _, usage = make_client(server.base_url, tmp_path, concurrency=1).run_batch(requests(4))
    refused_at = server.seen[0].started
    assert usage.rate_limited == 1 and len(server.seen) == 5
    assert all(s.started - refused_at >= 0.95 for s in server.seen[1:])
