"""`baldistill report`: one comparison of chosen DVC experiments.

Reads each experiment's final-stage metrics through `dvc.api.exp_show` and
its predictions through `dvc.api.read` (so experiments that are not checked
out, and the workspace, compare alike), then writes a markdown table
(report.run_table: scores recomputed from the predictions, on the test split's
own distribution), the labels each student never or over-predicts
(report.label_use), and the charts: per domain, head to tail, one series per
experiment (the paper's Figure 2), head vs tail, and the head domains' confusion.
Several experiments of one policy (seeds) are also summarised as mean and
spread, and then the chart has one series per policy: its mean per domain with
its spread. Each policy is compared with a baseline (default Random
Finetune-CoT) by paired bootstrap intervals over the shared test rows
(report.comparison).
What the report reads of each run is first gathered into a run record
(report.run_records), which can be saved and read back instead of DVC.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from baldistill.core.errors import BaldistillError
from baldistill.core.files import atomic_open
from baldistill.core.layout import COUNTS, INFO, StagePaths
from baldistill.core.rows import DEFAULT_HEAD_THRESHOLD, head_to_tail, is_head
from baldistill.report.comparison import compare, compare_pairs, comparison_markdown, pairs_markdown
from baldistill.report.exp_rows import experiment_baselines, final_stage, pick, read_output, run_name, with_file_metrics
from baldistill.report.label_use import confusion_chart, label_use_markdown
from baldistill.report.plots import comparison_chart, head_tail_chart
from baldistill.report.restored import own_ledgers, restored_markdown
from baldistill.report.run_records import load_record, make_record, record_path, save_records
from baldistill.report.run_table import (
    OWN_LEDGER_FACTS,
    aggregate,
    aggregate_markdown,
    by_policy,
    markdown,
    mean_per_domain,
    routes_markdown,
    scored,
    summarize,
)


def rows_selected(rev: str, final: str, repo: str | None) -> int | None:
    """Pool rows the select steps took over stages s0..final (None where a report is missing)."""
    from dvc.exceptions import DvcException

    total = 0
    for k in range(int(final[1:]) + 1):
        try:
            report = read_output(StagePaths(f"s{k}").report("select").as_posix(), rev, repo)
            total += json.loads(report)["rows_selected"]
        except (FileNotFoundError, KeyError, ValueError, DvcException):  # older runs lack the report or the key
            return None
    return total


def read_times(path: str | Path) -> dict[str, float]:
    """{experiment: wall seconds} from a TSV with columns experiment and wall_s (scripts/results.sh)."""
    with open(path, encoding="utf-8") as handle:
        return {r["experiment"]: float(r["wall_s"]) for r in csv.DictReader(handle, delimiter="\t")}


def per_domain(rev: str, stage: str, repo: str | None) -> dict[str, dict]:
    text = read_output(StagePaths(stage).per_domain_csv.as_posix(), rev, repo)
    return {
        r["domain"]: {"score": float(r["score"]), "pool_rows": int(r["pool_rows"]), "n": int(r["n"])}
        for r in csv.DictReader(io.StringIO(text))
    }


def _pairing_options(records: list[dict], n_boot: int) -> dict:
    info = records[0]["info"]
    return {
        "task": info["task"],
        "labels": info.get("labels") or [],
        "pool_counts": records[0]["counts"],
        "head_threshold": info.get("head_threshold", DEFAULT_HEAD_THRESHOLD),
        "n_boot": n_boot,
        "test_counts": info.get("test_counts"),
    }


def intervals_section(records: list[dict], baseline: str, n_boot: int) -> str:
    """The paired-bootstrap comparison of every policy with `baseline`, or a line saying why there is none."""
    summaries = [r["summary"] for r in records]
    runs = by_policy(summaries, [r["predictions"] for r in records])
    if baseline not in runs:
        return f"\nNo {baseline} run among these experiments, so no intervals (choose one with --baseline).\n"
    if len(runs) < 2:
        return f"\nOnly {baseline} runs here: nothing to compare it with.\n"
    compared = compare(runs, baseline, **_pairing_options(records, n_boot))
    return "\n" + comparison_markdown(compared, baseline, len(runs[baseline]), len(runs[baseline][0]))


def pairs_section(records: list[dict], pairs: list[tuple[str, str]], n_boot: int) -> str:
    """The chosen (policy, baseline) pairs' intervals in one table (none: nothing)."""
    if not pairs:
        return ""
    runs = by_policy([r["summary"] for r in records], [r["predictions"] for r in records])
    compared = compare_pairs(runs, pairs, **_pairing_options(records, n_boot))
    return "\n" + pairs_markdown(compared, len(records[0]["predictions"]))


