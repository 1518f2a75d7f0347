"""What the teacher prompts need to know about the data set as a whole.

Prompts name the data set ({dataset}) and list every label ({labels}), and
answer extraction needs the task type and the label set. The prepare step
writes this once as JSON so later steps do not re-derive it from rows (a
tail label could be missing from a sampled pool).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_json, write_json
from baldistill.core.rows import DEFAULT_HEAD_THRESHOLD

TASKS = ("classification", "multiple_choice", "abstractive_qa", "math")


def check_task(task: str) -> str:
    """`task` if it is a known task type, else one line naming the valid ones."""
    if task not in TASKS:
        raise BaldistillError(f"unknown task type {task!r}; expected one of {', '.join(TASKS)}")
    return task


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str
    labels: list[str] = field(default_factory=list)
    # A domain with more pool rows than this is head (resolved by prepare from
    # data.head_threshold or the data set's Appendix A split).
    head_threshold: int = DEFAULT_HEAD_THRESHOLD
    # The full test split's rows per domain (before data.test_per_domain's cap): the
    # metrics weight a capped test set back to this distribution. None: unknown (older runs).
    test_counts: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise BaldistillError(f"dataset info: task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise BaldistillError("dataset info: name must be a non-empty string")
        if not isinstance(self.labels, list) or not all(isinstance(x, str) and x.strip() for x in self.labels):
            raise BaldistillError("dataset info: labels must be a list of non-empty strings")
        if not isinstance(self.head_threshold, int) or isinstance(self.head_threshold, bool) or self.head_threshold < 0:
            raise BaldistillError("dataset info: head_threshold must be a non-negative integer")
        counts = self.test_counts
        if counts is not None and not (
            isinstance(counts, dict)
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts.values())
        ):
            raise BaldistillError("dataset info: test_counts must map each domain to a positive row count")

    @property
    def labels_text(self) -> str:
        """The {labels} placeholder: all labels joined by ', '."""
        return ", ".join(self.labels)

    def save(self, path: str | os.PathLike) -> None:
        obj = {"name": self.name, "task": self.task, "labels": list(self.labels), "head_threshold": self.head_threshold}
        write_json(path, obj if self.test_counts is None else {**obj, "test_counts": self.test_counts})

    @classmethod
    def load(cls, path: str | os.PathLike) -> DatasetInfo:
        obj = read_json(path)
        if not isinstance(obj, dict):
            raise BaldistillError(f"{path}: expected a JSON object")
        missing = [k for k in ("name", "task", "labels") if k not in obj]
        if missing:
            raise BaldistillError(f"{path}: missing field '{missing[0]}'")
        try:
            return cls(
                name=obj["name"],
                task=obj["task"],
                labels=obj["labels"],
                head_threshold=obj.get("head_threshold", DEFAULT_HEAD_THRESHOLD),
                test_counts=obj.get("test_counts"),
            )
        except BaldistillError as exc:
            raise BaldistillError(f"{path}: {exc}") from None
