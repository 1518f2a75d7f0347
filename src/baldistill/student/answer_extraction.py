"""Read the student's own answer, and say by which route it came.

The headline scores what the student generated, as the paper does: a
generation is read strictly (answers.extract_answer(strict=True): its own
answer sentence, "The answer is X."), and a row whose generation names no
valid answer is wrong (route "none"). A label that only appears somewhere in
the output, often echoed from the input, is never credited.

Two more readings exist, each where it belongs:

- Zero-shot CoT (Kojima et al., 2022) is a two-pass method: the model reasons,
  then its prompt and reasoning are given again with an answer trigger and the
  answer is what it generates next. That answer-extraction step is part of the
  Zero-shot CoT baseline (evaluate_zeroshot), so there it runs on every row
  without an answer sentence: the trigger ANSWER_TRIGGER ("The answer is") after
  its own reasoning, a short greedy continuation, parsed like any answer (route
  "answer_extraction"). Trained students are not given it.
- The second pass (evaluate.second_pass, off by default) is a side reading:
  for rows still without an answer, the label or choice the student finds most
  likely after the trigger (student.likelihood, length-normalised), or for an
  open answer a short continuation. It always names some candidate, so its
  numbers are reported beside the headline, never as it.

The answer sets here say what a valid answer is for each row (answer_set).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from baldistill.core.answers import ANSWER_TRIGGER, CHOICE_LETTERS, extract_answer
from baldistill.core.rows import Row
from baldistill.student.generation import generate_texts
from baldistill.student.likelihood import pick_answers
from baldistill.student.parallel import ONE_PROCESS, Workers

ROUTES = ("answer_sentence", "answer_extraction", "none")
SECOND_PASS_MAX_NEW_TOKENS = 24  # an answer after the trigger: a label, a letter, a number or a short phrase
_SENTENCE_END = re.compile(r"[.!?][\"')\]*`]*$")
# A generation cut right after its own trigger ("... The answer is" / "Answer:"): the trigger is appended anew.
_DANGLING_TRIGGER = re.compile(r"[*_]*(?:the\s+)?answer\s*[*_]*\s*(?:is|:)\s*[*_:]*\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    pred: str | None  # what the student answered, None if nothing could be read
    route: str  # one of ROUTES: where pred came from
    second_pass: str | None = None  # the second pass's answer, where it ran (a side reading)


def answer_set(task: str, labels: Sequence[str], row: Row | None = None) -> list[str] | None:
    """The closed set the student's answer comes from, or None for an open task.

    classification: the dataset labels (None if there are none). multiple
    choice: the row's own choice letters when its meta lists them (a
    2-choice question is answered from A, B), else the labels if they are
    letters, else A-E. A row whose choices are texts gets the first
    len(choices) letters.
    """
    if task == "classification":
        return list(labels) or None
    if task != "multiple_choice":
        return None
    choices = (row.meta.get("choices") if row is not None else None) or []
    if isinstance(choices, list) and 0 < len(choices) <= len(CHOICE_LETTERS):
        letters = [str(c).strip().upper() for c in choices]
        return (
            letters
            if all(c in CHOICE_LETTERS and len(c) == 1 for c in letters)
            else list(CHOICE_LETTERS[: len(letters)])
        )
    if labels and all(len(label) == 1 and label.upper() in CHOICE_LETTERS for label in labels):
        return [label.upper() for label in labels]
    return list(CHOICE_LETTERS)


def from_answer_sentence(output: str, task: str, labels: Sequence[str]) -> str | None:
    """The answer the generation states in its own answer sentence (strict: no fallback), or None."""
    return extract_answer(output, task, labels if task == "classification" else None, strict=True)


def second_pass_prompt(prompt: str, output: str, eos_text: str | None = None) -> str:
    """The prompt of answer extraction and the second pass: the student's prompt, its reasoning, then the trigger.

    The reasoning is `output` cut at the first `eos_text` and stripped, with a
    trigger it was cut off right after removed; a reasoning cut mid-sentence is
    closed with a period. One space separates it from ANSWER_TRIGGER, as in the
    training targets ("... reasoning. The answer is X."); no trailing space,
    the continuation brings its own.
    """
    reasoning = output.split(eos_text, 1)[0] if eos_text else output
    reasoning = _DANGLING_TRIGGER.sub("", reasoning.strip()).rstrip()
    if not reasoning:
        return prompt + ANSWER_TRIGGER
    if not _SENTENCE_END.search(reasoning):
        reasoning += "."
    return f"{prompt}{reasoning} {ANSWER_TRIGGER}"


def complete_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prefixes: Sequence[str],
    task: str,
    labels: Sequence[str],
    batch_size: int,
    *,
    workers: Workers = ONE_PROCESS,
    write: Callable[..., list[str]] = generate_texts,
) -> list[str | None]:
    """For each prefix (ending in ANSWER_TRIGGER), the answer in a short greedy continuation
    (written by `write`, generation.generate_texts' signature), parsed like any answer sentence, or None."""
    if not prefixes:
        return []
    outs = write(model, tokenizer, list(prefixes), SECOND_PASS_MAX_NEW_TOKENS, batch_size, workers=workers)
    return [from_answer_sentence(ANSWER_TRIGGER + text, task, labels) for text in outs]


def read_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    outputs: Sequence[str],
    task: str,
    labels: Sequence[str],
    answer_sets: Sequence[Sequence[str] | None],
    batch_size: int,
    *,
    extraction: bool = False,
    second_pass: bool = False,
    progress: bool = True,
    workers: Workers = ONE_PROCESS,
    write: Callable[..., list[str]] = generate_texts,
) -> list[Answer]:
    """The student's answer to each prompt and where it came from (see ROUTES).

    `outputs` are its generations for `prompts`; `answer_sets` the closed set
    of each row (answer_set) or None for an open answer. A generation with a
    readable answer sentence is taken as is. `extraction` (the Zero-shot CoT
    baseline) generates an answer after the trigger for every other row.
    `second_pass` gives each row still without an answer its side reading
    (Answer.second_pass): the likeliest candidate of a closed set, or for an
    open answer a short continuation (not run again where extraction ran).
    `write` writes the continuations (generation.generate_texts' signature).
    """
    answers = [Answer(from_answer_sentence(output, task, labels), "answer_sentence") for output in outputs]
    eos = tokenizer.eos_token if isinstance(tokenizer.eos_token, str) else None

    def prefixes(rows: list[int]) -> list[str]:
        return [second_pass_prompt(prompts[i], outputs[i], eos) for i in rows]

    missing = [i for i, answer in enumerate(answers) if answer.pred is None]
    tried: set[int] = set()
    if extraction:
        extracted = complete_answers(
            model, tokenizer, prefixes(missing), task, labels, batch_size, workers=workers, write=write
        )
        for i, pred in zip(missing, extracted):
            answers[i] = Answer(pred, "answer_extraction")
        tried = set(missing)
    answers = [a if a.pred is not None else Answer(None, "none") for a in answers]
    if not second_pass:
        return answers
    closed = [i for i, a in enumerate(answers) if a.pred is None and answer_sets[i]]
    open_ = [i for i, a in enumerate(answers) if a.pred is None and not answer_sets[i] and i not in tried]
    picked = pick_answers(
        model, tokenizer, prefixes(closed), [answer_sets[i] for i in closed], progress=progress, workers=workers
    )
    completed = complete_answers(
        model, tokenizer, prefixes(open_), task, labels, batch_size, workers=workers, write=write
    )
    for i, pred in [*zip(closed, picked), *zip(open_, completed)]:
        answers[i] = Answer(None, "none", pred)
    return answers
