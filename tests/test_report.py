"""Mean and spread over seeds in `baldistill report` (pure functions, no DVC)."""

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baldistill.core.errors import BaldistillError
from baldistill.report.run_table import aggregate, aggregate_markdown, mean_per_domain

scores = st.floats(min_value=0, max_value=1, allow_nan=False)


def summary(policy, macro, micro=0.5, paid=10):
    return {
        "experiment": f"{policy}-x",
        "policy": policy,
        "stage": "s1",
        "macro": macro,
        "micro": micro,
        "head": macro,
        "tail": None,
        "calls_budgeted": 104,
        "calls_paid": paid,
    }


@given(st.lists(scores, min_size=1, max_size=6))
def test_mean_and_spread_of_one_policy(values):
    [group] = aggregate([summary("naive", v) for v in values])
    assert group["runs"] == len(values)
    assert min(values) - 1e-12 <= group["macro"] <= max(values) + 1e-12
    expected_std = statistics.stdev(values) if len(values) > 1 else 0.0
    assert abs(group["macro_std"] - expected_std) < 1e-12
    assert group["tail"] is None and group["tail_std"] is None  # no run had a tail score


def test_policies_are_kept_apart_in_order_of_appearance():
    runs = [summary("adaptive", 0.2, paid=50), summary("random", 0.4), summary("adaptive", 0.3, paid=70)]
    adaptive, random = aggregate(runs)
    assert (adaptive["policy"], adaptive["runs"], random["runs"]) == ("adaptive", 2, 1)
    assert abs(adaptive["macro"] - 0.25) < 1e-12 and adaptive["calls_paid"] == 60
    assert random["macro_std"] == 0.0
    table = aggregate_markdown([adaptive, random])
    assert (
        "| adaptive | 2 | 25.00 ± 7.07 | 50.00 ± 0.00 | n/a | n/a | 25.00 ± 7.07 | n/a "
        "| 104.00 ± 0.00 | 60.00 ± 14.14 |" in table
    )


def test_mean_per_domain_averages_what_each_run_has():
    one = {"a": {"score": 1.0, "pool_rows": 9, "n": 2}, "b": {"score": 0.0, "pool_rows": 3, "n": 2}}
    two = {"a": {"score": 0.5, "pool_rows": 9, "n": 2}}
    merged = mean_per_domain([one, two])
    assert merged["a"] == {"score": 0.75, "spread": statistics.stdev([1.0, 0.5]), "pool_rows": 9, "n": 4}
    assert merged["b"] == {"score": 0.0, "spread": 0.0, "pool_rows": 3, "n": 2}


def test_the_run_table_shows_how_the_student_answered_and_how_fast_the_teacher_was():
    from baldistill.report.run_table import markdown

    run = {**summary("adaptive", 0.25), "answer_sentence_rate": 0.5, "rows_synthesized": 3, "balanced_macro": 0.3}
    run |= {"prompt_tokens_per_s": 75.234, "generation_tokens_per_s": None, "rows_selected": 392, "wall_min": 81.5}
    run |= {"second_pass_in_score": 0}
    table = markdown([run])
    row = "| adaptive-x | adaptive | s1 | 25.00 | 50.00 | 30.00 | n/a | 25.00 | n/a | 104 | 10 | 50.00 | 0 | 3 | 75.2"
    assert row + " | n/a | 392 | 81.5 |" in table


def test_wall_times_are_read_from_the_runs_tsv(tmp_path):
    from baldistill.report.experiments import read_times

    tsv = tmp_path / "runs.tsv"
    tsv.write_text("experiment\tcommit\twall_s\tfinished\nr52-random-seed0\tabc1234\t3912\t2026-11-29T23:00:00Z\n")
    assert read_times(tsv) == {"r52-random-seed0": 3912.0}


def test_a_metric_dvc_shows_as_the_string_none_reads_as_missing():
    from baldistill.report.run_table import markdown, summarize

    ledger = "metrics/s1/teacher.json:"
    row = {"Experiment": "x", "policy.name": "adaptive", "metrics/s1/metrics.json:macro": 0.3}
    row |= {ledger + "generation_tokens_per_s": "None", ledger + "prompt_tokens_per_s": 76.1}
    run = summarize(row, "s1")
    assert run["generation_tokens_per_s"] is None and run["prompt_tokens_per_s"] == 76.1
    assert "| 76.1 | n/a |" in markdown([run])


