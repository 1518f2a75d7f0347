"""The run table of `baldistill report`: one row per run, and each policy's mean and spread.

A run's scores are recomputed from its record's predictions by metrics.score,
the one definition: macro and micro on the test split's own distribution (the
capped test rows weighted by their domain's count in the full split, where the
record's info has test_counts), the balanced reading of the same rows beside
them, and head/tail as means of per-domain scores. A record also says how its
rows were answered: a record that kept each row's route shows how many of its
scored answers the second pass gave (0 since evaluate.second_pass became a side
reading); an older record, which kept no route, had the second pass read every
row without an answer sentence, so those rows are counted from its answer
sentence rate.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from baldistill.core.layout import StagePaths
from baldistill.core.metrics import score
from baldistill.core.rows import DEFAULT_HEAD_THRESHOLD
from baldistill.report.exp_rows import number, run_name

SCORES = ("macro", "micro", "balanced_macro", "balanced_micro", "head", "tail")
CALLS = ("calls_budgeted", "calls_paid")
COLUMNS = SCORES + CALLS
# Per run only: how the student answered, what the teacher made, and how fast the
# machine's local teacher was (runs on machines 2-4x apart are not comparable by wall time).
RUN_FACTS = {
    "answer_sentence_rate": "metrics",
    "second_pass_in_score": "metrics",
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
HEADERS = {
    "balanced_macro": "balanced macro",
    "balanced_micro": "balanced micro",
    "calls_budgeted": "calls budgeted",
    "calls_paid": "calls paid",
    "answer_sentence_rate": "answer sentence",
    "second_pass_in_score": "2nd-pass rows in score",
    "rows_synthesized": "synthesized",
    "prompt_tokens_per_s": "teacher prompt tok/s",
    "generation_tokens_per_s": "teacher gen tok/s",
    "rows_selected": "rows selected",
    "wall_min": "wall min",
}


def summarize(row: dict, stage: str) -> dict:
    """A run's summary from its `dvc exp show` row (metrics.json and the teacher ledger of `stage`)."""
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


def scored(record: dict) -> tuple[dict, dict]:
    """(summary, per-domain table) of a run record, its scores recomputed from its predictions."""
    info, rows = record["info"], record["predictions"]
    result = score(
        info["task"],
        [r["gold"] for r in rows],
        [r["pred"] for r in rows],
        [r["domain"] for r in rows],
        info.get("labels") or [],
        record["counts"],
        info.get("head_threshold", DEFAULT_HEAD_THRESHOLD),
        test_counts=info.get("test_counts"),
    )
    summary = {**record["summary"], **{key: result[key] for key in SCORES}}
    summary |= {"reading": result["reading"], "n": result["n"], "test_rows": result["test_rows"]}
    summary["second_pass_in_score"] = second_pass_in_score(record)
    return summary, result["per_domain"]


def second_pass_in_score(record: dict) -> int | None:
    """Rows of the run's score whose answer the likelihood second pass gave, not the student.

    A record with routes: rows routed "second_pass" (none since the second pass became a
    side reading). Without routes (made before they were kept), the second pass read
    every row of a closed answer set that had no answer sentence: n x (1 - answer
    sentence rate); None for an open task, where it could also give no answer."""
    rows = record["predictions"]
    if any("route" in r for r in rows):
        return sum(r.get("route") == "second_pass" for r in rows)
    rate = record["summary"].get("answer_sentence_rate")
    if rate is None or record["info"]["task"] not in ("classification", "multiple_choice"):
        return None
    return round(len(rows) * (1 - rate))


def _cell(value, column: str) -> str:
    # By column, not by value: `dvc exp show` gives counts as floats too (1.0 synthesized row).
    if value is None:
        return "n/a"
    if column in (*SCORES, "answer_sentence_rate"):
        return f"{100 * value:.2f}"
    return f"{value:.1f}" if column.endswith("_per_s") else f"{value:g}"


def markdown(summaries: list[dict]) -> str:
    columns = (*COLUMNS, *RUN_FACTS, *EXTRA_FACTS)
    names = [HEADERS.get(c, c) for c in ("experiment", "policy", "stage", *columns)]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for s in summaries:
        cells = [_cell(s.get(c), c) for c in columns]
        lines.append("| " + " | ".join([str(s["experiment"]), str(s["policy"]), s["stage"], *cells]) + " |")
    return "\n".join(lines) + "\n\n" + _notes(summaries) + "\n"


def _notes(summaries: list[dict]) -> str:
    first = summaries[0] if summaries else {}
    if first.get("reading") == "weighted sample":
        reading = (
            f"Macro and micro: the paper's metrics on the test split's own distribution, each run's "
            f"{first['n']} test rows weighted by their domain's count in the full {first['test_rows']:,}-row split "
            "over the rows drawn (docs/evaluation.md); balanced: the same rows unweighted, every domain's rows alike. "
        )
    else:
        reading = "Macro and micro on the test rows as they are (the full split, or no split counts known). "
    return (
        reading + "Scores in percent (F1 or accuracy); head/tail are means of per-domain scores. "
        "Answer sentence: share of test rows where the student stated its answer itself. "
        "2nd-pass rows in score: rows scored with the answer the likelihood second pass picked, not the student's "
        "own (records made before the second pass became a side reading). "
        "Teacher tok/s: the local llama.cpp server's, from its log (n/a for a remote teacher, "
        "a run whose every answer came from the cache, or older runs). "
        "Calls paid and tok/s are the run's own: not those of teacher steps DVC restored from another run. "
        "Wall min: the run's `dvc exp run`, from --times (n/a without)."
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
            values = [r[column] for r in runs if r.get(column) is not None]
            row[column] = statistics.fmean(values) if values else None
            row[column + "_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        out.append(row)
    return out


def aggregate_markdown(groups: list[dict]) -> str:
    """Mean ± sample standard deviation over each policy's runs."""

    def cell(row: dict, column: str, scale: float) -> str:
        mean, std = row[column], row[column + "_std"]
        return "n/a" if mean is None else f"{scale * mean:.2f} ± {scale * std:.2f}"

    names = ["policy", "runs", *(HEADERS.get(c, c) for c in COLUMNS)]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for g in groups:
        cells = [cell(g, c, 100) for c in SCORES] + [cell(g, c, 1) for c in CALLS]
        lines.append("| " + " | ".join([g["policy"], str(g["runs"]), *cells]) + " |")
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


def routes_markdown(records: list[dict]) -> str:
    """Per run that kept routes: rows and the share right by route (the student's answer
    sentence, Zero-shot CoT's answer extraction, none), and the second pass's side reading."""
    lines = []
    for record in records:
        rows = record["predictions"]
        if not any("route" in r for r in rows):
            continue
        parts = []
        for route in dict.fromkeys(r.get("route") for r in rows):
            mine = [r for r in rows if r.get("route") == route]
            right = sum(r["pred"] is not None and r["pred"] == r["gold"] for r in mine)
            parts.append(f"{str(route).replace('_', ' ')} {len(mine)} (right {100 * right / len(mine):.1f}%)")
        side = sum("second_pass" in r for r in rows)
        extra = f"; the second pass read {side} rows (side reading, not scored)" if side else ""
        lines.append(f"- {record['summary']['experiment']}: " + ", ".join(parts) + extra)
    if not lines:
        return ""
    return "\nHow each run's test rows were answered (exact-match share right per route):\n" + "\n".join(lines) + "\n"
