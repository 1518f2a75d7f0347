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
    "route_accuracy",
    "echo_macro",
    "balanced_macro",
    "balanced_micro",
    "test_rows",
    "reading",
}


def sections(params):
    """What the evaluate step passes from params: its own sections and the head/tail threshold."""
    return params.evaluate, params.student, params.data.head_threshold


def make_params(model: str, second_pass: bool = False) -> Params:
    return Params.model_validate(
        {
            "budget": {"total": 8},
            "stages": {"s0": "start"},
            "data": {"head_threshold": 50},
            "student": {"model": model, "max_input_tokens": 24},
            "evaluate": {"batch_size": 4, "max_new_tokens": 6, "second_pass": second_pass},
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
        # Its own answer or none: six generated tokens rarely reach an answer sentence.
        assert pred["route"] in ("answer_sentence", "none") and (pred["pred"] in LABELS) == (pred["route"] != "none")
    assert metrics["reading"] == "sample" and "second_pass_macro" not in metrics


def test_evaluate_with_a_base_marker_dir_is_zero_shot(tiny_student_dir, tmp_path):
    (tmp_path / "BASE").write_text("")
    rows = make_test_rows()[:2]
    params = make_params(tiny_student_dir)
    with_marker, _ = evaluate(rows, *sections(params), "classification", LABELS, POOL, str(tmp_path))
    without, _ = evaluate(rows, *sections(params), "classification", LABELS, POOL, None)
    assert with_marker == without


OUTPUTS = [
    "It reports profits. The answer is earn.",
    "The answer is **acq**.",
    "Gold prices are mentioned; I am not sure.",  # gold row: the label is echoed, not stated
    "The answer is gold.",  # gold for crude
    "The answer is earn.",
    "The answer is ACQ.",
]


def scripted(seen: dict):
    def generate(model, tokenizer, prompts, max_new_tokens, batch_size, workers=None, batch_tokens=None):
        seen.update(prompts=prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        return OUTPUTS if max_new_tokens == 6 else [" earn."] * len(prompts)

    return generate


def test_evaluate_scores_what_the_student_says(tiny_student_dir):
    """Scripted outputs: right, right, an echoed label without an answer sentence (wrong: no
    answer), wrong, right, right -> routes, scores, and the side number of the old reading."""
    rows = make_test_rows()
    seen = {}
    metrics, predictions = evaluate(
        rows, *sections(make_params(tiny_student_dir)), "classification", LABELS, POOL, None, generate=scripted(seen)
    )
    assert seen["max_new_tokens"] == 6 and seen["batch_size"] == 4
    assert "report 0 on earn" in seen["prompts"][0] and "<|im_start|>assistant" in seen["prompts"][0]
    preds = [p["pred"] for p in predictions]
    assert [p["route"] for p in predictions] == ["answer_sentence"] * 2 + ["none"] + ["answer_sentence"] * 3
    assert preds == ["earn", "acq", None, "gold", "earn", "acq"]
    assert [p["score"] for p in predictions] == [1, 1, 0, 0, 1, 1]
    assert metrics == {
        **score("classification", [r.label for r in rows], preds, [r.domain for r in rows], LABELS, POOL, 50),
        **{k: metrics[k] for k in ("no_answer", "answer_sentence_rate", "routes", "route_accuracy", "echo_macro")},
    }
    assert metrics["routes"] == {"answer_sentence": 5, "answer_extraction": 0, "none": 1}
    assert metrics["route_accuracy"] == {"answer_sentence": 0.8, "answer_extraction": None, "none": 0.0}
    assert metrics["no_answer"] == pytest.approx(1 / 6) and metrics["answer_sentence_rate"] == pytest.approx(5 / 6)
    # The old reading credited the echoed "gold": earn 1, acq 1, gold TP1 FP1 -> 2/3, crude 0.
    assert metrics["echo_macro"] == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)


def test_the_second_pass_is_reported_beside_the_headline_never_as_it(tiny_student_dir):
    rows = make_test_rows()
    params = make_params(tiny_student_dir, second_pass=True)
    metrics, predictions = evaluate(
        rows, *sections(params), "classification", LABELS, POOL, None, generate=scripted({})
    )
    assert predictions[2]["pred"] is None and predictions[2]["route"] == "none" and predictions[2]["score"] == 0
    side = predictions[2]["second_pass"]
    assert side in LABELS and all("second_pass" not in p for i, p in enumerate(predictions) if i != 2)
    golds, domains = [r.label for r in rows], [r.domain for r in rows]
    filled = score("classification", golds, ["earn", "acq", side, "gold", "earn", "acq"], domains, LABELS, POOL, 50)
    assert metrics["second_pass_rows"] == 1
    assert metrics["second_pass_macro"] == filled["macro"] and metrics["second_pass_micro"] == filled["micro"]
    plain, _ = evaluate(
        rows, *sections(make_params(tiny_student_dir)), "classification", LABELS, POOL, None, generate=scripted({})
    )
    assert metrics["macro"] == plain["macro"]  # the headline does not move


def test_zero_shot_extraction_and_the_full_splits_weights(tiny_student_dir):
    """extraction: the row without an answer sentence gets the answer generated after the trigger
    (scripted: " earn."); test_counts weight the headline to the full split."""
    rows = make_test_rows()
    counts = {"earn": 40, "acq": 20, "gold": 1, "crude": 1}
    metrics, predictions = evaluate(
        rows,
        *sections(make_params(tiny_student_dir)),
        "classification",
        LABELS,
        POOL,
        None,
        generate=scripted({}),
        test_counts=counts,
        extraction=True,
    )
    assert predictions[2]["route"] == "answer_extraction" and predictions[2]["pred"] == "earn"
    golds, domains = [r.label for r in rows], [r.domain for r in rows]
    preds = [p["pred"] for p in predictions]
    weighted = score("classification", golds, preds, domains, LABELS, POOL, 50, test_counts=counts)
    assert metrics["macro"] == weighted["macro"] and metrics["reading"] == "weighted sample"
    assert metrics["macro"] != metrics["balanced_macro"]


def test_row_score_per_task():
    assert row_score("classification", "earn", "EARN", LABELS) == 1.0
    assert row_score("classification", "earn", None, LABELS) == 0.0
    assert row_score("math", "\\frac{1}{2}", "0.5", []) == 1.0
    assert row_score("multiple_choice", "B", "C", []) == 0.0
    assert row_score("abstractive_qa", "cat sat down", "the cat sat", []) == pytest.approx(0.8)
