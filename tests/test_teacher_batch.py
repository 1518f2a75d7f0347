"""teacher.mode: batch, against a loopback OpenAI Batch API server: one job per step's misses, answers
stored and paid at batch price, a killed step resumes its job, failures go again alone, the dollar cap
refuses a job before its upload, and the API key stays out of everything written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_jsonl, write_jsonl
from baldistill.core.rows import read_rows, write_rows
from baldistill.teacher.batch import EXPORT_ENV
from baldistill.teacher.cache import RequestCache
from baldistill.teacher.client import Request
from baldistill.teacher.endpoint import open_client
from baldistill.teacher.spending import DollarCap, Price, worst_case_usd

from support.child_step import start_child, wait_for
from support.fake_batch_server import FakeBatchServer, result_line
from support.teacher_fakeserver import completion, default_content
from support.teacher_helpers import SECRET, files_contain, make_client, make_params, pool_rows
from support.teacher_helpers import journal as entries

BATCH_PRICE = Price(0.5, 1.0)  # price (1.0, 2.0) at the default batch_factor 0.5


def requests(n: int) -> list[Request]:
    return [Request.user(f"question number {i} about markets", 0.0, 16) for i in range(n)]


def number(body: dict) -> int:
    return int(re.search(r"number (\d+)", body["messages"][-1]["content"]).group(1))


def batch_client(server: FakeBatchServer, cache_dir: Path, **kw):
    options = dict(mode="batch", batch_poll_seconds=0.01, price=(1.0, 2.0), payer="test|step@s0")
    return make_client(server.base_url, cache_dir, **{**options, **kw})


def journal(cache_dir: Path, state: str = "billed") -> list[tuple[str, str, float]]:
    """The cache's payment journal: (key, payer, usd) of every attempt billed (or of `state`)."""
    return [(key, payer, usd) for key, payer, usd, _ in entries(cache_dir, state)]


def test_one_job_answers_every_miss_at_batch_price_and_a_rerun_sends_nothing(tmp_path):
    asked = requests(5) + requests(2)  # repeats are one line of the job
    with FakeBatchServer() as server:
        client = batch_client(server, tmp_path / "cache")
        responses, usage = client.run_batch(asked)
        (job,) = server.jobs
        polls = len(server.polls)
        client.close_payments()  # the step finished: a later run of it paid nothing of this
        again, reuse = batch_client(server, tmp_path / "cache").run_batch(asked)
    keys = [client.key(r) for r in requests(5)]
    assert [line["custom_id"] for line in job.lines] == keys
    assert [line["body"] for line in job.lines] == [r.body("fake-teacher") for r in requests(5)]
    expected = [completion(r.body("fake-teacher"), default_content(r.body("fake-teacher"))) for r in asked]
    assert [r.content for r in responses] == [e["choices"][0]["message"]["content"] for e in expected]
    assert [r.completion_tokens for r in responses] == [e["usage"]["completion_tokens"] for e in expected]
    cost = BATCH_PRICE.cost(responses[0].prompt_tokens, responses[0].completion_tokens)
    assert (usage.calls_paid, usage.cached, usage.batch_ids) == (5, 0, [job.id])
    assert usage.usd_paid == pytest.approx(5 * cost) and usage.as_dict()["price"] == {
        "input_per_1m": 0.5,
        "output_per_1m": 1.0,
    }
    assert [(k, usd) for k, _, usd in journal(tmp_path / "cache")] == [(k, pytest.approx(cost)) for k in keys]
    with RequestCache(tmp_path / "cache") as cache:
        assert {e["key"]: e["response"]["content"] for e in cache.entries(keys)} == {
            r.key: r.content for r in responses
        }
    # The second run: every answer from the cache, no upload, no job, no poll.
    assert (reuse.calls_paid, reuse.cached, reuse.batch_ids) == (0, 5, [])
    assert [r.content for r in again] == [r.content for r in responses] and all(r.cached for r in again)
    assert (server.uploads, len(server.jobs), len(server.polls)) == (1, 1, polls)
    assert server.authorizations == {f"Bearer {SECRET}"} and files_contain(tmp_path, SECRET) == []


