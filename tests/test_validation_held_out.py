"""The validation rows stay out of selection, synthesis demonstrations and
training, for every policy: the rows policy feedback allocates by (and that
tuning is done on) are never rows the student was trained on.

Pipeline level: the steps that select, synthesize or train read the pool, and
only synthesize opens validation.jsonl, to drop synthetic rows that copy its
text (dvc.yaml's deps; the contract test's audited run pins each step's reads
to its deps). Library level: the tiny data set prepared, then every policy's
plan run through the select, synthesis and training-set code, with a scorer in
place of the student (no model: each row's IFD is given)."""

from __future__ import annotations

import json

import pytest
import yaml

from baldistill.core.allocation import make_plan
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.feedback import DomainScore, FeedbackRule, shrunk_scores
from baldistill.core.files import write_json
from baldistill.core.params import Params
from baldistill.core.policies import POLICY_NAMES
from baldistill.core.rows import domain_counts
from baldistill.data.datasets import prepare
from baldistill.student.ifd import IfdScore
from baldistill.student.selection import select
from baldistill.student.training_set import gather
from baldistill.teacher.synthesis import synthesis_calls

from support.dvc_project import REPO
from support.tiny_pipeline import write_data

# Steps that may open the validation rows, and why.
READERS = {
    "prepare": "writes them",
    "score_validation": "scores the previous student on them",
    "evaluate": "scores on them under evaluate.split: validation",
    "evaluate_zeroshot": "as evaluate",
    "synthesize": "drops synthetic rows that copy their text",
}


def test_only_scoring_and_decontamination_read_the_validation_rows():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    readers = set()
    for name, stage in stages.items():
        body = stage.get("do", stage)
        files = [str(d) for d in body.get("deps", [])] + [str(o) for o in body.get("outs", [])]
        if any(f in ("data/prepared/validation.jsonl", "data/prepared/${evaluate.split}.jsonl") for f in files):
            readers.add(name)
    assert readers == set(READERS)


def fake_ifd(rows):
    """A scorer in place of the student: IFD from the row's text, deterministic."""
    return [IfdScore((sum(map(ord, r.input)) % 97) / 100, 1.0, 1.0) for r in rows], 0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The tiny pipeline's data set (tests/support/tiny_pipeline.py), prepared as the prepare step does."""
    root = tmp_path_factory.mktemp("held-out")
    (root / "raw").mkdir()
    write_data(root / "raw")
    jsonl = {"train": str(root / "raw/train.jsonl"), "test": str(root / "raw/test.jsonl"), "name": "R52"}
    jsonl["fields"] = {"id": None, "input": "text", "label": "topic", "domain": "topic"}
    data = {"dataset": "jsonl", "test_per_domain": None, "head_threshold": 5, "jsonl": jsonl}
    params = Params.model_validate({"data": data, "budget": {"total": 16}, "stages": {"s0": "start"}})
    pool, validation, _test, info = prepare(params.data)
    write_json(root / "info.json", info)  # as prepare writes it, and every step loads it
    return params, pool, validation, DatasetInfo.load(root / "info.json")


def test_the_validation_rows_are_no_pool_rows(prepared):
    _, pool, validation, _ = prepared
    assert validation and len(domain_counts(validation)) == 2  # earn and acq; tea's one row stays in the pool
    assert not {r.id for r in validation} & {r.id for r in pool}
    assert not {r.input for r in validation} & {r.input for r in pool}


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_no_policy_selects_shows_or_trains_on_a_validation_row(prepared, policy):
    params, pool, validation, info = prepared
    held_ids, held_inputs = {r.id for r in validation}, {r.input for r in validation}
    counts = domain_counts(pool)
    # feedback's later stages as if its student were weakest on earn
    scores = shrunk_scores(list(counts), {"earn": DomainScore(0, 2), "acq": DomainScore(1, 1)}, 4.0)
    plan = make_plan(counts, 24, 3, policy, scores=scores, rule=FeedbackRule(4.0, 0.5, 3.0))
    taken: set[str] = set()
    train: list = []
    for k, alloc in enumerate(plan["per_stage"]):
        allocation = {**alloc, "policy": policy}
        selected, _ = select(
            pool, allocation, taken, k, params.select, params.student, 0, info.task, None, score_rows=fake_ifd
        )
        taken |= {r.id for r in selected if r.source != "duplicate"}
        quota = {d: n for d, n in alloc["synthetic"].items() if n}
        calls = synthesis_calls(pool, quota, k, params.teacher, 0, params.data.max_input_chars, info)
        shown = [demo for call in calls for demo in call.demonstrations]
        annotated = [r.with_(rationale=f"The answer is {r.label}.") for r in selected if r.source != "duplicate"]
        train, _ = gather(train, annotated, [], selected)  # synthetic rows are the teacher's, not ours
        for rows in (selected, shown, train):
            assert not {r.id for r in rows} & held_ids
            assert not {r.input for r in rows} & held_inputs
        if quota:
            assert shown  # the synthesis requests do show demonstrations, all from the pool
        prompts = json.dumps([call.request.messages for call in calls])
        assert not any(text in prompts for text in held_inputs)
    if policy != "zeroshot":
        assert train  # the check above had rows to look at
