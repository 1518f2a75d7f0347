"""Score one stage's student (base + adapter) on the test rows.

The student sees the same build_prompt text it was trained and selected on
and decodes greedily in batches. Its score is what it itself generated
(student.answer_extraction): the answer sentence of its generation, read by
the shared extractor in strict mode (answers.extract_answer(strict=True)); a
row whose generation names no valid answer is wrong, as in the paper. The
Zero-shot CoT baseline keeps its method's answer-extraction step (a generated
answer after "The answer is"); evaluate.second_pass adds a side reading
(the likeliest label) reported beside the headline, never as it. The metrics
are those of the paper's Section 4 on the test split's own distribution
(metrics.score, weighted by the full split's per-domain counts), per domain
and head vs tail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from baldistill.core.answers import extract_answer
from baldistill.core.metrics import row_scores, score, to_label
from baldistill.core.params import Evaluate, Student
from baldistill.core.rows import Row
from baldistill.prompts import load_prompts
from baldistill.student.answer_extraction import ROUTES, answer_set, read_answers
from baldistill.student.device import student_device
from baldistill.student.encoding import build_prompt
from baldistill.student.generation import generate_texts
from baldistill.student.model import load_student
from baldistill.student.parallel import ONE_PROCESS, Workers

# What the second pass's side reading reports, each as second_pass_<key>.
SECOND_PASS_KEYS = ("macro", "micro", "balanced_macro", "balanced_micro", "head", "tail")


def row_score(task: str, gold: str, pred: str | None, labels: list[str]) -> float:
    """The row's own score, for reading predictions.jsonl: 1/0, or word F1 for abstractive QA."""
    if task == "classification":
        return float(to_label(pred, labels) == gold)
    return row_scores(task, [gold], [pred])[0]


def route_accuracy(predictions: list[dict]) -> dict[str, float | None]:
    """Mean row score of the rows of each route (None for a route no row took)."""
    out: dict[str, float | None] = {}
    for route in ROUTES:
        scores = [p["score"] for p in predictions if p["route"] == route]
        out[route] = sum(scores) / len(scores) if scores else None
    return out


def evaluate(
    test_rows: list[Row],
    cfg: Evaluate,
    student: Student,
    head_threshold: int,
    task: str,
    labels: list[str],
    pool_counts: dict[str, int],
    adapter_dir: str | None,
    workers: Workers = ONE_PROCESS,
    generate: Callable[..., list[str]] = generate_texts,
    *,
    test_counts: Mapping[str, int] | None = None,
    extraction: bool = False,
) -> tuple[dict, list[dict]]:
    """(metrics, per-row predictions) of the student with `adapter_dir`.

    `adapter_dir` None or a BASE-marker dir means the base student (zero-shot).
    Each row's answer comes by one route (answer_extraction.ROUTES):
    "answer_sentence" (its generation states it), "answer_extraction" (only
    with `extraction`, the Zero-shot CoT baseline: generated after the
    trigger) or "none" (no valid answer: wrong). `test_counts` (the full
    split's rows per domain) weight the headline to the split's own
    distribution (metrics.score).

    metrics is metrics.score's dict of those answers plus:
    - "no_answer": share of rows with route none;
    - "answer_sentence_rate": share of rows whose own generation had a
      readable answer sentence;
    - "routes": {route: row count}; "route_accuracy": {route: mean row score};
    - with cfg.second_pass, "second_pass_rows" (rows it read) and
      second_pass_<key> for SECOND_PASS_KEYS: the scores where those rows take
      the second pass's answer, a side reading beside the headline;
    - "echo_macro": a side number, NOT the score: the macro the old lenient
      reading of the same generations would give (without an answer sentence,
      the last label mentioned anywhere), which mostly measures labels echoed
      from the input.
    Each prediction is {"id", "domain", "gold", "pred", "output", "score",
    "route"}, plus "second_pass" where that ran. Under a launcher
    (evaluate.launch) every process returns the same, its passes shared out
    between `workers` (student.parallel). `generate` writes the student's
    generations (generation.generate_texts' signature).
    """
    model, tokenizer = load_student(student.model, adapter_dir, device=student_device())
    prompts = load_prompts(task, labels)  # the student prompt lists the label set
    texts = [build_prompt(tokenizer, prompts, row.input, student.max_input_tokens) for row in test_rows]
    outputs = generate(
        model, tokenizer, texts, cfg.max_new_tokens, cfg.batch_size, workers=workers, batch_tokens=cfg.batch_tokens
    )
    answer_sets = [answer_set(task, labels, row) for row in test_rows]
    answers = read_answers(
        model,
        tokenizer,
        texts,
        outputs,
        task,
        labels,
        answer_sets,
        cfg.batch_size,
        extraction=extraction,
        second_pass=cfg.second_pass,
        workers=workers,
        write=generate,
    )
    golds, domains = [row.label for row in test_rows], [row.domain for row in test_rows]

    def scored(preds: list[str | None]) -> dict:
        return score(task, golds, preds, domains, labels, pool_counts, head_threshold, test_counts=test_counts)

    metrics = scored([answer.pred for answer in answers])
    routes = {route: sum(answer.route == route for answer in answers) for route in ROUTES}
    metrics["no_answer"] = routes["none"] / len(answers)
    metrics["answer_sentence_rate"] = routes["answer_sentence"] / len(answers)
    metrics["routes"] = routes
    if cfg.second_pass:
        side = scored([a.pred if a.pred is not None else a.second_pass for a in answers])
        metrics["second_pass_rows"] = sum(a.second_pass is not None for a in answers)
        metrics.update({f"second_pass_{key}": side[key] for key in SECOND_PASS_KEYS})
    lenient = [extract_answer(output, task, labels if task == "classification" else None) for output in outputs]
    metrics["echo_macro"] = scored(lenient)["macro"]
    predictions = []
    for row, answer, output in zip(test_rows, answers, outputs):
        prediction = {
            "id": row.id,
            "domain": row.domain,
            "gold": row.label,
            "pred": answer.pred,
            "output": output,
            "score": row_score(task, row.label, answer.pred, labels),
            "route": answer.route,
        }
        if answer.second_pass is not None:
            prediction["second_pass"] = answer.second_pass
        predictions.append(prediction)
    metrics["route_accuracy"] = route_accuracy(predictions)
    return metrics, predictions