def test_a_step_killed_while_its_job_runs_polls_the_same_job_when_run_again(tmp_path):
    rows = pool_rows(1)
    write_rows(tmp_path / "rows.jsonl", rows)
    with FakeBatchServer() as server:
        server.release.clear()  # the job stays in_progress
        child = start_child("batch_child.py", server.base_url, tmp_path)
        wait_for(lambda: server.polls.count("batch_0") >= 3)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        assert server.answered == [] and not (tmp_path / "out.jsonl").exists()
        polled = len(server.polls)
        server.release.set()
        rerun = start_child("batch_child.py", server.base_url, tmp_path)
        _, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
    assert len(server.jobs) == 1 and server.uploads == 1  # no second job
    assert set(server.polls[polled:]) == {"batch_0"} and "resuming Batch job batch_0" in err
    assert sorted(server.answered) == sorted(server.jobs[0].custom_ids) and len(server.jobs[0].lines) == len(rows)
    paid = journal(tmp_path / "cache")
    assert sorted(k for k, _, _ in paid) == sorted(server.answered)  # each answer paid once
    assert {payer for _, payer, _ in paid} == {"test|workspace|annotate@s0"}
    # Journalled as unknown before the killed run created the job, settled by the re-run that read its results.
    assert journal(tmp_path / "cache", "unknown") == [] and len(paid) == len(rows)
    out = read_rows(tmp_path / "out.jsonl", teacher=True)
    assert sorted(r.id for r in out) == sorted(r.id for r in rows)
    with RequestCache(tmp_path / "cache") as cache:
        assert cache.jobs.open("test|workspace|annotate@s0", server.base_url) == []
    assert files_contain(tmp_path, SECRET) == []


def test_a_recorded_job_the_server_does_not_know_is_closed_and_the_requests_go_in_a_new_one(tmp_path):
    asked = requests(2)
    with FakeBatchServer() as server:
        client = batch_client(server, tmp_path / "cache")
        client.cache.jobs.add("batch_lost", "test|step@s0", server.base_url, [client.key(r) for r in asked])
        _, usage = client.run_batch(asked)
        assert client.cache.jobs.open("test|step@s0", server.base_url) == []
    assert usage.batch_ids == ["batch_0"] and usage.calls_paid == 2 and len(server.jobs) == 1


def test_failed_lines_and_an_expired_jobs_missing_requests_go_again_alone_once(tmp_path):
    def fate(job: int, custom_id: str, body: dict) -> str:
        if job == 0 and number(body) in (1, 2):
            return "error"
        return "missing" if job == 0 and number(body) == 3 else "ok"

    asked = requests(6)
    with FakeBatchServer(line_fate=fate, job_end=lambda job: "expired" if job == 0 else "completed") as server:
        client = batch_client(server, tmp_path / "cache")
        responses, usage = client.run_batch(asked)
    first, second = server.jobs
    assert sorted(second.custom_ids) == sorted(client.key(r) for r in asked[1:4])
    assert Counter(server.answered) == Counter(client.key(r) for r in asked)  # each answered once
    assert sorted(k for k, _, _ in journal(tmp_path / "cache")) == sorted(server.answered)
    # The lines the first job failed or left out were journalled before it ran, and settled as not billed.
    assert sorted(k for k, _, _ in journal(tmp_path / "cache", "unbilled")) == sorted(second.custom_ids)
    assert journal(tmp_path / "cache", "unknown") == [] and usage.usd_unknown == 0
    assert (usage.calls_paid, usage.retries, usage.http_attempts, usage.batch_ids) == (6, 3, 9, [first.id, second.id])
    assert all(r.content and not r.cached for r in responses)


def test_a_line_answered_without_text_is_billed_asked_once_more_then_kept(tmp_path):
    with FakeBatchServer(answer=lambda body: "") as server:
        client = batch_client(server, tmp_path / "cache", max_retries=6)
        responses, usage = client.run_batch(requests(2))
    assert [len(job.lines) for job in server.jobs] == [2, 2]  # two jobs, not max_retries + 1 = 7
    assert [r.failure for r in responses] == ["empty answer"] * 2 and usage.failed == {"empty answer": 2}
    assert len(journal(tmp_path / "cache")) == 4 and usage.attempts_billed == 4 and usage.calls_paid == 2


