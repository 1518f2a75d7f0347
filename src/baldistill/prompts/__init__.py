"""Prompt templates, one YAML file per task type under `prompts/`.

Each file holds the teacher's synthesis prompt (Tables 7-8), its annotation
prompt (Table 9, gold label given), the demonstration format, and the
student prompt used identically at selection, training and evaluation time.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import yaml

from baldistill.core.dataset_info import check_task
from baldistill.core.errors import BaldistillError


@dataclass(frozen=True)
class Prompts:
    task: str
    synthesize: str
    demonstration: str
    annotate: str
    student: str
    answer_format: str

    def render(self, template: str, **values: str) -> str:
        try:
            return getattr(self, template).format(**values)
        except KeyError as exc:
            raise BaldistillError(f"prompts/{self.task}.yaml: {template}: unknown placeholder {exc}") from None


def prompt_file(task: str):
    """The packaged YAML file for `task` (a Traversable, usable as a DVC dep path)."""
    check_task(task)
    return resources.files("baldistill") / "prompts" / f"{task}.yaml"


def load_prompts(task: str) -> Prompts:
    raw = yaml.safe_load(prompt_file(task).read_text(encoding="utf-8"))
    fields = ("synthesize", "demonstration", "annotate", "student", "answer_format")
    missing = [name for name in fields if name not in raw]
    if missing:
        raise BaldistillError(f"prompts/{task}.yaml: missing field '{missing[0]}'")
    return Prompts(task=task, **{name: raw[name] for name in fields})
