"""Tail synthesis (Section 3.4, Tables 7-8): the teacher writes new examples.

For a tail domain that needs m more rows than the pool has, the teacher is
asked m times, each time with `teacher.demonstrations` examples of that domain
drawn from the pool and sampled at teacher.synth_temperature, to write an
input together with its rationale (one call per row: the paper does not
annotate synthetic rows again, to save budget).

Reproducibility: demonstrations are drawn with a seed derived from
(policy.seed, stage, domain, i), and the cache key carries a sample index that
is unique per (stage, i), so stage k never silently re-uses stage j's draw
even when a tiny domain gives identical demonstrations.

Demonstrations show the rationale the teacher wrote for a pool row in an
earlier stage (`with_earlier_rationales`; such rows are drawn first), else
the prompts' `demonstration_unannotated` form (for classification the story
alone: a bare "The answer is <label>." as the rationale taught the teacher to
write only that); the prompt's last lines always show the format to follow.

Every response is parsed into input, rationale and answer; a response that
cannot be parsed, whose input is no real example (a template slot such as
`<news story>`, the prompt's own instructions, or no text of its own:
core.synthetic_inputs) or whose answer is not valid for its domain is dropped
and counted by reason. A dropped call still counts against the budget. The
report also counts how the answers ended (`finish_reasons`, `cut_at_max_tokens`),
the kept rows that got the answer sentence appended (`answer_sentence_added`)
and those whose rationale only restates their label (`label_only`).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from typing import NamedTuple

from baldistill.core.answers import ANSWER_SENTENCE, extract_answer, normalize_text, restates_label
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.decontamination import index_ngrams, overlaps
from baldistill.core.params import Teacher
from baldistill.core.rows import Row
from baldistill.core.synthetic_inputs import input_problem
from baldistill.prompts import Prompts, load_prompts
from baldistill.teacher.client import Request, Response, TeacherClient
from baldistill.teacher.usage import Usage

SAMPLES_PER_STAGE = 1_000_000
_INPUT = r"(?:input|question|news story|story|problem|passage)"
_RATIONALE = r"(?:rationale|reasoning|explanation|solution)"
_MARKER = r"^[ \t>*#_-]*(?:{})[ \t*_]*:[ \t*_]*"
_INPUT_RE = re.compile(_MARKER.format(_INPUT), re.IGNORECASE | re.MULTILINE)
_RATIONALE_RE = re.compile(_MARKER.format(_RATIONALE), re.IGNORECASE | re.MULTILINE)


def synthesize(
    pool: list[Row],
    quota: dict[str, int],
    stage: int,
    teacher: Teacher,
    seed: int,
    max_input_chars: int,
    info: DatasetInfo,
    client: TeacherClient,
    held_out: Sequence[str] = (),
) -> tuple[list[Row], dict]:
    """Ask the teacher for quota[d] new rows of each tail domain d; returns (rows, report).

    `seed` is policy.seed (it draws the demonstrations); demonstration inputs
    are cut to `max_input_chars` (data.max_input_chars). An empty quota asks
    nothing. A row sharing a 13-gram with a `held_out` text (test and
    validation inputs) is dropped as "test_overlap" (core.decontamination).
    """
    overlap_index = index_ngrams(held_out)
    prompts = load_prompts(info.task)
    by_domain = _by_domain(pool)
    calls = synthesis_calls(pool, quota, stage, teacher, seed, max_input_chars, info)
    responses, usage = client.run_batch([call.request for call in calls], desc=f"synthesis s{stage}")
    rows, dropped, finish_reasons, added = [], {}, {}, 0
    for (domain, i, demos, _), response in zip(calls, responses, strict=True):
        finish = response.finish_reason or "unknown"
        finish_reasons[finish] = finish_reasons.get(finish, 0) + 1
        if response.failure:  # no text at all, twice (transport.py): dropped by that reason
            row, reason = None, response.failure
        else:
            row, reason = parse_synthetic(response, domain, i, stage, info, prompts, by_domain.get(domain, []), demos)
        if row is not None and overlaps(row.input, overlap_index):
            row, reason = None, "test_overlap"
        if row is None:
            dropped[reason] = dropped.get(reason, 0) + 1
        else:
            rows.append(row)
            added += not ANSWER_SENTENCE.search(split_response(response.content)[1])
    report = synthesis_report(stage, quota, rows, dropped, usage)
    cut = finish_reasons.get("length", 0)
    report.update(finish_reasons=dict(sorted(finish_reasons.items())), cut_at_max_tokens=cut)
    report.update(answer_sentence_added=added)
    return rows, report


class SynthesisCall(NamedTuple):
    """One teacher call of the synthesize step: the i-th new row of `domain`."""

    domain: str
    i: int
    demonstrations: list[Row]
    request: Request


def synthesis_calls(
    pool: list[Row],
    quota: dict[str, int],
    stage: int,
    teacher: Teacher,
    seed: int,
    max_input_chars: int,
    info: DatasetInfo,
) -> list[SynthesisCall]:
    """Every call `synthesize` makes, in the order it makes them (arguments as there).

    One builder for the step and for `baldistill plan`, which counts the
    prompt tokens of these very requests."""
    prompts = load_prompts(info.task)
    by_domain = _by_domain(pool)
    calls = []
    for domain, m in sorted(quota.items()):
        for i in range(max(0, int(m))):
            demos = _demonstrations(by_domain.get(domain, []), teacher.demonstrations, seed, stage, domain, i)
            request = _request(prompts, teacher, max_input_chars, info, stage, domain, i, demos)
            calls.append(SynthesisCall(domain, i, demos, request))
    return calls


def synthesis_report(stage: int, quota: dict[str, int], rows: list[Row], dropped: dict[str, int], usage: Usage) -> dict:
    """The synthesize step's report: rows asked for and kept (per domain), drops by reason, teacher usage."""
    per_domain = {d: {"requested": int(m), "kept": sum(r.domain == d for r in rows)} for d, m in quota.items()}
    return {
        "stage": stage,
        "requested": sum(max(0, int(m)) for m in quota.values()),
        "kept": len(rows),
        "dropped": dict(sorted(dropped.items())),
        "finish_reasons": {},
        "cut_at_max_tokens": 0,
        "answer_sentence_added": 0,
        "label_only": sum(restates_label(row.rationale or "", row.label) for row in rows),
        "per_domain": per_domain,
        "teacher": usage.as_dict(),
    }


