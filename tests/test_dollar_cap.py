"""budget.max_usd: each request reserves its worst case before it is sent, the
cap refuses what would pass it, and the payment journal counts each dollar once
across a kill -9 and re-run. Against a real HTTP server on loopback."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baldistill.core.errors import BaldistillError
from baldistill.core.rows import write_rows
from baldistill.teacher.cache import RequestCache
from baldistill.teacher.client import Request
from baldistill.teacher.spending import DollarCap, Price, prompt_token_bound, worst_case_usd

from support.child_step import kill_once_answers_are_stored, start_child
from support.teacher_fakeserver import FakeTeacher
from support.teacher_helpers import journal, make_client, pool_rows

PRICE = Price(input_per_1m=1.0, output_per_1m=2.0)


def requests(n: int) -> list[Request]:
    return [Request.user(f"question number {i} about markets", 0.0, 16) for i in range(n)]


# --- the arithmetic --------------------------------------------------------------------------


@given(
    limit=st.floats(0, 10, allow_nan=False),
    steps=st.lists(st.tuples(st.floats(0, 3, allow_nan=False), st.floats(0, 1, allow_nan=False)), max_size=30),
)
def test_the_cap_never_lets_spent_and_reserved_pass_it(limit, steps):
    cap = DollarCap(limit)
    for worst, share in steps:
        if cap.reserve(worst):
            assert cap.spent + cap.reserved <= limit + 1e-9
            cap.settle(worst, worst * share)  # a real cost never above its worst case
        assert cap.spent <= limit + 1e-9 and cap.reserved >= 0


@given(st.lists(st.floats(0, 5, allow_nan=False), max_size=20))
def test_no_cap_reserves_anything(amounts):
    cap = DollarCap(None)
    assert all(cap.reserve(a) for a in amounts)


def test_release_gives_back_the_reservation():
    cap = DollarCap(1.0)
    assert cap.reserve(0.8) and not cap.reserve(0.3)
    cap.release(0.8)
    assert cap.reserve(0.3) and cap.spent == 0


@settings(deadline=None, max_examples=60)
@given(st.text(min_size=0, max_size=300))
def test_prompt_bound_is_above_a_real_tokenizers_count(student_tokenizer, text):
    """The bound must hold for a real byte-level BPE tokenizer, template included."""
    messages = [{"role": "user", "content": text}]
    rendered = student_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = rendered["input_ids"] if isinstance(rendered, dict) or hasattr(rendered, "keys") else rendered
    assert len(ids) <= prompt_token_bound(messages)


@pytest.fixture(scope="module")
def student_tokenizer(tiny_student_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_student_dir)


# --- against a server ------------------------------------------------------------------------


def test_a_cap_below_one_request_is_refused_before_anything_is_sent(tmp_path):
    batch = requests(3)
    first_worst = worst_case_usd(batch[0].messages, 16, PRICE)
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path, price=(1.0, 2.0), cap=DollarCap(first_worst * 0.99))
        with pytest.raises(BaldistillError, match=r"^budget\.max_usd: 3 of 3 teacher request\(s\) not answered"):
            client.run_batch(batch)
        assert server.keys() == []


def test_a_cap_spends_up_to_itself_then_refuses_what_would_pass_it(tmp_path):
    batch = requests(12)
    worst = [worst_case_usd(r.messages, 16, PRICE) for r in batch]
    limit = 2.5 * max(worst)  # the real costs (word counts) are far below the byte bound
    with FakeTeacher() as server:
        client = make_client(server.base_url, tmp_path, price=(1.0, 2.0), cap=DollarCap(limit), concurrency=2)
        with pytest.raises(BaldistillError, match=r"^budget\.max_usd: "):
            client.run_batch(batch)
        sent = len(server.keys())
    with RequestCache(tmp_path) as cache:
        stored = cache.entries(cache.keys())
    paid = sum(PRICE.cost(e["response"]["prompt_tokens"], e["response"]["completion_tokens"]) for e in stored)
    assert 2 <= sent < len(batch) and len(stored) == sent  # every paid answer is kept
    assert paid == pytest.approx(client.cap.spent) and paid <= limit
    assert client.cap.spent + min(worst) > limit  # what was refused would have passed the cap


def test_without_a_cap_every_answer_is_paid_and_priced(tmp_path):
    with FakeTeacher() as server:
        responses, usage = make_client(server.base_url, tmp_path, price=(1.0, 2.0)).run_batch(requests(4))
    expected = sum(PRICE.cost(r.prompt_tokens, r.completion_tokens) for r in responses)
    assert expected > 0 and usage.usd_paid == pytest.approx(expected) == pytest.approx(usage.estimated_cost_usd)
    assert usage.usd_budgeted == pytest.approx(expected)


def test_a_cache_hit_is_budgeted_in_dollars_but_not_paid(tmp_path):
    with FakeTeacher() as server:
        _, first = make_client(server.base_url, tmp_path, price=(1.0, 2.0)).run_batch(requests(3))
        _, again = make_client(server.base_url, tmp_path, price=(1.0, 2.0)).run_batch(requests(3))
    assert (again.calls_paid, again.usd_paid) == (0, 0)
    assert first.usd_paid > 0 and again.usd_budgeted == pytest.approx(first.usd_paid)


# --- kill -9 and re-run ----------------------------------------------------------------------


def test_kill_9_then_rerun_counts_every_dollar_once(tmp_path):
    rows = pool_rows(2)[:8]
    write_rows(tmp_path / "rows.jsonl", rows)
    with FakeTeacher(delay=0.4) as server:
        child = start_child("spend_child.py", server.base_url, tmp_path, "none")
        kill_once_answers_are_stored(server, child, tmp_path / "cache")
        before = journal(tmp_path / "cache", state=None)
        in_flight = journal(tmp_path / "cache", "unknown")
        assert 3 <= len(journal(tmp_path / "cache")) < len(rows) and all(open_ for *_, open_ in before)
        assert in_flight  # sent when the kill came, answered by nobody we know: journalled before they went

        rerun = start_child("spend_child.py", server.base_url, tmp_path, "none")
        _, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        usage = json.loads((tmp_path / "usage.json").read_text())

        again = start_child("spend_child.py", server.base_url, tmp_path, "none")  # the step, finished, run once more
        _, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        after_finish = json.loads((tmp_path / "usage.json").read_text())
        bill = server.bill(PRICE)

    paid, unknown = journal(tmp_path / "cache"), journal(tmp_path / "cache", "unknown")
    assert len(paid) == len(rows) == len({key for key, *_ in paid})  # each answer paid once
    # The killed run's in-flight attempts stay at their worst case, once.
    assert [e[:3] for e in unknown] == [e[:3] for e in in_flight]
    assert not any(open_ for *_, open_ in paid + unknown)  # closed when the step finished
    # The provider billed the answers we stored and those it sent to the killed run:
    # the journal has the first exactly and bounds the second by their worst case.
    billed = sum(usd for _, _, usd, _ in paid)
    assert billed < bill <= billed + sum(usd for _, _, usd, _ in unknown)
    # The re-run reports the killed run's payments as its own, once: the bill is whole.
    assert usage["calls_paid"] == len(rows) and usage["usd_paid"] == pytest.approx(billed)
    assert usage["attempts_unknown"] == len(unknown) and usage["usd_unknown"] == pytest.approx(
        sum(usd for _, _, usd, _ in unknown)
    )
    assert (after_finish["calls_paid"], after_finish["usd_paid"], after_finish["cached"]) == (0, 0, len(rows))
    assert after_finish["usd_unknown"] == 0


def test_a_rerun_under_the_cap_counts_what_the_killed_run_spent(tmp_path):
    """The cap sees the killed run's payments: a re-run cannot spend the cap again."""
    rows = pool_rows(2)[:8]
    write_rows(tmp_path / "rows.jsonl", rows)
    with FakeTeacher() as server:
        first = start_child("spend_child.py", server.base_url, tmp_path, "0.0012")
        _, err = first.communicate(timeout=120)
        spent_first = sum(u for _, _, u, _ in journal(tmp_path / "cache"))
        second = start_child("spend_child.py", server.base_url, tmp_path, "0.0012")
        _, err2 = second.communicate(timeout=120)
        sent = len(server.keys())
    assert first.returncode == 2 and "budget.max_usd" in err, err
    assert second.returncode == 2 and "budget.max_usd" in err2, err2
    total = sum(u for _, _, u, _ in journal(tmp_path / "cache"))
    assert 0 < spent_first <= total <= 0.0012 and sent == len(journal(tmp_path / "cache")) < len(rows)
