"""`baldistill spend`: the payment journal summed per model and run, and what the cache saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from baldistill.teacher.cache import RequestCache
from baldistill.teacher.client import Request

from support.teacher_fakeserver import FakeTeacher
from support.teacher_helpers import make_client


def ask(server, cache_dir, n, payer):
    requests = [Request.user(f"question {i}", 0.0, 8) for i in range(n)]
    client = make_client(server.base_url, cache_dir, price=(1.0, 2.0), payer=payer)
    _, usage = client.run_batch(requests)
    client.close_payments()
    return usage


def spend(cwd, cache_dir) -> dict:
    env = {**os.environ, "BALDISTILL_TEACHER_CACHE": str(cache_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "baldistill.cli", "spend", "--json"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_spend_sums_the_journal_per_model_and_run_and_the_ledger_shows_the_savings(tmp_path):
    cache_dir = tmp_path / "cache"
    with FakeTeacher() as server:
        # An answer stored before payments were journalled (a cache from an older version).
        with RequestCache(cache_dir) as cache:
            cache.put("old", {"model": "fake-teacher"}, {"content": "x", "prompt_tokens": 7, "completion_tokens": 3})
        first = ask(server, cache_dir, 3, "repo|exp-a|annotate@s0")
        second = ask(server, cache_dir, 5, "repo|exp-b|annotate@s0")  # 3 from the cache, 2 paid
    ledger = {k: v for k, v in second.as_dict().items() if k in ("calls_budgeted", "calls_paid")}
    ledger |= {"usd_budgeted": second.usd_budgeted, "usd_paid": second.usd_paid}
    (tmp_path / "metrics" / "s0").mkdir(parents=True)
    (tmp_path / "metrics" / "s0" / "teacher.json").write_text(json.dumps(ledger))

    out = spend(tmp_path, cache_dir)
    model = out["by_model"]["fake-teacher"]
    assert model["attempts_billed"] == 3 + 2 == first.calls_paid + second.calls_paid
    assert model["usd"] == pytest.approx(first.usd_paid + second.usd_paid)
    assert model["prompt_tokens"] == first.prompt_tokens + second.prompt_tokens
    assert {run: t["attempts_billed"] for run, t in out["by_run"].items()} == {"exp-a": 3, "exp-b": 2}
    assert model["attempts_unknown"] == 0 and model["usd_unknown"] == 0
    assert out["unjournalled"]["attempts_billed"] == 1 and out["unjournalled"]["prompt_tokens"] == 7
    saved = out["runs"]["workspace"]
    assert (saved["calls_budgeted"], saved["calls_paid"], saved["from_cache"]) == (5, 2, 3)
    assert saved["usd_saved"] == pytest.approx(first.usd_paid) and first.usd_paid > 0  # the 3 exp-a had paid


def test_spend_with_no_cache_says_nothing_was_paid(tmp_path):
    out = spend(tmp_path, tmp_path / "absent")
    assert out["by_model"] == {} and out["runs"] == {} and not (tmp_path / "absent").exists()


def test_spend_shows_attempts_of_unknown_fate_at_their_worst_case(tmp_path):
    from baldistill.teacher.spending import Price, worst_case_usd

    from support.teacher_fakeserver import Action

    cache_dir = tmp_path / "cache"
    dropped = lambda key, attempt, body: Action("drop") if attempt == 0 else Action()  # noqa: E731
    with FakeTeacher(dropped) as server:
        usage = ask(server, cache_dir, 2, "repo|exp-a|annotate@s0")
    out = spend(tmp_path, cache_dir)
    run = out["by_run"]["exp-a"]
    worst = sum(
        worst_case_usd(r.messages, 8, Price(1.0, 2.0))
        for r in [Request.user(f"question {i}", 0.0, 8) for i in range(2)]
    )
    assert (run["attempts_billed"], run["attempts_unknown"]) == (2, 2) and usage.attempts_unknown == 2
    assert run["usd_unknown"] == pytest.approx(worst) == pytest.approx(usage.usd_unknown)
    assert run["usd"] == pytest.approx(usage.usd_paid)
    env = {**os.environ, "BALDISTILL_TEACHER_CACHE": str(cache_dir)}
    text = subprocess.run(
        [sys.executable, "-m", "baldistill.cli", "spend"], cwd=tmp_path, env=env, capture_output=True, text=True
    ).stdout
    assert "USD at most" in text and f"{worst:.4f}" in text