def _by_domain(pool: Sequence[Row]) -> dict[str, list[Row]]:
    """Pool rows per domain, sorted by id so draws do not depend on file order."""
    groups: dict[str, list[Row]] = {}
    for row in sorted(pool, key=lambda r: r.id):
        groups.setdefault(row.domain, []).append(row)
    return groups


def draw_seed(seed: int, stage: int, domain: str, i: int) -> int:
    """A stable per-draw seed (Python's hash() is salted per process, so not that)."""
    digest = hashlib.sha256(f"{seed}|{stage}|{domain}|{i}".encode()).hexdigest()
    return int(digest[:16], 16)


def with_earlier_rationales(pool: Sequence[Row], earlier: Sequence[Row]) -> list[Row]:
    """The pool, each row that an earlier stage had annotated carrying that
    rationale (`earlier`: the previous stage's training set)."""
    rationales = {r.id: r.rationale for r in earlier if r.source == "pool" and r.rationale}
    return [r.with_(rationale=rationales[r.id]) if r.id in rationales else r for r in pool]


def _demonstrations(rows: list[Row], count: int, seed: int, stage: int, domain: str, i: int) -> list[Row]:
    """`count` seeded draws from the domain's rows, those with a rationale first
    (a real rationale shows the teacher what to write better than a bare answer)."""
    rng = random.Random(draw_seed(seed, stage, domain, i))
    annotated = [r for r in rows if r.rationale]
    first = rng.sample(annotated, min(count, len(annotated)))
    rest = [r for r in rows if not r.rationale]
    return first + rng.sample(rest, min(count - len(first), len(rest)))