def test_a_failed_job_goes_again_whole(tmp_path):
    with FakeBatchServer(job_end=lambda job: "failed" if job == 0 else "completed") as server:
        client = batch_client(server, tmp_path / "cache")
        _, usage = client.run_batch(requests(3))
    assert [job.status for job in server.jobs] == ["failed", "completed"]
    assert server.jobs[0].custom_ids == server.jobs[1].custom_ids and usage.calls_paid == 3


def test_a_line_that_always_fails_stops_after_max_retries_jobs_and_the_rest_is_kept(tmp_path):
    always = lambda job, custom_id, body: "error" if number(body) == 0 else "ok"  # noqa: E731
    with FakeBatchServer(line_fate=always) as server:
        client = batch_client(server, tmp_path / "cache", max_retries=2)
        with pytest.raises(BaldistillError, match=r"1 of 3 request\(s\) not answered after 3 job\(s\)") as err:
            client.run_batch(requests(3))
    assert "injected line error" in str(err.value) and "\n" not in str(err.value)
    assert [len(job.lines) for job in server.jobs] == [3, 1, 1]
    with RequestCache(tmp_path / "cache") as cache:
        assert len(cache) == 2 and len(journal(tmp_path / "cache")) == 2
        assert len(journal(tmp_path / "cache", "unbilled")) == 3  # the failing line, once per job
    assert client.cap.reserved == 0 and client.cap.holding == 0


def test_the_cap_refuses_a_job_whose_worst_case_would_pass_it_before_any_upload(tmp_path):
    asked = requests(4)
    worst = [worst_case_usd(r.messages, r.max_tokens, BATCH_PRICE) for r in asked]
    with FakeBatchServer() as server:
        capped = batch_client(server, tmp_path / "capped", cap=DollarCap(sum(worst) * 0.99))
        with pytest.raises(BaldistillError, match=r"^budget\.max_usd: a Batch job of 4 teacher request") as err:
            capped.run_batch(asked)
        assert (server.uploads, len(server.jobs)) == (0, 0) and "\n" not in str(err.value)
        assert capped.cap.reserved == 0 and capped.cap.holding == 0
        fits = batch_client(server, tmp_path / "fits", cap=DollarCap(sum(worst)))
        _, usage = fits.run_batch(asked)
    assert usage.calls_paid == 4 and len(server.jobs) == 1
    assert fits.cap.spent == pytest.approx(usage.usd_paid) and fits.cap.holding == 0 and fits.cap.reserved == 0


CREATES = {
    # (scripted answers to POST /v1/batches, creates sent, rate-limited): never two jobs for the same requests
    "429 twice, then made": (("429", "429"), 3, 2),
    "500, no job made: created again": (("500",), 2, 0),
    "500 after the job was made: found, not made again": (("500_after",), 1, 0),
    "dropped after the job was made: found, not made again": (("drop_after",), 1, 0),
}


@pytest.mark.parametrize("faults, creates, limited", CREATES.values(), ids=CREATES.keys())
def test_a_job_create_that_fails_is_retried_or_looked_up_and_one_job_answers(faults, creates, limited, tmp_path):
    with FakeBatchServer(create_faults=faults) as server:
        client = batch_client(server, tmp_path / "cache")
        responses, usage = client.run_batch(requests(3))
        (job,) = server.jobs
    assert server.creates == creates and usage.rate_limited == limited and usage.batch_ids == [job.id]
    assert job.metadata["baldistill_requests"] and len(job.lines) == 3
    assert usage.calls_paid == 3 and all(r.content and not r.cached for r in responses)
    assert len(journal(tmp_path / "cache")) == 3 and journal(tmp_path / "cache", "unknown") == []


def test_a_create_rate_limited_past_max_retries_is_one_line_and_nothing_is_billed(tmp_path):
    with FakeBatchServer(create_faults=("429",) * 5) as server:
        client = batch_client(server, tmp_path / "cache", max_retries=2)
        with pytest.raises(BaldistillError) as err:
            client.run_batch(requests(2))
        creates = server.creates
    message = str(err.value)
    assert message.startswith("teacher Batch API: cannot create the job: HTTP 429") and "\n" not in message
    assert "after 3 attempt(s) (teacher.max_retries)" in message and creates == 3 and server.jobs == []
    assert len(journal(tmp_path / "cache", "unbilled")) == 2 and journal(tmp_path / "cache", "unknown") == []
    assert client.cap.holding == 0 and client.cap.spent == 0


