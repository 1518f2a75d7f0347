"""The one row schema shared by every JSONL file the pipeline reads or writes.

A row is a labelled example of one domain. Pool and test rows carry `id`,
`domain`, `input`, `label`; rows that went through the teacher also carry
`rationale`, `source` ("pool" or "synthetic") and `stage`. Optional extras
(`choices`, `score`, `answer`...) ride along in `meta`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_jsonl, write_jsonl

SOURCES = ("pool", "synthetic", "duplicate")
_REQUIRED = ("id", "domain", "input", "label")
_OPTIONAL_TEXT = ("rationale",)


@dataclass
class Row:
    id: str
    domain: str
    input: str
    label: str
    rationale: str | None = None
    source: str | None = None
    stage: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        record = {k: v for k, v in asdict(self).items() if v is not None}
        if not record.get("meta"):
            record.pop("meta", None)
        return record

    def with_(self, **changes: Any) -> Row:
        data = asdict(self)
        data.update(changes)
        return Row(**data)


def parse_row(obj: dict, where: str, *, teacher: bool = False) -> Row:
    """Validate one JSON object as a Row; errors name `where` and the field."""
    for key in _REQUIRED:
        if key not in obj:
            raise BaldistillError(f"{where}: missing field '{key}'")
        value = obj[key]
        if key == "id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or (key != "input" and not value.strip()):
            raise BaldistillError(f"{where}: field '{key}' must be a non-empty string")
    for key in _OPTIONAL_TEXT:
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise BaldistillError(f"{where}: field '{key}' must be a string")
    source = obj.get("source")
    if source is not None and source not in SOURCES:
        raise BaldistillError(f"{where}: field 'source' must be one of {', '.join(SOURCES)}, got {source!r}")
    stage = obj.get("stage")
    if stage is not None and (not isinstance(stage, int) or isinstance(stage, bool) or stage < 0):
        raise BaldistillError(f"{where}: field 'stage' must be a non-negative integer")
    if teacher:
        for key in ("rationale", "source", "stage"):
            if obj.get(key) is None:
                raise BaldistillError(f"{where}: missing field '{key}' (required for teacher-made rows)")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise BaldistillError(f"{where}: field 'meta' must be an object")
    return Row(
        id=str(obj["id"]),
        domain=obj["domain"],
        input=obj["input"],
        label=obj["label"],
        rationale=obj.get("rationale"),
        source=source,
        stage=stage,
        meta=meta,
    )


def read_rows(path: str | Path, *, teacher: bool = False) -> list[Row]:
    """Read and validate a JSONL file of rows; ids must be unique."""
    rows = read_jsonl(path, lambda obj, where: parse_row(obj, where, teacher=teacher))
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if row.id in seen:
            raise BaldistillError(f"{path}: duplicate id {row.id!r} (row {index + 1})")
        seen.add(row.id)
    return rows


def write_rows(path: str | Path, rows: list[Row]) -> int:
    return write_jsonl(path, (row.to_dict() for row in rows))


def head_to_tail(counts: Mapping[str, int]) -> list[str]:
    """Domains from head to tail: most pool rows first, ties by name. The one
    definition of the order that allocation, metrics, plots and reports use."""
    return sorted(counts, key=lambda d: (-counts[d], d))


# Appendix A: an R52 domain with more than 50 training rows is head. The data set's
# own rule where it names its head domains instead (MATH, MCQA) is resolved into a
# threshold by data.datasets.head_threshold_for; this is the default everywhere else.
DEFAULT_HEAD_THRESHOLD = 50


def is_head(pool_rows: int, threshold: int = DEFAULT_HEAD_THRESHOLD) -> bool:
    """Whether a domain with `pool_rows` training-pool rows is head (the data set's
    head/tail split, Figure 3): more pool rows than `threshold`. The one definition
    that metrics, plots, data sets and reports use. (Allocation's per-stage notion,
    whether a stage's unused rows meet a domain's quota, is another thing.)"""
    return pool_rows > threshold


def domain_counts(rows: list[Row]) -> dict[str, int]:
    """Rows per domain, head to tail."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.domain] = counts.get(row.domain, 0) + 1
    return {d: counts[d] for d in head_to_tail(counts)}
