"""Annotation (Section 3.6, Table 9): the teacher explains the gold answer.

Zero-shot chain-of-thought, greedy decoding (temperature 0, as Appendix B),
teacher.max_tokens. With teacher.gold_in_prompt (the default) the gold label
is in the prompt, as Section 3.6 says; without it the prompt is Table 9 as
printed for classification and MCQA and the teacher picks the answer itself
(docs/prompts.md measures both). The rationale must end in
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

A rationale cut by teacher.max_tokens (finish_reason "length") before its
answer sentence is not a mismatch: the teacher was stopped, not wrong. It gets
the answer sentence appended and is kept under either choice; the report
counts these as `cut_at_max_tokens`. teacher.max_tokens leaves room for a
whole brief rationale (docs/prompts.md): a cap the teacher reaches pays for a
rationale without its end.

The report also counts how the teacher's answers ended (`finish_reasons`:
"stop" is an answer that ended by itself) and the kept rationales that only
restate their label (`label_only`, core.answers.restates_label): both say
whether the rationales are whole and worth learning from.

A policy that does not annotate (random_label) keeps the gold labels only
(`keep_gold_labels`); its report has the same shape, with zero teacher usage.
"""

from __future__ import annotations

from baldistill.core.answers import ANSWER_SENTENCE, answers_match, extract_answer, restates_label
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.params import Teacher
from baldistill.core.rows import Row
from baldistill.prompts import Prompts, load_prompts
from baldistill.teacher.client import Request, TeacherClient
from baldistill.teacher.usage import Usage

NO_MISMATCHES = {"no_answer": 0, "wrong_answer": 0}


def annotate(
    rows: list[Row], stage: int, teacher: Teacher, max_input_chars: int, info: DatasetInfo, client: TeacherClient
) -> tuple[list[Row], dict]:
    """Give each row a teacher rationale; returns (rows, report).

    Inputs are cut to `max_input_chars` (data.max_input_chars) in the prompt.
    """
    prompts = load_prompts(info.task)
    requests = annotation_requests(rows, teacher, max_input_chars, info)
    responses, usage = client.run_batch(requests, desc=f"annotation s{stage}")
    out: list[Row] = []
    mismatches = dict(NO_MISMATCHES)
    added = cut = 0
    finish_reasons: dict[str, int] = {}
    for row, response in zip(rows, responses, strict=True):
        reason = response.finish_reason or "unknown"
        finish_reasons[reason] = finish_reasons.get(reason, 0) + 1
        if response.failure:  # no text at all, twice (transport.py): dropped, counted in teacher.failed by why
            continue
        rationale = response.content.strip()
        # Cut before its answer sentence, the text may still name some label in passing:
        # reading that as the teacher's answer would call a stopped teacher wrong.
        stopped = response.finish_reason == "length" and not ANSWER_SENTENCE.search(rationale)
        problem = None if stopped else mismatch(rationale, row.label, info)
        cut += stopped
        if problem:
            mismatches[problem] += 1
            if teacher.on_mismatch == "drop":
                continue
        if problem or not ANSWER_SENTENCE.search(rationale):
            rationale = f"{rationale} {prompts.answer_format.format(label=row.label)}"
            added += not (problem or stopped)  # a cut rationale is counted as cut, not here
        out.append(row.with_(rationale=rationale, source="pool", stage=stage))
    report = annotation_report(stage, len(rows), len(out), mismatches, teacher.on_mismatch, added, usage, cut)
    report.update(finish_reasons=dict(sorted(finish_reasons.items())), label_only=label_only(out))
    return out, report


def keep_gold_labels(rows: list[Row], stage: int) -> tuple[list[Row], dict]:
    """The rows as they are, gold label only, no teacher call (a policy that does not annotate)."""
    out = [row.with_(source="pool", stage=stage) for row in rows]
    report = annotation_report(stage, len(rows), len(out), dict(NO_MISMATCHES), None, 0, Usage())
    report.update(finish_reasons={}, label_only=0)
    return out, report


def label_only(rows: list[Row]) -> int:
    """Rows whose rationale only restates their label (core.answers.restates_label)."""
    return sum(restates_label(row.rationale or "", row.label) for row in rows)


def annotation_report(
    stage: int,
    requested: int,
    kept: int,
    mismatches: dict[str, int],
    on_mismatch: str | None,
    added: int,
    usage: Usage,
    cut: int = 0,
) -> dict:
    """The annotate step's report, one shape whether or not the teacher was asked
    (`on_mismatch` is None when it was not)."""
    return {
        "stage": stage,
        "requested": requested,
        "kept": kept,
        "mismatches": mismatches,
        "mismatch_total": sum(mismatches.values()),
        "on_mismatch": on_mismatch,
        "answer_sentence_added": added,
        "cut_at_max_tokens": cut,
        "dropped": requested - kept,
        "teacher": usage.as_dict(),
    }


def annotation_requests(rows: list[Row], teacher: Teacher, max_input_chars: int, info: DatasetInfo) -> list[Request]:
    """The requests `annotate` sends for `rows` (also what `baldistill plan` prices and looks up)."""
    prompts, template = load_prompts(info.task), "annotate" if teacher.gold_in_prompt else "annotate_blind"
    return [annotation_request(prompts, teacher.max_tokens, max_input_chars, info, row, template) for row in rows]


def annotation_request(
    prompts: Prompts,
    max_tokens: int,
    max_input_chars: int,
    info: DatasetInfo,
    row: Row,
    template: str = "annotate",
) -> Request:
    """Greedy (temperature 0) zero-shot CoT; `template` "annotate" gives the gold
    label, "annotate_blind" does not (teacher.gold_in_prompt)."""
    prompt = prompts.render(
        template,
        dataset=info.name,
        labels=info.labels_text,
        domain=row.domain,
        input=row.input[:max_input_chars],
        label=row.label,
    )
    return Request.user(prompt, 0.0, max_tokens)


def mismatch(rationale: str, gold: str, info: DatasetInfo) -> str | None:
    """None if the rationale's final answer is the gold label, else why not."""
    predicted = extract_answer(rationale, info.task, info.labels or None)
    if predicted is None:
        return "no_answer"
    return None if answers_match(predicted, gold, info.task) else "wrong_answer"
