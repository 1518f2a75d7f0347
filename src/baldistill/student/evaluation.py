"""Score one stage's student (base + adapter) on the test rows.

The student sees the same build_prompt text it was trained and selected on,
decodes greedily in batches, and the answer is pulled out of its output by
the one extractor the teacher side also uses (answers.extract_answer), so a
formatting quirk is judged the same way everywhere. The metrics are those of
the paper's Section 4, per domain and head vs tail (metrics.score).
"""

from __future__ import annotations

import torch

from baldistill.core.answers import extract_answer
from baldistill.core.metrics import row_scores, score, to_label
from baldistill.core.params import Evaluate, Student
from baldistill.core.rows import Row
from baldistill.prompts import load_prompts
from baldistill.student.encoding import build_prompt
from baldistill.student.generation import generate_texts
from baldistill.student.model import load_student


def default_device() -> torch.device:
    """A GPU when there is one (generation follows the model's device), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
) -> tuple[dict, list[dict]]:
    """(metrics, per-row predictions) of the student with `adapter_dir`.

    `adapter_dir` None or a BASE-marker dir means the base student (zero-shot).
    metrics is metrics.score's dict plus "no_answer": the share of outputs with
    no parsable answer, which separates "wrong" from "did not follow the format".
    Each prediction is {"id", "domain", "gold", "pred", "output", "score"}.
    """
    model, tokenizer = load_student(student.model, adapter_dir)
    model.to(default_device())
    prompts = load_prompts(task)
    texts = [build_prompt(tokenizer, prompts, row.input, student.max_input_tokens) for row in test_rows]
    outputs = generate_texts(model, tokenizer, texts, cfg.max_new_tokens, cfg.batch_size)
    preds = [extract_answer(output, task, labels if task == "classification" else None) for output in outputs]
    metrics = score(
        task,
        [row.label for row in test_rows],
        preds,
        [row.domain for row in test_rows],
        labels,
        pool_counts,
        head_threshold,
    )
    metrics["no_answer"] = sum(pred is None for pred in preds) / len(preds)
    predictions = [
        {
            "id": row.id,
            "domain": row.domain,
            "gold": row.label,
            "pred": pred,
            "output": output,
            "score": row_score(task, row.label, pred, labels),
        }
        for row, pred, output in zip(test_rows, preds, outputs)
    ]
    return metrics, predictions
