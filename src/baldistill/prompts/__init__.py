"""Prompt templates, one YAML file per task type under `prompts/`.

Each file holds the teacher's synthesis prompt (Tables 7-8), its annotation
prompts (Table 9: `annotate` with the gold label given, `annotate_blind`
without it, chosen by teacher.gold_in_prompt), the demonstration format, and
the student prompt used identically at selection, training and evaluation.

The student prompt lists the data set's labels ({labels}, Table 9 (a)), so
it is rendered from prompts bound to a label set (`for_labels`): a student
prompt rendered without one is an error, never a prompt without labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import yaml

from baldistill.core.dataset_info import check_task
from baldistill.core.errors import BaldistillError

FIELDS = (
    "synthesize",
    "demonstration",
    "demonstration_unannotated",
    "annotate",
    "annotate_blind",
    "student",
    "answer_format",
)


@dataclass(frozen=True)
class Prompts:
    task: str
    synthesize: str
    demonstration: str
    demonstration_unannotated: str
    annotate: str
    annotate_blind: str
    student: str
    answer_format: str
    # The data set's labels joined by ", " once bound (for_labels); None: not bound.
    labels: str | None = None

    def render(self, template: str, **values: str) -> str:
        bound = {} if self.labels is None else {"labels": self.labels}
        try:
            return getattr(self, template).format(**{**bound, **values})
        except KeyError as exc:
            raise BaldistillError(f"prompts/{self.task}.yaml: {template}: unknown placeholder {exc}") from None

    def for_labels(self, labels: Sequence[str]) -> Prompts:
        """These prompts with {labels} bound to the data set's label set (as DatasetInfo.labels_text)."""
        return dataclasses.replace(self, labels=", ".join(labels))


def prompt_file(task: str):
    """The packaged YAML file for `task` (a Traversable, usable as a DVC dep path)."""
    check_task(task)
    return resources.files("baldistill") / "prompts" / f"{task}.yaml"


def load_prompts(task: str, labels: Sequence[str] | None = None) -> Prompts:
    """The prompts of `task`, bound to `labels` when given (the student prompt needs them)."""
    raw = yaml.safe_load(prompt_file(task).read_text(encoding="utf-8"))
    missing = [name for name in FIELDS if name not in raw]
    if missing:
        raise BaldistillError(f"prompts/{task}.yaml: missing field '{missing[0]}'")
    prompts = Prompts(task=task, **{name: raw[name] for name in FIELDS})
    return prompts if labels is None else prompts.for_labels(labels)
