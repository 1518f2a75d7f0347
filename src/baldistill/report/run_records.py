"""A run's record: everything `baldistill report` reads of one experiment, as one JSON file.

An experiment lives in refs/exps and its outputs in DVC's cache, so a fresh clone
(or a machine that lost them) cannot rebuild a report from `dvc exp show`
unless both were pushed (`dvc exp push`, `dvc push`). A record keeps what the
report needs, and only that: the run's summary row, its per-domain scores, the
teacher steps it restored, each test row's gold and predicted answer (what the
paired bootstrap resamples) and its route, and the data set's info (with the
full test split's per-domain counts) and pool counts. Records
are small (about 120 bytes a test row: 41 KB for 350 rows) and meant to be committed beside the
results they make (`report --save-runs docs/results/runs`), so that
`report --from-runs docs/results/runs` regenerates those tables and charts.
"""

from __future__ import annotations

from pathlib import Path

from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_json, write_json

VERSION = 1
KEYS = ("summary", "per_domain", "restored", "predictions", "info", "counts")
PREDICTION_KEYS = ("id", "domain", "gold", "pred", "route", "second_pass")


def make_record(
    summary: dict, per_domain: dict, restored: dict, predictions: list[dict], info: dict, counts: dict
) -> dict:
    """One run's record; predictions keep only what pairing and scoring read, and how
    each row was answered (its route, and the second pass's side answer where it ran)."""
    slim = [{k: row[k] for k in PREDICTION_KEYS if k in row} for row in predictions]
    return {
        "version": VERSION,
        "summary": summary,
        "per_domain": per_domain,
        "restored": restored,
        "predictions": slim,
        "info": info,
        "counts": counts,
    }


def record_path(folder: str | Path, name: str) -> Path:
    return Path(folder) / f"{name}.json"


def save_records(records: list[dict], folder: str | Path) -> list[Path]:
    """Write each record to <folder>/<experiment>.json (atomically; an existing one is replaced)."""
    paths = []
    for record in records:
        path = record_path(folder, record["summary"]["experiment"])
        write_json(path, record)
        paths.append(path)
    return paths


def load_record(folder: str | Path, name: str) -> dict:
    """The record of experiment `name`, checked: a file from another version or
    missing a part is an error naming the file and the part."""
    path = record_path(folder, name)
    record = read_json(path)
    if not isinstance(record, dict) or record.get("version") != VERSION:
        raise BaldistillError(f"{path}: version: expected a run record of version {VERSION}")
    for key in KEYS:
        if key not in record:
            raise BaldistillError(f"{path}: {key}: missing")
    if record["summary"].get("experiment") != name:
        raise BaldistillError(f"{path}: summary.experiment: {record['summary'].get('experiment')!r}, not {name!r}")
    return record
