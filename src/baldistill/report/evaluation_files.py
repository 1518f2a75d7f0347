"""The files one evaluation leaves: metrics.json (a DVC metric), the
per-domain CSV (a DVC plot) and chart, and every prediction with its route."""

from __future__ import annotations

from baldistill.core.files import write_json, write_jsonl
from baldistill.core.layout import StagePaths
from baldistill.report.plots import domain_chart, write_domain_csv


def write_evaluation(
    here: StagePaths, metrics: dict, predictions: list[dict], header: dict, head_threshold: int, title: str
) -> None:
    """`header` (policy, stage, split) leads metrics.json; per-domain scores go to the CSV, not the JSON."""
    summary = {k: v for k, v in metrics.items() if k != "per_domain"}
    write_json(here.metrics, {**header, **summary})
    write_domain_csv(metrics, head_threshold, here.per_domain_csv)
    domain_chart(metrics, head_threshold, here.per_domain_png, title=title)
    write_jsonl(here.predictions, predictions)
