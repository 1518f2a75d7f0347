"""TeacherClient against a real loopback HTTP server with faults injected on the wire."""

from __future__ import annotations

import email.utils
import time

import pytest
from teacher_fakeserver import Action, FakeTeacher
from teacher_helpers import SECRET, files_contain, make_client

from baldistill.errors import BaldistillError
from baldistill.teacher import Request, retry_after_seconds, run_requests


def requests(n: int, temperature: float = 0.0) -> list[Request]:
    return [Request.user(f"question {i}", temperature, 16, sample=i) for i in range(n)]


def first_attempt(fault: Action):
    """A plan that injects `fault` on each request's first attempt only."""
    return lambda key, attempt, body: fault if attempt == 0 else Action()


TRANSIENT = {
    "429_retry_after": Action("status", 429, {"Retry-After": "0"}),
    "500": Action("status", 500),
    "503": Action("status", 503),
    "slow_past_timeout": Action(delay=5.0),
    "malformed_json": Action("malformed"),
    "empty_content": Action("empty"),
    "dropped_connection": Action("drop"),
}


@pytest.mark.parametrize("fault", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_fault_is_retried_and_step_completes(fault, tmp_path):
    # Only the slow fault should time out: a short timeout elsewhere would let a
    # loaded CI machine turn a healthy answer into an extra retry.
    timeout = 2.0 if fault.delay else 20.0
    with FakeTeacher(first_attempt(fault)) as server:
        client = make_client(server.base_url, tmp_path, timeout=timeout)
        answers = run_requests(client, requests(3))
    assert [a.content.startswith("Input:") for a in answers] == [True] * 3
    assert len(server.keys()) == 6  # every request: one fault, one success
    assert len(set(server.keys())) == 3
    assert client.usage.calls_paid == 3 and client.usage.retries == 3 and client.usage.failed == 0


def test_retry_after_seconds_is_honoured(tmp_path):
    with FakeTeacher(first_attempt(Action("status", 429, {"Retry-After": "1"}))) as server:
        client = make_client(server.base_url, tmp_path)
        run_requests(client, requests(1))
        first, second = server.seen
    assert second.started - first.started >= 0.95


def test_retry_after_http_date_is_parsed():
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds(soon) <= 30
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert retry_after_seconds("soon") is None


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_non_retryable_status_fails_at_once_with_one_line(status, tmp_path):
    fault = Action("status", status, content="Incorrect API key provided: {auth}")
    with FakeTeacher(lambda key, attempt, body: fault) as server:
        client = make_client(server.base_url, tmp_path)
        with pytest.raises(BaldistillError) as caught:
            run_requests(client, requests(1))
    message = str(caught.value)
    assert f"HTTP {status}" in message and "\n" not in message
    assert caught.value.exit_code == 2
    assert SECRET not in message  # the server echoed it; we must not
    assert len(server.keys()) == 1  # no retry


def test_persistent_500_fails_after_max_retries(tmp_path):
    with FakeTeacher(lambda key, attempt, body: Action("status", 500)) as server:
        client = make_client(server.base_url, tmp_path, max_retries=2)
        with pytest.raises(BaldistillError, match=r"failed after 3 attempt\(s\).*HTTP 500") as caught:
            run_requests(client, requests(1))
    assert "\n" not in str(caught.value)
    assert len(server.keys()) == 3
    assert client.usage.failed == 1 and client.usage.calls_paid == 0


def test_answers_are_cached_and_not_requested_again(tmp_path):
    with FakeTeacher() as server:
        first = run_requests(make_client(server.base_url, tmp_path), requests(4))
        again = run_requests(make_client(server.base_url, tmp_path), requests(4))
    assert len(server.keys()) == 4
    assert [a.content for a in again] == [a.content for a in first]
    assert all(a.cached for a in again) and not any(a.cached for a in first)


def test_budget_is_never_exceeded(tmp_path):
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path, budget=5)
        run_requests(client, requests(3))
        with pytest.raises(BaldistillError, match="budget exceeded"):
            run_requests(client, requests(6))  # 3 known + 3 new > 5: refused as a whole
        run_requests(client, requests(5))  # 3 known + 2 new == 5: allowed
        with pytest.raises(BaldistillError, match="budget exceeded"):
            run_requests(client, [Request.user("one more", 0.0, 16)])
    assert len(set(server.keys())) == 5
    assert client.usage.calls_budgeted == 5


def test_cache_hits_count_against_the_budget_but_are_not_paid(tmp_path):
    with FakeTeacher() as server:
        run_requests(make_client(server.base_url, tmp_path), requests(3))
        client = make_client(server.base_url, tmp_path, budget=3)
        run_requests(client, requests(3))
        with pytest.raises(BaldistillError, match="budget exceeded"):
            run_requests(client, requests(4))
    assert client.usage.cached == 3 and client.usage.calls_paid == 0 and client.usage.calls_budgeted == 3
    assert len(server.keys()) == 3


def test_retries_of_one_request_are_one_budgeted_call(tmp_path):
    with FakeTeacher(lambda key, attempt, body: Action("status", 500) if attempt < 2 else Action()) as server:
        client = make_client(server.base_url, tmp_path, budget=1)
        run_requests(client, requests(1))
    assert len(server.keys()) == 3 and client.usage.calls_budgeted == 1


def test_duplicate_requests_in_a_batch_are_sent_once(tmp_path):
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path, budget=1)
        answers = run_requests(client, [Request.user("same", 0.0, 16)] * 3)
    assert len(answers) == 3 and len(server.keys()) == 1


def test_sampled_requests_differ_by_sample_index_greedy_ones_do_not(tmp_path):
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path)
        greedy = [Request.user("q", 0.0, 16, sample=i) for i in range(3)]
        sampled = [Request.user("q", 0.9, 16, sample=i) for i in range(3)]
        run_requests(client, greedy + sampled)
    assert client.usage.calls_budgeted == 4  # one greedy + three samples
    assert len(server.keys()) == 4


def test_concurrency_is_bounded(tmp_path):
    with FakeTeacher(delay=0.2) as server:
        client = make_client(server.base_url, tmp_path, concurrency=3)
        run_requests(client, requests(9))
    assert server.max_in_flight == 3


def test_api_key_is_sent_but_never_stored(tmp_path):
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path / "cache")
        run_requests(client, requests(2))
        client.export_used(tmp_path / "used.jsonl")
    assert {s.authorization for s in server.seen} == {f"Bearer {SECRET}"}
    assert files_contain(tmp_path, SECRET) == []
    assert SECRET not in repr(client)


def test_usage_ledger_counts_tokens_and_cost(tmp_path):
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path, price=(1.0, 2.0))
        answers = run_requests(client, requests(2))
    ledger = client.usage.as_dict()
    prompt = sum(a.prompt_tokens for a in answers)
    completion = sum(a.completion_tokens for a in answers)
    assert prompt > 0 and completion > 0
    assert ledger["prompt_tokens"] == prompt and ledger["completion_tokens"] == completion
    assert ledger["estimated_cost_usd"] == pytest.approx((prompt * 1.0 + completion * 2.0) / 1e6)
    assert ledger["calls_paid"] == 2 and ledger["cached"] == 0 and ledger["failed"] == 0
