"""TeacherClient.run_batch against a real loopback HTTP server with faults injected on the wire."""

from __future__ import annotations

import email.utils
import time

import pytest

from baldistill.core.errors import BaldistillError
from baldistill.teacher.cache import RequestCache
from baldistill.teacher.client import Request, TeacherClient
from baldistill.teacher.transport import retry_after_seconds

from support.teacher_fakeserver import Action, FakeTeacher
from support.teacher_helpers import SECRET, client_options, files_contain, make_client


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
        answers, usage = client.run_batch(requests(3))
    assert [a.content.startswith("Input:") for a in answers] == [True] * 3
    assert len(server.keys()) == 6  # every request: one fault, one success
    assert len(set(server.keys())) == 3
    assert (usage.calls_paid, usage.retries, usage.http_attempts) == (3, 3, 6)


def test_retry_after_seconds_is_honoured(tmp_path):
    with FakeTeacher(first_attempt(Action("status", 429, {"Retry-After": "1"}))) as server:
        make_client(server.base_url, tmp_path).run_batch(requests(1))
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
            client.run_batch(requests(1))
    message = str(caught.value)
    assert f"HTTP {status}" in message and "\n" not in message
    assert caught.value.exit_code == 2
    assert SECRET not in message  # the server echoed it; we must not
    assert len(server.keys()) == 1  # no retry


def test_persistent_500_fails_after_max_retries(tmp_path):
    with FakeTeacher(lambda key, attempt, body: Action("status", 500)) as server:
        client = make_client(server.base_url, tmp_path, max_retries=2)
        with pytest.raises(BaldistillError, match=r"failed after 3 attempt\(s\).*HTTP 500") as caught:
            client.run_batch(requests(1))
    assert "\n" not in str(caught.value)
    assert len(server.keys()) == 3
    assert len(client.cache) == 0  # nothing stored: a re-run asks again


def test_answers_are_cached_and_not_requested_again(tmp_path):
    with FakeTeacher() as server:
        first, paid = make_client(server.base_url, tmp_path).run_batch(requests(4))
        again, cached = make_client(server.base_url, tmp_path).run_batch(requests(4))
    assert len(server.keys()) == 4
    assert [a.content for a in again] == [a.content for a in first]
    assert all(a.cached for a in again) and not any(a.cached for a in first)
    assert (paid.calls_paid, paid.cached, cached.calls_paid, cached.cached) == (4, 0, 0, 4)


def test_budget_is_never_exceeded(tmp_path):
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path, budget=5)
        _, first = client.run_batch(requests(3))
        with pytest.raises(BaldistillError, match="budget exceeded"):
            client.run_batch(requests(6))  # 3 known + 3 new > 5: refused as a whole
        assert len(server.keys()) == 3  # ... before any of it was sent
        _, second = client.run_batch(requests(5))  # 3 known + 2 new == 5: allowed
        with pytest.raises(BaldistillError, match="budget exceeded"):
            client.run_batch([Request.user("one more", 0.0, 16)])
    assert len(set(server.keys())) == 5
    assert (first.calls_budgeted, second.calls_budgeted) == (3, 2)
    assert len(client.budget.used_keys) == 5


def test_cache_hits_count_against_the_budget_but_are_not_paid(tmp_path):
    with FakeTeacher() as server:
        make_client(server.base_url, tmp_path).run_batch(requests(3))
        client = make_client(server.base_url, tmp_path, budget=3)
        _, usage = client.run_batch(requests(3))
        with pytest.raises(BaldistillError, match="budget exceeded"):
            client.run_batch(requests(4))
    assert usage.cached == 3 and usage.calls_paid == 0 and usage.calls_budgeted == 3
    assert len(server.keys()) == 3


def test_retries_of_one_request_are_one_budgeted_call(tmp_path):
    with FakeTeacher(lambda key, attempt, body: Action("status", 500) if attempt < 2 else Action()) as server:
        _, usage = make_client(server.base_url, tmp_path, budget=1).run_batch(requests(1))
    assert len(server.keys()) == 3
    assert (usage.calls_budgeted, usage.calls_paid, usage.retries, usage.http_attempts) == (1, 1, 2, 3)


def test_duplicate_requests_in_a_batch_are_sent_once(tmp_path):
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path, budget=1)
        answers, usage = client.run_batch([Request.user("same", 0.0, 16)] * 3)
    assert len(answers) == 3 and len(server.keys()) == 1
    assert usage.calls_budgeted == usage.calls_paid == 1