def _request(
    prompts: Prompts,
    teacher: Teacher,
    max_input_chars: int,
    info: DatasetInfo,
    stage: int,
    domain: str,
    i: int,
    demos: list[Row],
) -> Request:
    shown = "\n\n".join(
        prompts.render(
            "demonstration" if demo.rationale else "demonstration_unannotated",
            input=demo.input[:max_input_chars],
            rationale=demo.rationale or "",
            label=demo.label,
        )
        for demo in demos
    )
    prompt = prompts.render(
        "synthesize", dataset=info.name, labels=info.labels_text, domain=domain, demonstrations=shown
    )
    return Request.user(prompt, teacher.synth_temperature, teacher.synth_max_tokens, stage * SAMPLES_PER_STAGE + i)


def split_response(text: str) -> tuple[str, str] | None:
    """(input, rationale) from 'Input: ... Rationale: ...'; None without a rationale.

    Takes the first input marker followed by a rationale marker, and cuts the
    rationale where the model starts another example.
    """
    rationale_marks = list(_RATIONALE_RE.finditer(text))
    if not rationale_marks:
        return None
    first = rationale_marks[0]
    inputs_before = list(_INPUT_RE.finditer(text, 0, first.start()))
    start = inputs_before[-1].end() if inputs_before else 0
    next_input = _INPUT_RE.search(text, first.end())
    end = next_input.start() if next_input else len(text)
    return text[start : first.start()].strip(), text[first.end() : end].strip()


def parse_synthetic(
    response: Response,
    domain: str,
    i: int,
    stage: int,
    info: DatasetInfo,
    prompts: Prompts,
    domain_rows: list[Row],
    demos: list[Row],
) -> tuple[Row | None, str | None]:
    """A synthetic Row, or (None, drop reason)."""
    parts = split_response(response.content)
    if parts is None:
        return None, "no_rationale"
    text, rationale = parts
    if not rationale:
        return None, "no_rationale"
    if any(normalize_text(text) == normalize_text(d.input) for d in demos):
        return None, "copied_demonstration"
    instructions = prompts.render(
        "synthesize", dataset=info.name, labels=info.labels_text, domain=domain, demonstrations=""
    )
    problem = input_problem(text, instructions)
    if problem:
        return None, problem
    label, reason = _label(rationale, text, domain, info, domain_rows)
    if label is None:
        return None, reason
    if not ANSWER_SENTENCE.search(rationale):
        rationale = f"{rationale.rstrip()} {prompts.answer_format.format(label=label)}"
    row = Row(
        id=f"syn-s{stage}-{domain}-{i}",
        domain=domain,
        input=text,
        label=label,
        rationale=rationale,
        source="synthetic",
        stage=stage,
        meta={"teacher_key": response.key},
    )
    return row, None


def _label(rationale: str, text: str, domain: str, info: DatasetInfo, domain_rows: list[Row]) -> tuple[str | None, str]:
    """The synthetic row's label if the rationale's answer is valid for the domain."""
    if info.task == "classification":
        answer = extract_answer(rationale, "classification", info.labels or None)
        if answer is None:
            return None, "no_answer"
        allowed = _domain_labels(domain, info, domain_rows)
        match = next((label for label in allowed if label.lower() == answer.lower()), None)
        return (match, "") if match else (None, "wrong_label")
    answer = extract_answer(rationale, info.task)
    if answer is None or not answer.strip():
        return None, "no_answer"
    if info.task == "multiple_choice" and not _is_choice(answer, text):
        return None, "answer_not_a_choice"
    return answer, ""


def _domain_labels(domain: str, info: DatasetInfo, domain_rows: list[Row]) -> list[str]:
    """Classification labels a row of `domain` may carry: the domain itself when it
    is a label (R52: domain = topic), else the labels its pool rows carry."""
    by_lower = {label.lower(): label for label in info.labels}
    if domain.lower() in by_lower:
        return [by_lower[domain.lower()]]
    return sorted({row.label for row in domain_rows}) or [domain]


def _is_choice(letter: str, text: str) -> bool:
    """Whether the question lists choice `letter` ("(B)", "B)", "B." or "B:")."""
    return re.search(rf"(?<![A-Za-z])(?:\({letter}\)|{letter}[).:])", text) is not None
