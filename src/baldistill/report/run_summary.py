"""What `baldistill summary` prints after a run: where things are, the scores on the
test split's own distribution and the balanced reading, how the student answered,
the labels it never or over-predicts, head vs tail, the best and worst domains, and
what the teacher cost."""

from __future__ import annotations

from baldistill.report.label_use import label_use, label_use_line


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _reading(metrics: dict) -> str:
    n, split = metrics["n"], metrics.get("split", "test")
    if metrics.get("reading") == "weighted sample":
        return f"on the {split} split's own distribution: {n} rows weighted to the full {metrics['test_rows']}"
    if metrics.get("reading") == "full split":
        return f"on the full {split} split, {n} rows"
    return f"on {n} {split} rows as drawn"


def _answers(metrics: dict) -> str:
    routes, accuracy = metrics.get("routes") or {}, metrics.get("route_accuracy") or {}
    parts = [
        f"{route.replace('_', ' ')} {count} (right {_pct(accuracy.get(route))}%)"
        for route, count in routes.items()
        if count
    ]
    line = "answers by route: " + (", ".join(parts) or "n/a") + "; a row without an answer of its own is wrong"
    if metrics.get("second_pass_rows") is not None:
        line += (
            f"\nsecond pass (a side reading, not the score): {metrics['second_pass_rows']} rows read by likelihood; "
            f"with them macro {_pct(metrics.get('second_pass_macro'))}  micro {_pct(metrics.get('second_pass_micro'))}"
        )
    return line


def stage_summary(
    metrics: dict, ledger: dict, per_domain_rows: list[dict], paths: dict[str, str], predictions: list[dict], info: dict
) -> str:
    lines = [
        f"policy {metrics['policy']}, stage {metrics['stage']}: macro {_pct(metrics['macro'])}  "
        f"micro {_pct(metrics['micro'])} ({_reading(metrics)}); balanced macro "
        f"{_pct(metrics.get('balanced_macro'))}  micro {_pct(metrics.get('balanced_micro'))}; "
        f"head {_pct(metrics['head'])}  tail {_pct(metrics['tail'])}",
        _answers(metrics),
    ]
    if info["task"] == "classification":
        golds, preds = [p["gold"] for p in predictions], [p["pred"] for p in predictions]
        use = label_use(golds, preds, info.get("labels") or [])
        lines.append("labels: " + label_use_line(use, len(set(golds)), info.get("test_counts")))
    lines.append(
        f"teacher calls: {ledger['calls_budgeted']} budgeted, {ledger['calls_paid']} paid by this run "
        f"(the rest came from the cache), {ledger['prompt_tokens']} + {ledger['completion_tokens']} tokens"
    )
    ranked = sorted(per_domain_rows, key=lambda r: -float(r["score"]))
    if ranked:

        def show(rows):
            return ", ".join(f"{r['domain']} {100 * float(r['score']):.0f} ({r['group']})" for r in rows)

        lines.append(f"best domains:  {show(ranked[:5])}")
        lines.append(f"worst domains: {show(ranked[-5:])}")
    lines += [f"{name}: {path}" for name, path in paths.items()]
    return "\n".join(lines)
