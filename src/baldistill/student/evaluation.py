"""Score one stage's student (base + adapter) on the test rows.

The student sees the same build_prompt text it was trained and selected on
and decodes greedily in batches. Its answer is what it itself decides
(student.answer_extraction): the answer sentence of its generation, read by
the shared extractor in strict mode (answers.extract_answer(strict=True)), or
where the generation has none, the answer it gives when asked with the
trigger "The answer is" after its own reasoning (zero-shot CoT's second pass).
A label that only appears somewhere in the output, often echoed from the
input, is never credited. The metrics are those of the paper's Section 4,
per domain and head vs tail (metrics.score).
"""

from __future__ import annotations

from collections.abc import Callable

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


def row_score(task: str, gold: str, pred: str | None, labels: list[str]) -> float:
    """The row's own score, for reading predictions.jsonl: 1/0, or word F1 for abstractive QA."""
    if task == "classification":
        return float(to_label(pred, labels) == gold)
    return row_scores(task, [gold], [pred])[0]


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
) -> tuple[dict, list[dict]]:
    """(metrics, per-row predictions) of the student with `adapter_dir`.

    `adapter_dir` None or a BASE-marker dir means the base student (zero-shot).
    Each row's answer comes by one route (answer_extraction.ROUTES):
    "answer_sentence" (its generation states it), "second_pass" (asked after
    its reasoning: the most likely label or choice letter, or for math and
    abstractive QA a short continuation) or "none".

    metrics is metrics.score's dict of those answers plus:
    - "no_answer": share of rows with route none (no answer at all);
    - "answer_sentence_rate": share of rows whose own generation had a
      readable answer sentence, which separates "wrong" from "did not follow
      the format";
    - "routes": {route: row count};
    - "echo_macro": a side number, NOT the score: the macro the old lenient
      reading of the same generations would give (no second pass; without an
      answer sentence, the last label mentioned anywhere, a bare letter or
      the last \\boxed{}), which mostly measures labels echoed from the input.
    Each prediction is {"id", "domain", "gold", "pred", "output", "score", "route"}.
    Under a launcher (evaluate.launch) every process returns the same, its
    passes shared out between `workers` (student.parallel). `generate` writes
    the student's generations (generation.generate_texts' signature).
    """
    model, tokenizer = load_student(student.model, adapter_dir, device=student_device())
    prompts = load_prompts(task, labels)  # the student prompt lists the label set
    texts = [build_prompt(tokenizer, prompts, row.input, student.max_input_tokens) for row in test_rows]
    outputs = generate(model, tokenizer, texts, cfg.max_new_tokens, cfg.batch_size, workers=workers)
    answer_sets = [answer_set(task, labels, row) for row in test_rows]
    answers = read_answers(model, tokenizer, texts, outputs, task, labels, answer_sets, cfg.batch_size, workers=workers)
    preds = [answer.pred for answer in answers]
    golds, domains = [row.label for row in test_rows], [row.domain for row in test_rows]
    metrics = score(task, golds, preds, domains, labels, pool_counts, head_threshold)
    routes = {route: sum(answer.route == route for answer in answers) for route in ROUTES}
    metrics["no_answer"] = routes["none"] / len(answers)
    metrics["answer_sentence_rate"] = routes["answer_sentence"] / len(answers)
    metrics["routes"] = routes
    lenient = [extract_answer(output, task, labels if task == "classification" else None) for output in outputs]
    metrics["echo_macro"] = score(task, golds, lenient, domains, labels, pool_counts, head_threshold)["macro"]
    predictions = [
        {
            "id": row.id,
            "domain": row.domain,
            "gold": row.label,
            "pred": answer.pred,
            "output": output,
            "score": row_score(task, row.label, answer.pred, labels),
            "route": answer.route,
        }
        for row, answer, output in zip(test_rows, answers, outputs)
    ]
    return metrics, predictions