def test_sampled_requests_differ_by_sample_index_greedy_ones_do_not(tmp_path):
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path)
        greedy = [Request.user("q", 0.0, 16, sample=i) for i in range(3)]
        sampled = [Request.user("q", 0.9, 16, sample=i) for i in range(3)]
        _, usage = client.run_batch(greedy + sampled)
    assert usage.calls_budgeted == 4  # one greedy + three samples
    assert len(server.keys()) == 4


def test_concurrency_is_bounded(tmp_path):
    with FakeTeacher(delay=0.2) as server:
        make_client(server.base_url, tmp_path, concurrency=3).run_batch(requests(9))
    assert server.max_in_flight == 3


def test_api_key_is_sent_but_never_stored(tmp_path):
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path / "cache")
        client.run_batch(requests(2))
        client.export_used(tmp_path / "used.jsonl")
    assert {s.authorization for s in server.seen} == {f"Bearer {SECRET}"}
    assert files_contain(tmp_path, SECRET) == []
    assert SECRET not in repr(client)


def test_usage_ledger_counts_tokens_and_cost(tmp_path):
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path, price=(1.0, 2.0))
        answers, usage = client.run_batch(requests(2))
    ledger = usage.as_dict()
    prompt = sum(a.prompt_tokens for a in answers)
    completion = sum(a.completion_tokens for a in answers)
    assert prompt > 0 and completion > 0
    assert ledger["prompt_tokens"] == prompt and ledger["completion_tokens"] == completion
    assert ledger["estimated_cost_usd"] == pytest.approx((prompt * 1.0 + completion * 2.0) / 1e6)
    assert (
        ledger["calls_paid"] == 2
        and ledger["cached"] == 0
        and ledger["price"] == {"input_per_1m": 1.0, "output_per_1m": 2.0}
    )


# ---- run_batch's usage: the batch's own, hits and paid calls apart ----------


def test_each_batch_reports_its_own_usage(tmp_path):
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path, price=(1.0, 2.0))
        first, before = client.run_batch(requests(3))
        mixed, after = client.run_batch(requests(5))  # the first 3 again, 2 new
    assert len(server.keys()) == 5  # only the 2 new ones went out
    assert [a.cached for a in mixed] == [True] * 3 + [False] * 2
    assert [a.content for a in mixed[:3]] == [a.content for a in first]
    # the repeated keys were budgeted by the first batch already: this one adds only the new ones
    assert (after.calls_budgeted, after.calls_paid, after.cached, after.http_attempts) == (2, 2, 3, 2)
    # tokens and cost are the paid answers' only; a cache hit costs nothing
    assert after.prompt_tokens == sum(a.prompt_tokens for a in mixed[3:]) > 0
    assert after.completion_tokens == sum(a.completion_tokens for a in mixed[3:]) > 0
    assert before.prompt_tokens == sum(a.prompt_tokens for a in first)
    assert after.estimated_cost_usd == pytest.approx((after.prompt_tokens + 2 * after.completion_tokens) / 1e6)


def test_a_fresh_client_budgets_cache_hits_but_pays_only_misses(tmp_path):
    with FakeTeacher() as server:
        make_client(server.base_url, tmp_path).run_batch(requests(3))
        answers, usage = make_client(server.base_url, tmp_path).run_batch(requests(5))
    assert len(server.keys()) == 5 and sum(a.cached for a in answers) == 3
    assert (usage.calls_budgeted, usage.calls_paid, usage.cached) == (5, 2, 3)


def test_an_empty_batch_reaches_no_endpoint_and_costs_nothing(tmp_path):
    def unreachable():
        raise AssertionError("an empty batch must not reach the endpoint")

    cache = RequestCache(tmp_path / "cache")
    client = TeacherClient(connect=unreachable, cache=cache, budget=1, options=client_options(price=(1.0, 2.0)))
    answers, usage = client.run_batch([])
    assert answers == [] and usage.as_dict()["calls_budgeted"] == 0 and usage.estimated_cost_usd == 0
    assert client.base_url is None and not (tmp_path / "cache").exists()  # not even the cache was opened


def test_a_batch_answered_from_the_cache_reaches_no_endpoint(tmp_path):
    with FakeTeacher() as server:
        make_client(server.base_url, tmp_path).run_batch(requests(2))
    client = make_client("http://127.0.0.1:9/v1", tmp_path)  # nothing listens there
    answers, usage = client.run_batch(requests(2))
    assert all(a.cached for a in answers) and usage.cached == 2 and usage.calls_paid == 0
    assert client.base_url is None