def collect(wanted: list[str], repo: str | None = None) -> list[dict]:
    """The run record (report.run_records) of each wanted experiment, read from DVC."""
    import dvc.api

    every_row = dvc.api.exp_show(repo=repo, revs=experiment_baselines(repo))
    rows = [with_file_metrics(row, repo) for row in pick(every_row, wanted)]
    stages = [final_stage(row) for row in rows]
    if unfinished := [run_name(row) for row, stage in zip(rows, stages) if stage is None]:
        raise BaldistillError(f"experiment {unfinished[0]} has no metrics yet")
    own = own_ledgers(every_row, rows, repo)
    records = []
    for row, stage in zip(rows, stages):
        rev = row["rev"]
        summary = summarize(row, stage)
        ledger, restored = own[summary["experiment"]]
        summary.update({c: ledger.get(c) for c in OWN_LEDGER_FACTS})
        summary["rows_selected"] = rows_selected(rev, stage, repo)
        lines = read_output(StagePaths(stage).predictions.as_posix(), rev, repo).splitlines()
        predictions = [json.loads(line) for line in lines]
        records.append(
            make_record(
                summary,
                per_domain(rev, stage, repo),
                restored,
                predictions,
                json.loads(read_output(INFO.as_posix(), rev, repo)),
                json.loads(read_output(COUNTS.as_posix(), rev, repo)),
            )
        )
    return records


def gather(wanted: list[str], repo: str | None = None, from_runs: str | Path | None = None) -> list[dict]:
    """Records in the order wanted: from <from_runs>/<name>.json where that file
    exists, the rest from DVC (which is not asked at all when every record is saved)."""
    if from_runs is None:
        return collect(wanted, repo)
    if not wanted:
        raise BaldistillError("--from-runs: name the experiments to read")
    saved = {n: load_record(from_runs, n) for n in wanted if record_path(from_runs, n).exists()}
    rest = [n for n in wanted if n not in saved]
    live = dict(zip(rest, collect(rest, repo))) if rest else {}
    return [saved[n] if n in saved else live[n] for n in wanted]


def write_report(
    wanted: list[str],
    out_dir: str | Path,
    repo: str | None = None,
    baseline: str | tuple[str, ...] = "random",
    n_boot: int = 1000,
    times: dict[str, float] | None = None,
    from_runs: str | Path | None = None,
    save_runs: str | Path | None = None,
    charts: bool = True,
    pairs: tuple[tuple[str, str], ...] = (),
) -> dict:
    """Write report.md and (with `charts`) per_domain.png, head_tail.png and, for
    classification, confusion_head.png under `out_dir`; returns the paths and rows.
    `times`: wall seconds per experiment name, where known. `from_runs`/`save_runs`:
    a folder of run records to read from / write to. `baseline`: one policy or several,
    each with its own table; `pairs`: (policy, baseline) readings in one more table."""
    records = gather(wanted, repo, from_runs)
    if save_runs:
        save_records(records, save_runs)
    summaries, tables = [], []
    for record in records:
        summary, table = scored(record)
        wall = (times or {}).get(summary["experiment"])
        summary["wall_min"] = None if wall is None else round(wall / 60, 1)
        summaries.append(summary)
        tables.append(table)
    series = {f"{s['policy']} ({s['experiment']})": table for s, table in zip(summaries, tables)}
    text, title = markdown(summaries), "per-domain score, head to tail"
    text += restored_markdown({s["experiment"]: r["restored"] for s, r in zip(summaries, records)})
    text += routes_markdown(records) + label_use_markdown(records)
    groups = aggregate(summaries)
    if any(g["runs"] > 1 for g in groups):
        text += "\n" + aggregate_markdown(groups)
        series = {
            f"{policy} (mean of {len(runs)})": mean_per_domain(runs)
            for policy, runs in by_policy(summaries, tables).items()
        }
        title += ", mean ± sd over each policy's runs"
    info = records[0]["info"]
    head_threshold = info.get("head_threshold", DEFAULT_HEAD_THRESHOLD)  # older runs lack it
    for each in (baseline,) if isinstance(baseline, str) else baseline:
        text += intervals_section(records, each, n_boot)
    text += pairs_section(records, list(pairs), n_boot)
    out = Path(out_dir)
    with atomic_open(out / "report.md") as handle:
        handle.write(text)
    paths = {"markdown": str(out / "report.md"), "charts": []}
    if charts:
        comparison_chart(series, out / "per_domain.png", head_threshold, title=title)
        head_tail_chart(groups, out / "head_tail.png", title="head vs tail, mean ± sd over each policy's runs")
        paths["charts"] = [str(out / "per_domain.png"), str(out / "head_tail.png")]
        head = [d for d in head_to_tail(records[0]["counts"]) if is_head(records[0]["counts"][d], head_threshold)]
        if info["task"] == "classification" and head:
            confusion_chart(by_policy(summaries, records), head, out / "confusion_head.png")
            paths["charts"].append(str(out / "confusion_head.png"))
    return {**paths, "rows": summaries, "groups": groups}
