"""`baldistill report`: one comparison of chosen DVC experiments.

Reads each experiment's final-stage metrics through `dvc.api.exp_show` and
its per-domain CSV through `dvc.api.read` (so experiments that are not checked
out, and the workspace, compare alike), then writes a markdown table and the
per-domain chart, head to tail, one series per experiment (the paper's Figure 2).
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
import statistics
from collections import defaultdict
from pathlib import Path

from baldistill.core.errors import BaldistillError
from baldistill.core.files import atomic_open
from baldistill.core.layout import COUNTS, INFO, StagePaths
from baldistill.core.rows import DEFAULT_HEAD_THRESHOLD
from baldistill.report.comparison import compare, comparison_markdown
from baldistill.report.exp_rows import (
    experiment_baselines,
    final_stage,
    number,
    pick,
    read_output,
    run_name,
    with_file_metrics,
)
from baldistill.report.plots import comparison_chart, head_tail_chart
from baldistill.report.restored import own_ledgers, restored_markdown
from baldistill.report.run_records import load_record, make_record, record_path, save_records

SCORES = ("macro", "micro", "head", "tail")
CALLS = ("calls_budgeted", "calls_paid")
COLUMNS = SCORES + CALLS
# Per run only: how the student answered, what the teacher made, and how fast the
# machine's local teacher was (runs on machines 2-4x apart are not comparable by wall time).
RUN_FACTS = {
    "answer_sentence_rate": "metrics",
    "rows_synthesized": "teacher",
    "prompt_tokens_per_s": "teacher",
    "generation_tokens_per_s": "teacher",
}
# Per run, what the run itself paid and measured: steps DVC restored from another
# run's cache carry that run's calls and tokens/s in their ledger (report.restored).
OWN_LEDGER_FACTS = ("calls_paid", "prompt_tokens_per_s", "generation_tokens_per_s")
# Per run, from outside DVC's metrics: rows the select steps took (all stages) and
# the run's wall time (from a TSV that the script running the experiments keeps).
EXTRA_FACTS = ("rows_selected", "wall_min")


def summarize(row: dict, stage: str) -> dict:
    here = StagePaths(stage)
    scores, ledger = f"{here.metrics.as_posix()}:", f"{here.ledger.as_posix()}:"
    return {
        "experiment": run_name(row),
        "policy": row.get("policy.name"),
        "stage": stage,
        **{c: number(row, scores + c) for c in SCORES},
        **{c: number(row, ledger + c) for c in CALLS},
        **{c: number(row, (scores if where == "metrics" else ledger) + c) for c, where in RUN_FACTS.items()},
    }


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


def markdown(summaries: list[dict]) -> str:
    def cell(value, column: str) -> str:
        # By column, not by value: `dvc exp show` gives counts as floats too (1.0 synthesized row).
        if value is None:
            return "n/a"
        if column in (*SCORES, "answer_sentence_rate"):
            return f"{100 * value:.2f}"
        return f"{value:.1f}" if column.endswith("_per_s") else f"{value:g}"

    lines = [
        "| experiment | policy | stage | macro | micro | head | tail | calls budgeted | calls paid "
        "| answer sentence | synthesized | teacher prompt tok/s | teacher gen tok/s | rows selected | wall min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        cells = [cell(s.get(c), c) for c in (*COLUMNS, *RUN_FACTS, *EXTRA_FACTS)]
        lines.append("| " + " | ".join([str(s["experiment"]), str(s["policy"]), s["stage"], *cells]) + " |")
    return "\n".join(lines) + (
        "\n\nScores in percent (F1 or accuracy); head/tail are means of per-domain scores. "
        "Answer sentence: share of test rows where the student stated its answer itself. "
        "Teacher tok/s: the local llama.cpp server's, from its log (n/a for a remote teacher, "
        "a run whose every answer came from the cache, or older runs). "
        "Calls paid and tok/s are the run's own: not those of teacher steps DVC restored from another run. "
        "Wall min: the run's `dvc exp run`, from --times (n/a without).\n"
    )


def by_policy(summaries: list[dict], items: list | None = None) -> dict[str, list]:
    """`items` (default: the summaries themselves) grouped by their summary's
    policy, in order of first appearance."""
    groups: dict[str, list] = defaultdict(list)
    for summary, item in zip(summaries, summaries if items is None else items, strict=True):
        groups[str(summary["policy"])].append(item)
    return groups


def aggregate(summaries: list[dict]) -> list[dict]:
    """Per policy, in order of first appearance: the number of runs, mean and
    sample standard deviation (0 for one run) of each score, and the calls.
    Runs lacking a score (None) are left out of that score's mean."""
    out = []
    for policy, runs in by_policy(summaries).items():
        row = {"policy": policy, "runs": len(runs)}
        for column in COLUMNS:
            values = [r[column] for r in runs if r[column] is not None]
            row[column] = statistics.fmean(values) if values else None
            row[column + "_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        out.append(row)
    return out


def aggregate_markdown(groups: list[dict]) -> str:
    """Mean ± sample standard deviation over each policy's runs."""

    def cell(row: dict, column: str, scale: float) -> str:
        mean, std = row[column], row[column + "_std"]
        return "n/a" if mean is None else f"{scale * mean:.2f} ± {scale * std:.2f}"

    lines = [
        "| policy | runs | macro | micro | head | tail | calls budgeted | calls paid |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        lines.append(
            "| "
            + " | ".join(
                [g["policy"], str(g["runs"])] + [cell(g, c, 100) for c in SCORES] + [cell(g, c, 1) for c in CALLS]
            )
            + " |"
        )
    return "\n".join(lines) + "\n\nMean ± sample standard deviation over each policy's runs (seeds).\n"


def mean_per_domain(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """The mean score of each domain over several runs' per-domain tables, and
    its spread (sample standard deviation; 0 for one run)."""
    domains = {d for run in runs for d in run}
    out = {}
    for domain in domains:
        present = [run[domain] for run in runs if domain in run]
        scores = [v["score"] for v in present]
        out[domain] = {
            "score": statistics.fmean(scores),
            "spread": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "pool_rows": max(v["pool_rows"] for v in present),
            "n": sum(v["n"] for v in present),
        }
    return out


def intervals_section(records: list[dict], baseline: str, n_boot: int) -> str:
    """The paired-bootstrap comparison of every policy with `baseline`, or a line saying why there is none."""
    summaries = [r["summary"] for r in records]
    runs = by_policy(summaries, [r["predictions"] for r in records])
    if baseline not in runs:
        return f"\nNo {baseline} run among these experiments, so no intervals (choose one with --baseline).\n"
    if len(runs) < 2:
        return f"\nOnly {baseline} runs here: nothing to compare it with.\n"
    info = records[0]["info"]
    compared = compare(
        runs,
        baseline,
        task=info["task"],
        labels=info.get("labels") or [],
        pool_counts=records[0]["counts"],
        head_threshold=info.get("head_threshold", DEFAULT_HEAD_THRESHOLD),
        n_boot=n_boot,
    )
    return "\n" + comparison_markdown(compared, baseline, len(runs[baseline]), len(runs[baseline][0]))


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
    baseline: str = "random",
    n_boot: int = 1000,
    times: dict[str, float] | None = None,
    from_runs: str | Path | None = None,
    save_runs: str | Path | None = None,
) -> dict:
    """Write report.md, per_domain.png and head_tail.png under `out_dir`; returns the
    paths and rows. `times`: wall seconds per experiment name, where known.
    `from_runs`/`save_runs`: a folder of run records to read from / write to."""
    records = gather(wanted, repo, from_runs)
    if save_runs:
        save_records(records, save_runs)
    summaries = []
    for record in records:
        summary = dict(record["summary"])
        wall = (times or {}).get(summary["experiment"])
        summary["wall_min"] = None if wall is None else round(wall / 60, 1)
        summaries.append(summary)
    tables = [r["per_domain"] for r in records]
    series = {f"{s['policy']} ({s['experiment']})": table for s, table in zip(summaries, tables)}
    text, title = markdown(summaries), "per-domain score, head to tail"
    text += restored_markdown({s["experiment"]: r["restored"] for s, r in zip(summaries, records)})
    groups = aggregate(summaries)
    if any(g["runs"] > 1 for g in groups):
        text += "\n" + aggregate_markdown(groups)
        series = {
            f"{policy} (mean of {len(runs)})": mean_per_domain(runs)
            for policy, runs in by_policy(summaries, tables).items()
        }
        title += ", mean ± sd over each policy's runs"
    head_threshold = records[0]["info"].get("head_threshold", DEFAULT_HEAD_THRESHOLD)  # older runs lack it
    text += intervals_section(records, baseline, n_boot)
    out = Path(out_dir)
    with atomic_open(out / "report.md") as handle:
        handle.write(text)
    comparison_chart(series, out / "per_domain.png", head_threshold, title=title)
    head_tail_chart(groups, out / "head_tail.png", title="head vs tail, mean ± sd over each policy's runs")
    return {
        "markdown": str(out / "report.md"),
        "chart": str(out / "per_domain.png"),
        "head_tail_chart": str(out / "head_tail.png"),
        "rows": summaries,
        "groups": groups,
    }


def stage_summary(metrics: dict, ledger: dict, per_domain_rows: list[dict], paths: dict[str, str]) -> str:
    """What `baldistill summary` prints after a run: where things are, the
    scores, head vs tail, the best and worst domains, and what the teacher cost."""

    def pct(value) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}"

    lines = [
        f"policy {metrics['policy']}, stage {metrics['stage']}: macro {pct(metrics['macro'])}  "
        f"micro {pct(metrics['micro'])}  head {pct(metrics['head'])}  tail {pct(metrics['tail'])}  "
        f"(n={metrics['n']} {metrics.get('split', 'test')} rows; the student's own answer sentence on "
        f"{pct(metrics.get('answer_sentence_rate'))}%, read by the second pass on the rest, "
        f"no answer {pct(metrics.get('no_answer'))}%)",
        f"teacher calls: {ledger['calls_budgeted']} budgeted, {ledger['calls_paid']} paid by this run "
        f"(the rest came from the cache), {ledger['prompt_tokens']} + {ledger['completion_tokens']} tokens",
    ]
    ranked = sorted(per_domain_rows, key=lambda r: -float(r["score"]))
    if ranked:

        def show(rows):
            return ", ".join(f"{r['domain']} {100 * float(r['score']):.0f} ({r['group']})" for r in rows)

        lines.append(f"best domains:  {show(ranked[:5])}")
        lines.append(f"worst domains: {show(ranked[-5:])}")
    lines += [f"{name}: {path}" for name, path in paths.items()]
    return "\n".join(lines)