def test_a_metric_that_is_no_number_is_an_error_naming_run_and_column():
    from baldistill.report.run_table import summarize

    column = "metrics/s1/metrics.json:macro"
    assert summarize({"Experiment": "x", column: "0.25"}, "s1")["macro"] == 0.25
    with pytest.raises(BaldistillError, match=r"experiment x: metrics/s1/metrics.json:macro is 'high', not a number"):
        summarize({"Experiment": "x", column: "high"}, "s1")


def test_counts_that_dvc_gives_as_floats_stay_counts():
    from baldistill.report.run_table import markdown

    run = {**summary("adaptive", 0.25), "calls_paid": 0.0, "rows_synthesized": 1.0, "answer_sentence_rate": 1.0}
    assert "| 104 | 0 | 100.00 | n/a | 1 |" in markdown([run])


def test_labels_never_predicted_and_over_predicted():
    from baldistill.report.label_use import head_confusion, label_use, label_use_line

    golds = ["earn"] * 4 + ["acq"] * 3 + ["tin"] * 2 + ["zinc"]
    preds = ["grain"] * 4 + ["acq", "tin", None] + ["tin", "tin"] + ["zinc"]
    use = label_use(golds, preds, ["earn", "acq", "tin", "zinc", "grain"])
    assert use == {"never": [("earn", 4)], "over": [("grain", 4, 0)], "no_answer": 1}  # tin: 3/2 < 2
    line = label_use_line(use, 4, {"earn": 90, "acq": 5, "tin": 3, "zinc": 2})
    assert line == "never predicted 1 of 4 labels: earn (4) (90% of the full test split); " + (
        "over-predicted (predicted/gold rows >= 2): grain 4/0"
    )
    record = {"info": {"labels": ["earn", "acq", "tin", "zinc", "grain"]}}
    record["predictions"] = [{"gold": g, "pred": p} for g, p in zip(golds, preds)]
    # Head earn, acq: earn's rows all go to another label, acq's to acq, another label and none.
    assert head_confusion([record, record], ["earn", "acq"]).tolist() == [[0, 0, 8, 0], [0, 2, 2, 2]]


def test_the_summary_names_the_reading_the_routes_the_side_reading_and_the_labels():
    from baldistill.report.run_summary import stage_summary

    metrics = {"policy": "adaptive", "stage": "s1", "macro": 0.4, "micro": 0.7, "head": 0.5, "tail": None, "n": 4}
    metrics |= {"balanced_macro": 0.3, "balanced_micro": 0.25, "reading": "weighted sample", "test_rows": 40}
    metrics |= {"routes": {"answer_sentence": 3, "answer_extraction": 0, "none": 1}}
    metrics |= {"route_accuracy": {"answer_sentence": 2 / 3, "answer_extraction": None, "none": 0.0}}
    metrics |= {"second_pass_rows": 1, "second_pass_macro": 0.45, "second_pass_micro": 0.75}
    ledger = {"calls_budgeted": 8, "calls_paid": 2, "prompt_tokens": 100, "completion_tokens": 50}
    predictions = [{"gold": g, "pred": p} for g, p in [("earn", "acq"), ("earn", None), ("acq", "acq"), ("tea", "tea")]]
    info = {"task": "classification", "labels": ["earn", "acq", "tea"], "test_counts": {"earn": 30, "acq": 5, "tea": 5}}
    text = stage_summary(metrics, ledger, [], {}, predictions, info)
    assert "macro 40.0  micro 70.0 (on the test split's own distribution: 4 rows weighted to the full 40)" in text
    assert "balanced macro 30.0  micro 25.0; head 50.0  tail n/a" in text
    assert "answers by route: answer sentence 3 (right 66.7%), none 1 (right 0.0%)" in text
    assert "second pass (a side reading, not the score): 1 rows read by likelihood; with them macro 45.0" in text
    assert "labels: never predicted 1 of 3 labels: earn (2) (75% of the full test split)" in text
