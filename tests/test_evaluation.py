"""Evaluation end to end on the tiny student, and its scoring with a scripted generator."""

from __future__ import annotations

import pytest

from baldistill.core.metrics import score
from baldistill.core.params import Params
from baldistill.core.rows import Row
from baldistill.student.answer_extraction import ROUTES
from baldistill.student.evaluation import evaluate, row_score

LABELS = ["earn", "acq", "gold", "crude"]
POOL = {"earn": 120, "acq": 60, "gold": 7, "crude": 3}
KEYS = {
    "macro",
    "micro",
    "head",
    "tail",
    "per_domain",
    "n",
    "no_answer",
    "answer_sentence_rate",
    "routes",
    "echo_macro",
}


def sections(params):
    """What the evaluate step passes from params: its own sections and the head/tail threshold."""
    return params.evaluate, params.student, params.data.head_threshold


def make_params(model: str) -> Params:
    return Params.model_validate(
        {
            "budget": {"total": 8},
            "stages": {"s0": "start"},
            "data": {"head_threshold": 50},
            "student": {"model": model, "max_input_tokens": 24},
            "evaluate": {"batch_size": 4, "max_new_tokens": 6},
        }
    )


def make_test_rows() -> list[Row]:
    return [Row(id=f"t{i}", domain=d, input=f"report {i} on {d}", label=d) for i, d in enumerate(LABELS + LABELS[:2])]


def test_evaluate_runs_the_tiny_student_end_to_end(tiny_student_dir):
    rows = make_test_rows()
    metrics, predictions = evaluate(
        rows, *sections(make_params(tiny_student_dir)), "classification", LABELS, POOL, None
    )
    assert set(metrics) >= KEYS
    assert metrics["n"] == len(rows) == len(predictions)
    assert list(metrics["per_domain"]) == ["earn", "acq", "gold", "crude"]  # head to tail
    assert metrics["per_domain"]["earn"] == {"score": metrics["per_domain"]["earn"]["score"], "n": 2, "pool_rows": 120}
    assert 0.0 <= metrics["macro"] <= 1.0 and 0.0 <= metrics["no_answer"] <= 1.0
    assert set(metrics["routes"]) == set(ROUTES) and sum(metrics["routes"].values()) == len(rows)
    assert metrics["answer_sentence_rate"] == metrics["routes"]["answer_sentence"] / len(rows)
    assert metrics["no_answer"] == metrics["routes"]["none"] / len(rows)
    for row, pred in zip(rows, predictions):
        assert set(pred) == {"id", "domain", "gold", "pred", "output", "score", "route"}
        assert (pred["id"], pred["domain"], pred["gold"]) == (row.id, row.domain, row.label)
        assert isinstance(pred["output"], str)
        # A closed label set: every row gets an answer, the student's own.
        assert pred["route"] in ("answer_sentence", "second_pass") and pred["pred"] in LABELS


def test_evaluate_with_a_base_marker_dir_is_zero_shot(tiny_student_dir, tmp_path):
    (tmp_path / "BASE").write_text("")
    rows = make_test_rows()[:2]
    params = make_params(tiny_student_dir)
    with_marker, _ = evaluate(rows, *sections(params), "classification", LABELS, POOL, str(tmp_path))
    without, _ = evaluate(rows, *sections(params), "classification", LABELS, POOL, None)
    assert with_marker == without


def test_evaluate_scores_what_the_student_says(tiny_student_dir):
    """Scripted outputs: right, right, an echoed label without an answer sentence, wrong... -> routes,
    scores, and the side number of what the old reading would have credited."""
    rows = make_test_rows()
    outputs = [
        "It reports profits. The answer is earn.",
        "The answer is **acq**.",
        "Gold prices are mentioned; I am not sure.",  # gold row: the label is echoed, not stated
        "The answer is gold.",  # gold for crude
        "The answer is earn.",
        "The answer is ACQ.",
    ]
    seen = {}

    def scripted(model, tokenizer, prompts, max_new_tokens, batch_size, workers=None, batch_tokens=None):
        seen.update(prompts=prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        return outputs

    metrics, predictions = evaluate(
        rows, *sections(make_params(tiny_student_dir)), "classification", LABELS, POOL, None, generate=scripted
    )
    assert seen["max_new_tokens"] == 6 and seen["batch_size"] == 4
    assert "report 0 on earn" in seen["prompts"][0] and "<|im_start|>assistant" in seen["prompts"][0]
    preds = [p["pred"] for p in predictions]
    assert [p["route"] for p in predictions] == ["answer_sentence"] * 2 + ["second_pass"] + ["answer_sentence"] * 3
    # The third row's answer is the one the student gives when asked, one of the labels.
    assert preds[:2] + preds[3:] == ["earn", "acq", "gold", "earn", "acq"] and preds[2] in LABELS
    assert [p["score"] for p in predictions] == [1, 1, float(preds[2] == "gold"), 0, 1, 1]
    assert metrics == {
        **score("classification", [r.label for r in rows], preds, [r.domain for r in rows], LABELS, POOL, 50),
        **{k: metrics[k] for k in ("no_answer", "answer_sentence_rate", "routes", "echo_macro")},
    }
    assert metrics["routes"] == {"answer_sentence": 5, "second_pass": 1, "none": 0}
    assert metrics["no_answer"] == 0.0 and metrics["answer_sentence_rate"] == pytest.approx(5 / 6)
    # The old reading credited the echoed "gold": earn 1, acq 1, gold TP1 FP1 -> 2/3, crude 0.
    assert metrics["echo_macro"] == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)


def test_row_score_per_task():
    assert row_score("classification", "earn", "EARN", LABELS) == 1.0
    assert row_score("classification", "earn", None, LABELS) == 0.0
    assert row_score("math", "\\frac{1}{2}", "0.5", []) == 1.0
    assert row_score("multiple_choice", "B", "C", []) == 0.0
    assert row_score("abstractive_qa", "cat sat down", "the cat sat", []) == pytest.approx(0.8)
