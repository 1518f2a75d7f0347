"""A teacher that bills like a provider (support/teacher_fakeserver.py): every attempt that reaches
its model is billed, read or not. For each fault, the journal equals the provider's bill for the
attempts whose answers came back and bounds the rest by their worst case; under budget.max_usd the
provider's bill never passes the cap; answers without text are asked once more, not max_retries times."""

from __future__ import annotations

import pytest

from baldistill.core.errors import BaldistillError
from baldistill.teacher.client import Request
from baldistill.teacher.messages import EMPTY, NO_TEXT_BEFORE_MAX_TOKENS
from baldistill.teacher.spending import DollarCap, Price, worst_case_usd

from support.teacher_fakeserver import Action, FakeTeacher
from support.teacher_helpers import journal, make_client

PRICE = Price(1.0, 2.0)


def requests(n: int) -> list[Request]:
    return [Request.user(f"question number {i} about markets", 0.0, 16) for i in range(n)]


def usd(entries: list[tuple]) -> float:
    return sum(e[2] for e in entries)


# (fault on each request's first attempt, whether its bill comes back to the client)
FAULTS = {
    "empty_200_with_usage": (Action("empty"), True),
    "length_without_text": (Action("length"), True),
    "429": (Action("status", 429, {"Retry-After": "0"}), True),
    "answer_after_the_timeout": (Action(delay=3.0), False),
    "dropped_connection": (Action("drop"), False),
    "malformed_json": (Action("malformed"), False),
}


@pytest.mark.parametrize("fault, known", FAULTS.values(), ids=FAULTS.keys())
def test_the_journal_is_the_providers_bill_and_bounds_what_it_cannot_know(fault, known, tmp_path):
    timeout = 1.5 if fault.delay else 20.0  # only the late answer may time out
    with FakeTeacher(lambda key, attempt, body: fault if attempt == 0 else Action()) as server:
        client = make_client(server.base_url, tmp_path, price=(1.0, 2.0), timeout=timeout, payer="run|step@s0")
        answers, usage = client.run_batch(requests(3))
        bill = server.bill(PRICE)
    billed, unknown = journal(tmp_path), journal(tmp_path, "unknown")
    assert all(a.failure is None for a in answers) and usage.calls_paid == 3
    assert usage.usd_paid == pytest.approx(usd(billed)) and usage.usd_unknown == pytest.approx(usd(unknown))
    assert usage.attempts_billed == len(billed) and usage.attempts_unknown == len(unknown)
    if known:  # every billed attempt was read: the journal is the bill, to the token
        assert usd(billed) == pytest.approx(bill) and unknown == []
        assert len(billed) == (3 if fault.kind == "status" else 6)  # a refused attempt is not billed
    else:  # the first attempts' bills never came back: kept at their worst case, which bounds them
        assert len(unknown) == 3 and len(billed) == 3
        assert usd(billed) < bill <= usd(billed) + usd(unknown)


def test_an_answer_without_usage_is_kept_and_its_cost_stays_at_its_worst_case(tmp_path):
    with FakeTeacher(lambda key, attempt, body: Action("no_usage")) as server:
        client = make_client(server.base_url, tmp_path, price=(1.0, 2.0), payer="run|step@s0")
        answers, usage = client.run_batch(requests(3))
        bill = server.bill(PRICE)
    worst = sum(worst_case_usd(r.messages, 16, PRICE) for r in requests(3))
    assert all(a.content and a.failure is None for a in answers) and len(server.seen) == 3  # not asked again
    assert journal(tmp_path) == [] and usd(journal(tmp_path, "unknown")) == pytest.approx(worst)
    assert usage.usd_paid == 0 and usage.usd_unknown == pytest.approx(worst) and 0 < bill <= worst


@pytest.mark.parametrize("kind, why", [("empty", EMPTY), ("length", NO_TEXT_BEFORE_MAX_TOKENS)])
def test_an_answer_without_text_is_asked_once_more_then_kept_with_its_reason(kind, why, tmp_path):
    with FakeTeacher(lambda key, attempt, body: Action(kind)) as server:
        client = make_client(server.base_url, tmp_path, price=(1.0, 2.0), max_retries=6)
        answers, usage = client.run_batch(requests(3))
        again, reuse = make_client(server.base_url, tmp_path, price=(1.0, 2.0)).run_batch(requests(3))
        bill, sent = server.bill(PRICE), len(server.seen)
    assert sent == 6  # two attempts per request, not max_retries + 1 = 7
    assert [a.failure for a in answers] == [why] * 3 and usage.failed == {why: 3}
    assert (usage.calls_paid, usage.attempts_billed, usage.retries) == (3, 6, 3)
    assert usage.usd_paid == pytest.approx(bill) == pytest.approx(usd(journal(tmp_path)))
    # Kept, so a re-run pays nothing for what would fail the same way again.
    assert [a.failure for a in again] == [why] * 3 and (reuse.cached, reuse.calls_paid) == (3, 0)


def mixed(key: str, attempt: int, body: dict) -> Action:
    """Each request: an answer after the client's timeout, then an empty one, then a 429, then text."""
    faults = [Action(delay=2.0), Action("empty"), Action("status", 429, {"Retry-After": "0"})]
    return faults[attempt] if attempt < len(faults) else Action()


def test_under_the_cap_the_providers_bill_never_passes_it(tmp_path):
    batch = requests(8)
    limit = 6 * max(worst_case_usd(r.messages, 16, PRICE) for r in batch)
    with FakeTeacher(mixed) as server:
        client = make_client(server.base_url, tmp_path, price=(1.0, 2.0), timeout=1.0, cap=DollarCap(limit))
        with pytest.raises(BaldistillError, match=r"^budget\.max_usd: "):
            client.run_batch(batch)
        bill = server.bill(PRICE)
        late = sum(1 for s in server.seen if s.billed and not s.answered)
    billed, unknown = journal(tmp_path), journal(tmp_path, "unknown")
    assert 0 < bill <= limit and late > 0
    assert client.cap.spent == pytest.approx(usd(billed) + usd(unknown)) and client.cap.spent <= limit + 1e-12
    assert usd(billed) <= bill <= usd(billed) + usd(unknown)  # the journal never records less than was billed
