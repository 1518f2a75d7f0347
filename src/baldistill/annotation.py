"""Annotation (Section 3.6, Table 9): the teacher explains the gold answer.

Zero-shot chain-of-thought with the gold label in the prompt, greedy decoding
(temperature 0, as Appendix B), teacher.max_tokens. The rationale must end in
an answer the extractor can read; when its answer disagrees with the gold
label or is missing, the row is counted as a mismatch and teacher.on_mismatch
decides:

- "keep": keep the rationale and append the prompt's answer sentence
  ("The answer is <gold>.") so the last stated answer, which is what the
  student learns to produce and what extraction reads, is the gold one.
  Reasoning that argued for another answer stays in; choose "drop" if that
  worries you more than losing the row (and the budget it cost).
- "drop": leave the row out of the output.

A rationale whose answer agrees but is not stated as "The answer is ..."
(e.g. "The correct topic is earn.") gets the answer sentence appended too,
so every training target ends the way the student prompt asks; the report
counts these as `answer_sentence_added`.
"""

from __future__ import annotations

import re

from .answers import answers_match, extract_answer
from .dataset_info import DatasetInfo
from .params import Params
from .prompts import Prompts, load_prompts
from .rows import Row
from .teacher import Request, run_requests

_ANSWER_SENTENCE = re.compile(r"answer\s*(?:is\b|:)", re.IGNORECASE)


def annotate(rows: list[Row], stage: int, params: Params, info: DatasetInfo, client) -> tuple[list[Row], dict]:
    """Give each row a teacher rationale; returns (rows, report)."""
    prompts = load_prompts(info.task)
    requests = [annotation_request(prompts, params, info, row) for row in rows]
    before = client.usage.snapshot()
    responses = run_requests(client, requests, desc=f"annotation s{stage}") if requests else []
    out: list[Row] = []
    mismatches = {"no_answer": 0, "wrong_answer": 0}
    added = 0
    for row, response in zip(rows, responses, strict=True):
        rationale = response.content.strip()
        problem = mismatch(rationale, row.label, info)
        if problem:
            mismatches[problem] += 1
            if params.teacher.on_mismatch == "drop":
                continue
        if problem or not _ANSWER_SENTENCE.search(rationale):
            rationale = f"{rationale} {prompts.answer_format.format(label=row.label)}"
            added += not problem
        out.append(row.with_(rationale=rationale, source="pool", stage=stage))
    report = {
        "stage": stage,
        "requested": len(rows),
        "kept": len(out),
        "mismatches": mismatches,
        "mismatch_total": sum(mismatches.values()),
        "on_mismatch": params.teacher.on_mismatch,
        "answer_sentence_added": added,
        "dropped": len(rows) - len(out),
        "teacher": (client.usage - before).as_dict(),
    }
    # The same three top-level numbers the stage scripts report when no call is made.
    report.update(rows=len(out), calls_budgeted=report["teacher"]["calls_budgeted"],
                  calls_paid=report["teacher"]["calls_paid"])
    return out, report


def annotation_request(prompts: Prompts, params: Params, info: DatasetInfo, row: Row) -> Request:
    prompt = prompts.render(
        "annotate",
        dataset=info.name,
        labels=info.labels_text,
        domain=row.domain,
        input=row.input[: params.data.max_input_chars],
        label=row.label,
    )
    return Request.user(prompt, 0.0, params.teacher.max_tokens)


def mismatch(rationale: str, gold: str, info: DatasetInfo) -> str | None:
    """None if the rationale's final answer is the gold label, else why not."""
    predicted = extract_answer(rationale, info.task, info.labels or None)
    if predicted is None:
        return "no_answer"
    return None if answers_match(predicted, gold, info.task) else "wrong_answer"