def test_the_api_key_stays_out_of_errors_and_files(tmp_path):
    with FakeBatchServer(refuse_upload=401) as server:
        client = batch_client(server, tmp_path / "cache")
        with pytest.raises(BaldistillError) as err:
            client.run_batch(requests(2))
    message = str(err.value)
    assert message.startswith("teacher Batch API: cannot upload the requests: HTTP 401") and "\n" not in message
    assert SECRET not in message and "Bearer ***" in message and "$BALDISTILL_TEST_KEY" in message
    assert SECRET not in repr(client) and files_contain(tmp_path, SECRET) == []
    assert len(server.jobs) == 0 and client.cap.holding == 0


def test_a_server_without_the_batch_api_is_one_clear_line(tmp_path):
    with FakeBatchServer() as server:
        client = make_client(server.base_url + "/nothing", tmp_path / "cache", mode="batch")
        with pytest.raises(BaldistillError, match=r"HTTP 404 .*does teacher\.base_url serve the Batch API"):
            client.run_batch(requests(1))


def test_the_local_llama_cpp_server_has_no_batch_api_and_is_not_started(tmp_path):
    params = make_params("local", mode="batch")
    with (
        open_client(params.teacher, budget=1, cache=RequestCache(tmp_path / "cache")) as client,
        pytest.raises(BaldistillError, match=r"the local llama\.cpp server has none"),
    ):
        client.run_batch(requests(1))
    assert client.base_url is None


# ---- offline: export the job's input file, run it elsewhere (vLLM run_batch), import its output ----


def run_cli(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BALDISTILL_TEACHER_CACHE": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-m", "baldistill.cli", "batch", *args], env=env, capture_output=True, text=True
    )


def run_batch_offline(batch_in: Path, batch_out: Path) -> None:
    """What `python -m vllm.entrypoints.openai.run_batch -i batch_in -o batch_out` writes."""
    lines = read_jsonl(batch_in)
    answers = [
        result_line("vllm", i, line, 200, completion(line["body"], default_content(line["body"])))
        for i, line in enumerate(lines[1:], start=1)  # the first request failed there: it is left unanswered
    ]
    write_jsonl(batch_out, answers)


def test_export_run_elsewhere_import_and_the_rerun_is_answered_from_the_cache(tmp_path, monkeypatch):
    asked = requests(3)
    monkeypatch.setenv(EXPORT_ENV, str(tmp_path / "batch_in.jsonl"))
    client = make_client("http://127.0.0.1:9/v1", tmp_path / "cache", mode="batch")
    with pytest.raises(BaldistillError, match=r"wrote the 3 request\(s\) of this step to .*batch_in.jsonl"):
        client.run_batch(asked)
    assert client.base_url is None  # nothing was reached
    lines = read_jsonl(tmp_path / "batch_in.jsonl")
    assert [line["custom_id"] for line in lines] == [client.key(r) for r in asked]
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/chat/completions")}

    run_batch_offline(tmp_path / "batch_in.jsonl", tmp_path / "batch_out.jsonl")
    done = run_cli(
        "import", str(tmp_path / "batch_in.jsonl"), str(tmp_path / "batch_out.jsonl"), cache_dir=tmp_path / "cache"
    )
    assert done.returncode == 0, done.stderr
    assert "2 answer(s) stored, 1 request(s) of the input unanswered" in done.stdout

    monkeypatch.delenv(EXPORT_ENV)
    rerun = make_client("http://127.0.0.1:9/v1", tmp_path / "cache", mode="batch")
    _, usage = rerun.run_batch(asked[1:])
    assert (usage.cached, usage.calls_paid) == (2, 0) and rerun.base_url is None


def test_import_refuses_a_line_whose_custom_id_is_not_its_bodys_key(tmp_path):
    line = {"custom_id": "0" * 64, "method": "POST", "url": "/v1/chat/completions", "body": requests(1)[0].body("m")}
    (tmp_path / "in.jsonl").write_text(json.dumps(line) + "\n")
    (tmp_path / "out.jsonl").write_text("")
    done = run_cli("import", str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), cache_dir=tmp_path / "cache")
    assert done.returncode == 2 and "custom_id is not the cache key of its body" in done.stderr
