"""`baldistill spend`: what the teacher was paid, and what the shared cache saved.

Two sources, each for what it knows:

* the teacher cache's payment journal (teacher/cache.py, table `spend`): every
  answer paid for, by which run step, with the server's token counts and the
  dollars at the price of the time. Summed per teacher model and per run (the
  DVC experiment, or "workspace"). Answers stored before the journal existed
  are counted apart (tokens known, dollars not).
* the runs' ledgers (metrics/<last stage>/teacher.json, from the workspace or
  from DVC experiments): calls budgeted and paid, dollars budgeted and paid;
  the difference is what the cache answered instead, and what it saved.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path

from baldistill.teacher.cache import DB_NAME


def journal_totals(cache_dir: Path) -> dict:
    """{"by_model": {...}, "by_run": {...}, "unjournalled": {...}} from the cache file (read-only)."""
    path = cache_dir / DB_NAME
    if not path.exists():
        return {"by_model": {}, "by_run": {}, "unjournalled": _zero()}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        paid = db.execute("SELECT payer, model, prompt_tokens, completion_tokens, usd FROM spend").fetchall()
        before = db.execute("SELECT request, response FROM entries WHERE key NOT IN (SELECT key FROM spend)").fetchall()
    by_model, by_run = defaultdict(_zero), defaultdict(_zero)
    for payer, model, prompt, completion, usd in paid:
        for total in (by_model[model], by_run[run_of(payer)]):
            _add(total, prompt, completion, usd)
    unjournalled = _zero()
    for _, response in before:
        answer = _json(response)
        _add(unjournalled, int(answer.get("prompt_tokens", 0)), int(answer.get("completion_tokens", 0)), 0.0)
    return {"by_model": dict(by_model), "by_run": dict(by_run), "unjournalled": unjournalled}


def run_of(payer: str) -> str:
    """The run part of a payer ("<repo>|<experiment or workspace>|<step>@<stage>")."""
    parts = payer.split("|")
    return parts[1] if len(parts) == 3 else (payer or "(no run)")


def ledger_savings(ledger: dict) -> dict:
    """Calls and dollars the cache answered instead of the teacher, from a run's ledger."""
    budgeted, paid = ledger.get("calls_budgeted", 0), ledger.get("calls_paid", 0)
    usd_budgeted = ledger.get("usd_budgeted")
    usd_paid = ledger.get("usd_paid", ledger.get("estimated_cost_usd", 0.0))
    return {
        "calls_budgeted": budgeted,
        "calls_paid": paid,
        "from_cache": budgeted - paid,
        "usd_paid": usd_paid,
        "usd_saved": None if usd_budgeted is None else round(usd_budgeted - usd_paid, 6),
    }


def render(totals: dict, runs: dict[str, dict]) -> str:
    lines = ["paid, from the teacher cache's journal:"]
    lines += [*_table("model", totals["by_model"]), "", *_table("run", totals["by_run"])]
    before = totals["unjournalled"]
    if before["calls"]:
        lines.append(
            f"  and {before['calls']} answer(s) stored before payments were journalled: "
            f"{before['prompt_tokens']} + {before['completion_tokens']} tokens, dollars not recorded"
        )
    if runs:
        lines += ["", "answered from the cache instead, from each run's ledger:"]
        lines.append(f"  {'run':<28} {'budgeted':>9} {'paid':>6} {'cached':>7} {'USD paid':>10} {'USD saved':>10}")
        for name, s in runs.items():
            saved = "-" if s["usd_saved"] is None else f"{s['usd_saved']:.4f}"
            lines.append(
                f"  {name:<28} {s['calls_budgeted']:>9} {s['calls_paid']:>6} {s['from_cache']:>7}"
                f" {s['usd_paid']:>10.4f} {saved:>10}"
            )
    return "\n".join(lines)


def _table(title: str, rows: dict) -> list[str]:
    out = [f"  {title:<28} {'calls':>6} {'prompt tok':>11} {'compl. tok':>11} {'USD':>10}"]
    for name, t in sorted(rows.items()):
        out.append(
            f"  {name:<28} {t['calls']:>6} {t['prompt_tokens']:>11} {t['completion_tokens']:>11} {t['usd']:>10.4f}"
        )
    return out if rows else [*out, "  (nothing paid yet)"]


def _zero() -> dict:
    return {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0}


def _add(total: dict, prompt: int, completion: int, usd: float) -> None:
    total["calls"] += 1
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
