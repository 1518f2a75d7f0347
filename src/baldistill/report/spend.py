"""`baldistill spend`: what the teacher was paid, and what the shared cache saved.

Two sources, each for what it knows:

* the teacher cache's payment journal (teacher/journal.py): every attempt the
  teacher may have billed, by which run step, with the server's token counts
  and the dollars at the price of the time; attempts whose fate no client can
  know (a timeout, a dropped connection, a kill while in flight) apart, at
  their worst case. Summed per teacher model and per run (the DVC experiment,
  or "workspace"). Answers stored before the journal existed are counted apart
  (tokens known, dollars not).
* the runs' ledgers (metrics/<last stage>/teacher.json, from the workspace or
  from DVC experiments): calls budgeted and paid, dollars budgeted and paid;
  the difference is what the cache answered instead, and what it saved.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from baldistill.teacher.journal import BILLED, all_entries, run_of, unjournalled_answers
from baldistill.teacher.store import read_only


def journal_totals(cache_dir: Path) -> dict:
    """{"by_model": {...}, "by_run": {...}, "unjournalled": {...}} from the cache file (read-only)."""
    db = read_only(cache_dir)
    if db is None:
        return {"by_model": {}, "by_run": {}, "unjournalled": _zero()}
    with db:
        entries, before = all_entries(db), unjournalled_answers(db)
    db.close()
    by_model, by_run = defaultdict(_zero), defaultdict(_zero)
    for entry in entries:
        for total in (by_model[entry.model], by_run[run_of(entry.payer)]):
            if entry.state == BILLED:
                _add(total, entry.prompt_tokens, entry.completion_tokens, entry.usd)
            else:
                total["attempts_unknown"] += 1
                total["usd_unknown"] += entry.usd
    unjournalled = _zero()
    for response in before:
        answer = _json(response)
        _add(unjournalled, int(answer.get("prompt_tokens", 0)), int(answer.get("completion_tokens", 0)), 0.0)
    return {"by_model": dict(by_model), "by_run": dict(by_run), "unjournalled": unjournalled}


def ledger_savings(ledger: dict) -> dict:
    """Calls and dollars the cache answered instead of the teacher, from a run's ledger,
    with the attempts billed and the worst case of those whose fate is unknown."""
    budgeted, paid = ledger.get("calls_budgeted", 0), ledger.get("calls_paid", 0)
    usd_budgeted = ledger.get("usd_budgeted")
    usd_paid = ledger.get("usd_paid", ledger.get("estimated_cost_usd", 0.0))
    return {
        "calls_budgeted": budgeted,
        "calls_paid": paid,
        "from_cache": budgeted - paid,
        "attempts_billed": ledger.get("attempts_billed", paid),
        "usd_paid": usd_paid,
        "usd_unknown": ledger.get("usd_unknown", 0.0),
        "usd_saved": None if usd_budgeted is None else round(usd_budgeted - usd_paid, 6),
    }


def render(totals: dict, runs: dict[str, dict]) -> str:
    lines = ["paid, from the teacher cache's journal:"]
    lines += [*_table("model", totals["by_model"]), "", *_table("run", totals["by_run"])]
    before = totals["unjournalled"]
    if before["attempts_billed"]:
        lines.append(
            f"  and {before['attempts_billed']} answer(s) stored before payments were journalled: "
            f"{before['prompt_tokens']} + {before['completion_tokens']} tokens, dollars not recorded"
        )
    if runs:
        lines += ["", "answered from the cache instead, from each run's ledger:"]
        head = f"  {'run':<28} {'budgeted':>9} {'paid':>6} {'billed':>7} {'cached':>7} {'USD paid':>10}"
        lines.append(f"{head} {'USD unknown':>12} {'USD saved':>10}")
        for name, s in runs.items():
            saved = "-" if s["usd_saved"] is None else f"{s['usd_saved']:.4f}"
            lines.append(
                f"  {name:<28} {s['calls_budgeted']:>9} {s['calls_paid']:>6} {s['attempts_billed']:>7}"
                f" {s['from_cache']:>7} {s['usd_paid']:>10.4f} {s['usd_unknown']:>12.4f} {saved:>10}"
            )
    return "\n".join(lines)


def _table(title: str, rows: dict) -> list[str]:
    """Billed attempts with their tokens and dollars; beside them, attempts that may have been
    billed (no usage came back: a client cannot know) at their worst case."""
    head = f"  {title:<28} {'billed':>6} {'prompt tok':>11} {'compl. tok':>11} {'USD':>10}"
    out = [f"{head} {'unknown':>8} {'USD at most':>12}"]
    for name, t in sorted(rows.items()):
        out.append(
            f"  {name:<28} {t['attempts_billed']:>6} {t['prompt_tokens']:>11} {t['completion_tokens']:>11}"
            f" {t['usd']:>10.4f} {t['attempts_unknown']:>8} {t['usd_unknown']:>12.4f}"
        )
    return out if rows else [*out, "  (nothing paid yet)"]


def _zero() -> dict:
    return {
        "attempts_billed": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "usd": 0.0,
        "attempts_unknown": 0,
        "usd_unknown": 0.0,
    }


def _add(total: dict, prompt: int, completion: int, usd: float) -> None:
    total["attempts_billed"] += 1
    total["prompt_tokens"] += prompt
    total["completion_tokens"] += completion
    total["usd"] += usd


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def workspace_ledger(metrics_dir: Path) -> dict | None:
    """The last stage's ledger in the workspace (metrics/s<K-1>/teacher.json), if any."""
    stages = sorted(
        (int(p.parent.name[1:]), p) for p in metrics_dir.glob("s*/teacher.json") if p.parent.name[1:].isdigit()
    )
    return json.loads(stages[-1][1].read_text()) if stages else None


def experiment_ledgers(names: list[str], repo: str | None = None) -> dict[str, dict]:
    """Each named DVC experiment's last-stage ledger, through `dvc exp show`,
    less the calls of teacher steps DVC restored from another run (report.restored)."""
    import dvc.api

    from baldistill.report.exp_rows import experiment_baselines, pick, with_file_metrics
    from baldistill.report.restored import own_ledgers

    rows = dvc.api.exp_show(repo=repo, revs=experiment_baselines(repo))
    chosen = [with_file_metrics(row, repo) for row in pick(rows, names)]
    return {name: ledger for name, (ledger, _) in own_ledgers(rows, chosen, repo).items()}
