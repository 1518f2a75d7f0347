"""annotate() and synthesize(), and their stage scripts, end to end against a loopback OpenAI-protocol server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from baldistill.core.answers import extract_answer
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_json, read_jsonl, write_json
from baldistill.core.layout import StagePaths
from baldistill.core.rows import Row, read_rows, write_rows
from baldistill.teacher.annotation import annotate, keep_gold_labels
from baldistill.teacher.endpoint import open_client
from baldistill.teacher.spending import Price, worst_case_usd
from baldistill.teacher.synthesis import synthesize, with_earlier_rationales
from baldistill.teacher.usage import empty_ledger

from support.fake_batch_server import FakeBatchServer
from support.teacher_fakeserver import Action, FakeTeacher, default_content
from support.teacher_helpers import INFO, LABELS, SECRET, files_contain, make_params, pool_rows

SEED = 0  # policy.seed
CHARS = 1500  # data.max_input_chars


@pytest.fixture(autouse=True)
def teacher_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BALDISTILL_TEST_KEY", SECRET)
    monkeypatch.setenv("BALDISTILL_TEACHER_CACHE", str(tmp_path / "cache"))


def prompt_of(body: dict) -> str:
    return body["messages"][-1]["content"]


# ---- annotation -------------------------------------------------------------


def test_annotate_gives_every_row_a_rationale(tmp_path):
    rows = pool_rows(2)
    params = make_params("http://placeholder", max_tokens=77)
    with FakeTeacher() as server:
        params = make_params(server.base_url, max_tokens=77)
        with open_client(params.teacher, budget=len(rows), backoff=0.01) as client:
            out, report = annotate(rows, 1, params.teacher, CHARS, INFO, client)
    assert [r.id for r in out] == [r.id for r in rows]
    assert all(r.source == "pool" and r.stage == 1 for r in out)
    assert all(extract_answer(r.rationale, "classification", LABELS) == r.label for r in out)
    bodies = [s.body for s in server.seen]
    assert {(b["temperature"], b["max_tokens"]) for b in bodies} == {(0.0, 77)}
    for row in rows:  # arrival order is not row order at concurrency 2
        (prompt,) = [prompt_of(b) for b in bodies if f"News story: {row.input}." in prompt_of(b)]
        assert f"The topic of this story is {row.label}." in prompt
    assert report["mismatch_total"] == 0 and report["teacher"]["calls_paid"] == len(rows)


def disagreeing(key, attempt, body):
    """Answer 'crude' for earn stories and nothing usable for acq stories."""
    prompt = prompt_of(body)
    if "The topic of this story is earn." in prompt:
        return Action(content="It mentions oil. The answer is crude.")
    if "The topic of this story is acq." in prompt:
        return Action(content="This is a story about companies.")
    if "The topic of this story is ship." in prompt:
        return Action(content="The topic of this story is ship.")  # right, but no answer sentence
    return Action()


@pytest.mark.parametrize("policy", ["keep", "drop"])
def test_annotate_mismatches_are_counted_and_handled(policy):
    rows = pool_rows(2)
    with FakeTeacher(disagreeing) as server:
        params = make_params(server.base_url, on_mismatch=policy)
        with open_client(params.teacher, budget=len(rows), backoff=0.01) as client:
            out, report = annotate(rows, 0, params.teacher, CHARS, INFO, client)
    assert report["mismatches"] == {"no_answer": 2, "wrong_answer": 2}
    assert report["answer_sentence_added"] == 2
    ships = [r for r in out if r.label == "ship"]
    assert len(ships) == 2 and all(r.rationale.endswith("is ship. The answer is ship.") for r in ships)
    fixed = [r for r in out if r.label in ("earn", "acq")]
    if policy == "drop":
        assert fixed == [] and len(out) == len(rows) - 4
    else:
        assert len(out) == len(rows)
        assert all(r.rationale.endswith(f"The answer is {r.label}.") for r in fixed)
        assert all(extract_answer(r.rationale, "classification", LABELS) == r.label for r in fixed)
    assert report["teacher"]["calls_budgeted"] == len(rows)


def long_winded(key, attempt, body):
    """Twelve words of reasoning before the answer sentence."""
    label = re.search(r"The topic of this story is (\S+)\.", prompt_of(body)).group(1)
    # "crude" named in passing, before the cut: not the teacher's answer.
    return Action(content=f"one two crude four five six seven eight nine ten eleven twelve. The answer is {label}.")


@pytest.mark.parametrize("policy", ["keep", "drop"])
def test_a_rationale_cut_by_max_tokens_is_kept_with_its_answer_sentence(policy):
    rows = pool_rows(1)
    with FakeTeacher(long_winded) as server:
        params = make_params(server.base_url, on_mismatch=policy, max_tokens=8)
        with open_client(params.teacher, budget=len(rows), backoff=0.01) as client:
            out, report = annotate(rows, 0, params.teacher, CHARS, INFO, client)
    # Cut before its answer: not a mismatch, kept even under "drop", the gold answer sentence appended.
    assert report["cut_at_max_tokens"] == len(rows) and report["mismatch_total"] == 0
    assert report["answer_sentence_added"] == 0  # each appended sentence is counted once, as cut
    cut = "one two crude four five six seven eight"
    assert [r.rationale for r in out] == [f"{cut} The answer is {r.label}." for r in rows]


def test_annotate_counts_how_answers_ended_and_rationales_that_only_restate_the_label():
    """Two of three answers end by themselves; one of those only restates its label."""
    rows = [pool_rows(1)[i] for i in (0, 1, 2)]
    long = " ".join(f"w{i}" for i in range(30))

    def answers(key, attempt, body):
        label = re.search(r"The topic of this story is (\S+)\.", prompt_of(body)).group(1)
        if label == rows[0].label:
            return Action(content=f"The correct topic is {label}. The answer is {label}.")
        if label == rows[1].label:  # agrees, but states no answer sentence: one is appended
            return Action(content=f"The story names {label} output, exports and prices of the main producers in Asia.")
        return Action(content=long)  # cut at max_tokens

    with FakeTeacher(answers) as server:
        params = make_params(server.base_url, concurrency=1, max_tokens=20)
        with open_client(params.teacher, budget=len(rows), backoff=0.01) as client:
            _, report = annotate(rows, 0, params.teacher, CHARS, INFO, client)
    assert len({r.label for r in rows}) == 3
    assert report["finish_reasons"] == {"length": 1, "stop": 2}
    assert report["cut_at_max_tokens"] == 1 and report["answer_sentence_added"] == 1
    assert report["label_only"] == 1  # the echo only


def test_gold_in_prompt_false_sends_table_9_without_the_gold_label():
    rows = pool_rows(1)[:2]
    with FakeTeacher() as server:
        params = make_params(server.base_url, gold_in_prompt=False)
        with open_client(params.teacher, budget=len(rows), backoff=0.01) as client:
            out, report = annotate(rows, 0, params.teacher, CHARS, INFO, client)
    for body in (s.body for s in server.seen):
        assert "You must select the topic from this set: " in prompt_of(body)
        assert "The topic of this story is" not in prompt_of(body)
        assert prompt_of(body).endswith("End it with this exact sentence: The answer is <topic>.")
    assert len(out) == len(rows)  # the fake echoes no gold label: each is a mismatch, kept with the gold answer
    assert report["mismatch_total"] == len(rows)


def no_text_for_acq(key, attempt, body):
    """A teacher that spends max_tokens before writing anything on acq stories (a reasoning model)."""
    return Action("length") if "The topic of this story is acq." in prompt_of(body) else Action()


def test_rows_the_teacher_gives_no_text_are_asked_twice_then_dropped_by_reason():
    rows = pool_rows(2)
    with FakeTeacher(no_text_for_acq) as server:
        params = make_params(server.base_url, max_retries=6)
        with open_client(params.teacher, budget=len(rows), backoff=0.01) as client:
            out, report = annotate(rows, 0, params.teacher, CHARS, INFO, client)
    assert sorted(r.id for r in rows if r.label == "acq") == sorted({r.id for r in rows} - {r.id for r in out})
    assert report["teacher"]["failed"] == {"no text before max_tokens": 2} and report["dropped"] == 2
    assert len(server.seen) == len(rows) + 2  # each acq row asked twice, not max_retries + 1 = 7 times
    assert report["teacher"]["attempts_billed"] == len(rows) + 2


def test_annotate_refuses_to_go_over_budget_and_sends_nothing():
    rows = pool_rows(2)
    with FakeTeacher() as server:
        params = make_params(server.base_url)
        with (
            open_client(params.teacher, budget=len(rows) - 1, backoff=0.01) as client,
            pytest.raises(BaldistillError, match="budget exceeded"),
        ):
            annotate(rows, 0, params.teacher, CHARS, INFO, client)
    assert server.seen == []


def test_unset_api_key_for_a_remote_url_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("BALDISTILL_TEST_KEY")
    params = make_params("https://api.example.invalid/v1")
    with (
        pytest.raises(BaldistillError, match=r"BALDISTILL_TEST_KEY is not set"),
        open_client(params.teacher, budget=2) as client,
    ):
        annotate(pool_rows(1)[:1], 0, params.teacher, CHARS, INFO, client)


def test_a_run_answered_from_the_cache_needs_no_server_and_no_key(monkeypatch):
    rows = pool_rows(1)
    with FakeTeacher() as server:
        params = make_params(server.base_url)
        with open_client(params.teacher, budget=len(rows), backoff=0.01) as client:
            first, _ = annotate(rows, 0, params.teacher, CHARS, INFO, client)
    # the server is gone and the key unset: every answer must come from the cache
    monkeypatch.delenv("BALDISTILL_TEST_KEY")
    with open_client(params.teacher, budget=len(rows), backoff=0.01) as client:
        again, report = annotate(rows, 0, params.teacher, CHARS, INFO, client)
    assert again == first
    assert report["teacher"]["calls_paid"] == 0 and report["teacher"]["cached"] == len(rows)
    assert report["teacher"]["calls_budgeted"] == len(rows) and client.base_url is None


# ---- synthesis --------------------------------------------------------------


def topic(body: dict) -> str:
    return re.search(r"write a short news story with the topic (\S+) and", prompt_of(body)).group(1)


def by_sample(outputs: dict[str, list[str]]):
    """Answer the i-th request of each topic (in arrival order) with outputs[topic][i]."""
    count: dict[str, int] = {}

    def plan(key, attempt, body):
        domain = topic(body)
        i = count.get(domain, 0)
        count[domain] = i + 1
        return Action(content=outputs[domain][i % len(outputs[domain])])

    return plan


GOOD = "Input: Tanker rates rose as ports reopened.\nRationale: Shipping is the subject. The answer is ship."
ECHO = "Input: Please write a short news story with the topic ship and give the step-by-step rationale."


def test_synthesize_parses_keeps_and_drops_by_reason():
    pool = pool_rows(4)
    outputs = {
        "ship": [
            GOOD,
            "**Input:** Freight lines add ships to Asia.\n**Rationale:** About shipping. The answer is **ship**.",
            "Input: Crude prices fell sharply in New York.\nRationale: Oil. The answer is crude.",  # wrong label
            "Here is a story about ships, no format at all.",  # unparsable
            f"Input: {pool_rows(4)[-1].input}\nRationale: Copy. The answer is ship.",  # copied a demonstration
            "Input: <news story>\nRationale: A story about ships. The answer is ship.",  # the prompt's slot
            "Input: <insert a news story with the topic ship here>\nRationale: Ships. The answer is ship.",
            f"{ECHO}\nRationale: The story is about ships. The answer is ship.",  # the instructions again
            "Input: Shipping news\nRationale: It names shipping. The answer is ship.",  # no story of its own
        ],
        "crude": ["Input: OPEC cut its output again.\nRationale: Oil supply story, so crude"],  # answer w/o sentence
    }
    with FakeTeacher(by_sample(outputs)) as server:
        params = make_params(server.base_url, concurrency=1, synth_temperature=0.7, synth_max_tokens=99)
        with open_client(params.teacher, budget=11, backoff=0.01) as client:
            rows, report = synthesize(pool, {"ship": 9, "crude": 1}, 2, params.teacher, SEED, CHARS, INFO, client)
    kept = {r.id: r for r in rows}
    assert set(kept) == {"syn-s2-ship-0", "syn-s2-ship-1", "syn-s2-crude-0"}
    assert report["dropped"] == {
        "copied_demonstration": 1,
        "echoes_prompt": 1,
        "no_input": 1,
        "no_rationale": 1,
        "placeholder": 2,
        "wrong_label": 1,
    }
    assert report["per_domain"]["ship"] == {"requested": 9, "kept": 2}
    assert report["finish_reasons"] == {"stop": 10} and report["cut_at_max_tokens"] == 0
    assert report["answer_sentence_added"] == 1  # crude's "so crude"
    assert report["label_only"] == 3  # "Shipping is the subject." is not reasoning (core.answers.restates_label)
    assert kept["syn-s2-ship-0"].input == "Tanker rates rose as ports reopened."
    assert kept["syn-s2-crude-0"].rationale.endswith("The answer is crude.")
    assert all(r.source == "synthetic" and r.stage == 2 and r.label == r.domain for r in rows)
    assert report["teacher"]["calls_budgeted"] == 10  # dropped calls still cost budget
    assert {(s.body["temperature"], s.body["max_tokens"]) for s in server.seen} == {(0.7, 99)}


def test_synthesis_prompts_show_three_demonstrations_of_their_own_domain():
    pool = pool_rows(5)
    with FakeTeacher(by_sample({"ship": [GOOD]})) as server:
        params = make_params(server.base_url)
        with open_client(params.teacher, budget=4, backoff=0.01) as client:
            synthesize(pool, {"ship": 4}, 0, params.teacher, SEED, CHARS, INFO, client)
    for seen in server.seen:
        shown = [r for r in pool if f"Input: {r.input}\n" in prompt_of(seen.body)]
        assert len(shown) == 3 and {r.domain for r in shown} == {"ship"}
        assert "The answer is ship." in prompt_of(seen.body)


def test_synthesis_demonstrations_show_rationales_annotated_in_earlier_stages():
    pool = pool_rows(5)
    ship = [r for r in pool if r.domain == "ship"]
    earlier = [ship[0].with_(rationale="Tankers and ports are shipping news. The answer is ship.", source="pool")]
    shown_pool = with_earlier_rationales(pool, earlier)
    with FakeTeacher(by_sample({"ship": [GOOD]})) as server:
        params = make_params(server.base_url)
        with open_client(params.teacher, budget=2, backoff=0.01) as client:
            synthesize(shown_pool, {"ship": 2}, 1, params.teacher, SEED, CHARS, INFO, client)
    for seen in server.seen:  # the annotated row is drawn first, with its own rationale
        assert "Tankers and ports are shipping news. The answer is ship." in prompt_of(seen.body)
        assert f"Input: {ship[0].input}\n" in prompt_of(seen.body)


def test_a_synthetic_row_that_copies_test_text_is_dropped():
    story = "the tanker fleet of the company loaded crude at the port of rotterdam on monday and sailed for houston"
    copied = f"Input: Rotterdam - {story.title()}.\nRationale: Tankers carry cargo. The answer is ship."
    fresh = "Input: A freighter docked late in Rotterdam.\nRationale: Ports and freighters. The answer is ship."
    with FakeTeacher(by_sample({"ship": [copied, fresh]})) as server:
        params = make_params(server.base_url)
        with open_client(params.teacher, budget=2, backoff=0.01) as client:
            rows, report = synthesize(
                pool_rows(3), {"ship": 2}, 0, params.teacher, SEED, CHARS, INFO, client, held_out=[story]
            )
    assert [r.input for r in rows] == ["A freighter docked late in Rotterdam."]
    assert report["dropped"] == {"test_overlap": 1} and report["kept"] == 1


def test_synthesis_is_seeded_and_fresh_per_stage(tmp_path, monkeypatch):
    pool = [*pool_rows(5), Row(id="lonely", domain="nat-gas", input="gas pipeline deal", label="nat-gas")]
    outputs = {
        "ship": [GOOD],
        "nat-gas": ["Input: LNG imports rose for a third month.\nRationale: Gas. The answer is nat-gas."],
    }

    def prompts_for(stage: int, cache: str) -> list[str]:
        monkeypatch.setenv("BALDISTILL_TEACHER_CACHE", str(tmp_path / cache))
        with FakeTeacher(by_sample(outputs)) as server:
            params = make_params(server.base_url, concurrency=1)
            with open_client(params.teacher, budget=3, backoff=0.01) as client:
                rows, _ = synthesize(pool, {"ship": 2, "nat-gas": 1}, stage, params.teacher, SEED, CHARS, INFO, client)
        assert len(rows) == 3
        return sorted(prompt_of(s.body) for s in server.seen)

    first = prompts_for(0, "a")
    assert prompts_for(0, "b") == first  # same seed, stage: same demonstrations
    assert prompts_for(1, "b") != first  # another stage draws again ...
    # ... and even the one-row domain, whose prompt cannot change, is a new call, not a cache hit.
    assert sum("with the topic nat-gas and" in p for p in prompts_for(1, "a")) == 1


def test_multiple_choice_answer_must_be_one_of_the_choices():
    info = DatasetInfo(name="mcqa", task="multiple_choice", labels=["A", "B", "C", "D", "E"])
    pool = [Row(id=f"q{i}", domain="obqa", input=f"Q{i}? (A) x (B) y", label="A") for i in range(3)]
    outputs = [
        "Input: What melts ice? (A) heat (B) cold\nRationale: Heat melts ice. The answer is A.",
        "Input: What is wet? (A) water (B) sand\nRationale: Water. The answer is D.",
    ]
    count = iter(range(100))
    with FakeTeacher(lambda key, attempt, body: Action(content=outputs[next(count) % 2])) as server:
        params = make_params(server.base_url, concurrency=1)
        with open_client(params.teacher, budget=2, backoff=0.01) as client:
            rows, report = synthesize(pool, {"obqa": 2}, 0, params.teacher, SEED, CHARS, info, client)
    assert [(r.id, r.label) for r in rows] == [("syn-s0-obqa-0", "A")]
    assert report["dropped"] == {"answer_not_a_choice": 1}


def test_no_secret_in_cache_reports_or_rows(tmp_path):
    with FakeTeacher(by_sample({"ship": [GOOD]})) as server:
        params = make_params(server.base_url)
        with open_client(params.teacher, budget=2, backoff=0.01) as client:
            rows, report = synthesize(pool_rows(3), {"ship": 2}, 0, params.teacher, SEED, CHARS, INFO, client)
            client.export_used(tmp_path / "responses.jsonl")
    assert files_contain(tmp_path, SECRET) == []
    assert SECRET not in repr(report) + repr(rows)


def test_dataset_info_round_trip_and_validation(tmp_path):
    INFO.save(tmp_path / "info.json")
    assert DatasetInfo.load(tmp_path / "info.json") == INFO
    assert INFO.labels_text == "earn, acq, crude, nat-gas, ship"
    (tmp_path / "bad.json").write_text('{"name": "x", "task": "regression", "labels": []}')
    with pytest.raises(BaldistillError, match=r"bad.json: dataset info: task must be one of"):
        DatasetInfo.load(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text('{"name": "x", "task": "math", "labels": "abc"}')
    with pytest.raises(BaldistillError, match="labels must be a list"):
        DatasetInfo.load(tmp_path / "bad2.json")


# ---- one report shape, whether or not the teacher is asked -------------------


def test_annotation_inputs_are_cut_to_max_input_chars():
    rows = [Row(id="r", domain="ship", input="tankers " * 40, label="ship")]
    with FakeTeacher() as server:
        params = make_params(server.base_url)
        with open_client(params.teacher, budget=1, backoff=0.01) as client:
            annotate(rows, 0, params.teacher, 20, INFO, client)
    (seen,) = server.seen
    assert f"News story: {rows[0].input[:20]}." in prompt_of(seen.body)


def test_gold_labels_only_has_the_annotate_report_shape_and_calls_nobody():
    rows = pool_rows(1)
    with FakeTeacher() as server:
        params = make_params(server.base_url)
        with open_client(params.teacher, budget=len(rows), backoff=0.01) as client:
            _, annotated = annotate(rows, 0, params.teacher, CHARS, INFO, client)
    kept, report = keep_gold_labels(rows, 3)
    assert [(r.id, r.rationale, r.source, r.stage) for r in kept] == [(r.id, None, "pool", 3) for r in rows]
    assert report.keys() == annotated.keys() and report["teacher"].keys() == annotated["teacher"].keys()
    assert report["teacher"]["calls_budgeted"] == 0 and report["kept"] == len(rows) and report["dropped"] == 0


def test_synthesis_with_no_quota_has_the_same_report_shape_and_reaches_no_endpoint(monkeypatch):
    monkeypatch.delenv("BALDISTILL_TEST_KEY")  # a remote URL without a key: reaching it would fail
    params = make_params("https://api.example.invalid/v1")
    with open_client(params.teacher, budget=0) as client:
        rows, empty = synthesize(pool_rows(2), {}, 0, params.teacher, SEED, CHARS, INFO, client)
    assert rows == [] and client.base_url is None
    with FakeTeacher(by_sample({"ship": [GOOD]})) as server:
        params = make_params(server.base_url)
        with open_client(params.teacher, budget=1, backoff=0.01) as client:
            _, report = synthesize(pool_rows(2), {"ship": 1}, 0, params.teacher, SEED, CHARS, INFO, client)
    assert empty.keys() == report.keys() and empty["teacher"].keys() == report["teacher"].keys()
    assert empty["requested"] == empty["teacher"]["calls_budgeted"] == 0


STAGES = Path(__file__).resolve().parents[1] / "stages"


def run_teacher_steps(
    work: Path,
    base_url: str,
    policy: str,
    synthetic: dict[str, int],
    max_usd: float | None = None,
    spent: float = 0.0,
    budgeted: int = 3,
    teacher_calls: int | None = None,
    **teacher,
) -> dict:
    """Run stages/synthesize.py and stages/annotate.py for s0 in `work` (the run's earlier
    stages having budgeted `budgeted` calls of budget.total=100 and paid `spent` dollars;
    the stage's allocation giving it `teacher_calls`, default the 4 rows selected plus the
    synthetic quota; `teacher`: more teacher params); returns their outputs, or the failed
    step's stderr."""
    pool = pool_rows(3)
    write_rows(work / "data/prepared/pool.jsonl", pool)
    write_rows(work / "data/prepared/test.jsonl", [])
    write_rows(work / "data/prepared/validation.jsonl", [])
    INFO.save(work / "data/prepared/info.json")
    here, start = StagePaths("s0"), StagePaths("start")
    calls = sum(synthetic.values()) + 4 if teacher_calls is None else teacher_calls
    write_json(work / here.allocation, {"synthetic": synthetic, "teacher_calls": calls})
    write_rows(work / here.selected, [*pool[::4], pool[0].with_(id="copy", source="duplicate")])
    write_json(work / start.ledger, {**empty_ledger(), "calls_budgeted": budgeted, "calls_paid": 2, "usd_paid": spent})
    write_rows(work / start.train_set, [])
    price = {"input_per_1m": 1.0, "output_per_1m": 2.0}
    params = make_params(base_url, concurrency=1, price=price, **teacher).model_dump()
    params["policy"]["name"] = policy
    params["budget"]["max_usd"] = max_usd
    (work / "params.yaml").write_text(json.dumps(params))
    env = {**os.environ, "TQDM_DISABLE": "1"}
    for script, *args in (("synthesize.py", "s0", "start"), ("annotate.py", "s0", "start")):
        done = subprocess.run(
            [sys.executable, str(STAGES / script), *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            return {"failed": script, "returncode": done.returncode, "stderr": done.stderr}
    return {
        "synthesize": read_json(work / here.report("synthesize")),
        "annotate": read_json(work / here.report("annotate")),
        "responses": {step: read_jsonl(work / here.teacher_responses(step)) for step in ("synthesize", "annotate")},
        "ledger": read_json(work / here.ledger),
        "annotated": read_rows(work / here.annotated),
    }


def shape(report: dict) -> tuple:
    return tuple(report), tuple(report["teacher"])


def test_the_steps_write_one_report_shape_whether_or_not_they_call_the_teacher(tmp_path):
    synthesis = by_sample({"ship": [GOOD]})

    def plan(key, attempt, body):  # synthesis prompts get GOOD, annotation prompts the gold label
        return synthesis(key, attempt, body) if "write a short news story" in prompt_of(body) else Action()

    with FakeTeacher(plan) as server:
        asked = run_teacher_steps(tmp_path / "asked", server.base_url, "adaptive", {"ship": 2, "crude": 0})
        assert "failed" not in asked, asked
        n_asked = len(server.seen)
        quiet = run_teacher_steps(tmp_path / "quiet", server.base_url, "random_label", {"ship": 0})
    assert n_asked == 2 + 4 and len(server.seen) == n_asked  # random_label and a zero quota call nobody
    for step in ("synthesize", "annotate"):
        assert shape(asked[step]) == shape(quiet[step])
        assert quiet[step]["teacher"]["calls_budgeted"] == 0 and quiet["responses"][step] == []
    assert [len(asked["responses"][step]) for step in ("synthesize", "annotate")] == [2, 4]
    assert all(r.rationale is None for r in quiet["annotated"]) and len(quiet["annotated"]) == 4
    # the stage's ledger: the previous stage's plus this stage's synthesize and annotate usage
    teacher = asked["synthesize"]["teacher"], asked["annotate"]["teacher"]
    assert asked["ledger"]["calls_budgeted"] == 3 + 2 + 4 and asked["ledger"]["calls_paid"] == 2 + 2 + 4
    assert asked["ledger"]["prompt_tokens"] == sum(t["prompt_tokens"] for t in teacher) > 0
    assert asked["ledger"]["rows_synthesized"] == asked["synthesize"]["kept"] == 2
    # A remote (here: fake) teacher has no server log: no tokens/s, not a made-up one.
    assert asked["ledger"]["generation_tokens_per_s"] is None and asked["ledger"]["server_generated_tokens"] == 0
    quiet_ledger = {k: v for k, v in quiet["ledger"].items() if k in empty_ledger()}
    assert quiet_ledger == {**empty_ledger(), "calls_budgeted": 3, "calls_paid": 2}
    assert quiet["ledger"]["rows_synthesized"] == 0


def test_the_dollar_cap_stops_a_step_with_one_line_and_nothing_written(tmp_path, monkeypatch):
    """budget.max_usd counts what the run's earlier stages paid: one cap lets annotate
    through when nothing was spent before, and refuses it, before anything is sent and
    with nothing written, when earlier stages left less than a request's worst case."""
    with FakeTeacher() as server:
        free = run_teacher_steps(tmp_path / "free", server.base_url, "adaptive", {"ship": 0})
        worst = [
            worst_case_usd(r["request"]["messages"], r["request"]["max_tokens"], Price(1.0, 2.0))
            for r in free["responses"]["annotate"]
        ]
        cap = 1.5 * max(worst)
        monkeypatch.setenv("BALDISTILL_TEACHER_CACHE", str(tmp_path / "cache-fits"))
        fits = run_teacher_steps(tmp_path / "fits", server.base_url, "adaptive", {"ship": 0}, cap)
        seen = len(server.seen)
        monkeypatch.setenv("BALDISTILL_TEACHER_CACHE", str(tmp_path / "cache-capped"))
        spent = cap - 0.5 * min(worst)
        capped = run_teacher_steps(tmp_path / "capped", server.base_url, "adaptive", {"ship": 0}, cap, spent)
        sent_capped = len(server.seen) - seen
    assert free["annotate"]["teacher"]["usd_paid"] > 0
    assert free["ledger"]["usd_paid"] == pytest.approx(free["annotate"]["teacher"]["usd_paid"])
    # Real costs settle far below the worst cases, so the cap of 1.5 worst cases pays all four.
    assert "failed" not in fits and fits["annotate"]["teacher"]["calls_paid"] == 4
    assert fits["ledger"]["usd_paid"] <= cap
    assert capped["failed"] == "annotate.py" and capped["returncode"] == 2 and sent_capped == 0
    lines = capped["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: budget.max_usd: 4 of 4 teacher request(s) not answered")
    here = tmp_path / "capped"
    assert not (here / StagePaths("s0").annotated).exists() and not (here / StagePaths("s0").ledger).exists()


TAMPERED = {
    # a synthetic quota the budget never had: 3 budgeted + 98 > 100
    "allocation's quota": ({"synthetic": {"ship": 98}}, "synthesize.py", r"synthesize@s0 may make 98 teacher call"),
    # the stage's allocation gives annotate 2 calls, the selection has 4 rows
    "selection": ({"synthetic": {"ship": 0}, "teacher_calls": 2}, "annotate.py", r"teacher budget exceeded: 4 new"),
    # earlier stages budgeted 97 of 100: this stage's 4 annotation calls would pass it
    "earlier stages' calls": (
        {"synthetic": {"ship": 0}, "budgeted": 97},
        "annotate.py",
        r"would pass budget.total=100",
    ),
}


@pytest.mark.parametrize("tamper, step, why", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_step_past_budget_total_is_refused_with_one_line_and_nothing_sent_or_written(tamper, step, why, tmp_path):
    with FakeTeacher() as server:
        done = run_teacher_steps(tmp_path, server.base_url, "adaptive", **tamper)
    assert done.get("failed") == step and done["returncode"] == 2 and server.seen == []
    lines = done["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: budget.total: ") and re.search(why, lines[0]), lines
    written = StagePaths("s0").synthetic if step == "synthesize.py" else StagePaths("s0").annotated
    assert not (tmp_path / written).exists()


def test_teacher_mode_batch_runs_both_steps_as_one_batch_job_each(tmp_path):
    """teacher.mode: batch runs the synthesize and annotate steps against a loopback Batch API
    server: one job per step, every answer stored, paid at price x batch_factor."""

    def answer(body: dict) -> str:
        return GOOD if "write a short news story" in prompt_of(body) else default_content(body)

    with FakeBatchServer(answer=answer) as server:
        done = run_teacher_steps(
            tmp_path, server.base_url, "adaptive", {"ship": 2}, max_usd=1.0, mode="batch", batch_poll_seconds=0.05
        )
        assert "failed" not in done, done
        jobs = [len(job.lines) for job in server.jobs]
    assert jobs == [2, 4] and server.authorizations == {f"Bearer {SECRET}"}
    for step, calls in (("synthesize", 2), ("annotate", 4)):
        teacher = done[step]["teacher"]
        assert teacher["calls_paid"] == calls and len(teacher["batch_ids"]) == 1
        assert teacher["price"] == {"input_per_1m": 0.5, "output_per_1m": 1.0}
        assert teacher["usd_paid"] == pytest.approx(
            sum(
                Price(0.5, 1.0).cost(r["response"]["prompt_tokens"], r["response"]["completion_tokens"])
                for r in done["responses"][step]
            )
        )
        assert len(done["responses"][step]) == calls
    assert done["synthesize"]["kept"] == 2 and all(r.rationale for r in done["annotated"])
    assert done["ledger"]["calls_paid"] == 2 + 2 + 4
    assert files_contain(tmp_path, SECRET) == []
