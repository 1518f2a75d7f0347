"""`baldistill plan` for a reader: each stage's quotas, head and tail, then the
teacher's tokens and dollars per stage and step."""

from __future__ import annotations

from collections.abc import Mapping

from baldistill.core.policies import policy_spec


def render_plan(plan: dict, counts: Mapping[str, int]) -> str:
    """A human-readable table per stage: quota, taken, synthesized per domain."""
    lines = [
        f"policy {plan['policy']}: budget {plan['budget']} teacher calls over {plan['stages']} stage(s); "
        f"plan uses {plan['teacher_calls']}"
    ]
    for alloc in plan["per_stage"]:
        lines.append("")
        lines.append(
            f"stage {alloc['stage']}: {alloc['teacher_calls']} teacher calls, "
            f"{sum(alloc['real'].values())} pool rows taken, {sum(alloc['synthetic'].values())} synthesized"
            + (f", {sum(alloc['duplicated'].values())} duplicated" if any(alloc["duplicated"].values()) else "")
            + (f", {_open(plan['policy'], alloc)}" if alloc["open"] else "")
        )
        lines.append(f"  head ({len(alloc['head'])}): {', '.join(alloc['head']) or '-'}")
        lines.append(f"  tail ({len(alloc['tail'])}): {', '.join(alloc['tail']) or '-'}")
        width = max(len(d) for d in counts)
        lines.append(f"  {'domain'.ljust(width)}  pool  quota  taken  synth")
        for d in counts:
            if alloc["quota"].get(d) or alloc["synthetic"].get(d):
                lines.append(
                    f"  {d.ljust(width)}  {counts[d]:>4}  {alloc['quota'][d]:>5}  {alloc['real'][d]:>5}"
                    f"  {alloc['synthetic'][d]:>5}"
                )
    return "\n".join(lines)


def _open(policy: str, alloc: dict) -> str:
    if policy_spec(policy).scores_validation:
        return (
            f"their domains decided at run time by stage {alloc['stage'] - 1}'s validation scores "
            "(give --scores to plan them)"
        )
    return f"{alloc['open']} picked by IFD over the whole pool"


_COLUMNS = (
    ("stage", 5),
    ("step", 10),
    ("calls", 6),
    ("cached", 9),
    ("to pay (exp.)", 15),
    ("prompt tokens", 21),
    ("completion max", 15),
    ("expected", 10),
    ("USD sync max", 13),
    ("expected", 10),
    ("USD batch max", 14),
    ("expected", 10),
)


def render_costs(cost: dict) -> str:
    """The plan's teacher tokens and dollars, per stage and step, then the run's total."""
    if not cost["available"]:
        return f"teacher tokens and dollars: not counted; {cost['reason']}"
    price = cost["price"]
    lines = [
        f"teacher tokens and dollars ({cost['counting']}; USD {price['input_per_1m']:g} in / "
        f"{price['output_per_1m']:g} out per 1M tokens, batch = {price['batch_factor']:g} x sync)",
        "  " + "  ".join(name.rjust(width) if i > 1 else name.ljust(width) for i, (name, width) in enumerate(_COLUMNS)),
    ]
    for stage in cost["per_stage"]:
        lines += [_cost_row(str(stage["stage"]), step, stage[step]) for step in ("synthesize", "annotate")]
    lines.append(_cost_row("total", "", cost["total"]))
    to_pay = {kind: _maybe(usd, "{:.4f}") for kind, usd in cost["total"]["to_pay"]["usd_expected"].items()}
    lines.append(f"  to pay, expected: USD {to_pay['sync']} sync, {to_pay['batch']} batch")
    lines.append(
        "  expected completion per call: " + "; ".join(_source(s, e) for s, e in cost["expected_completion"].items())
    )
    lines += [f"  note: {note}" for note in cost["notes"]]
    return "\n".join(lines)


def _cost_row(stage: str, step: str, cost: dict) -> str:
    prompt, completion, usd = cost["prompt_tokens"], cost["completion_tokens"], cost["usd"]
    tokens = f"{prompt['min']:,}" if prompt["exact"] else f"{prompt['min']:,}-{prompt['max']:,}"
    cells = (
        stage,
        step,
        str(cost["calls"]),
        _span(cost["cached_calls"]),
        _span(cost["to_pay"]["calls"], expected=True),
        tokens,
        f"{completion['max']:,}",
        _maybe(completion["expected"], "{:,.0f}"),
        _maybe(usd["sync"]["max"], "{:.4f}"),
        _maybe(usd["sync"]["expected"], "{:.4f}"),
        _maybe(usd["batch"]["max"], "{:.4f}"),
        _maybe(usd["batch"]["expected"], "{:.4f}"),
    )
    return "  " + "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, (_, w)) in enumerate(zip(cells, _COLUMNS)))


def _span(calls: dict, expected: bool = False) -> str:
    """A number of calls: exact, or its min-max range (and its expected value)."""
    if calls["min"] == calls["max"]:
        return str(calls["min"])
    span = f"{calls['min']}-{calls['max']}"
    return f"{span} ({calls['expected']:.0f})" if expected else span


def _maybe(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def _source(step: str, found: dict) -> str:
    where = f"{found['model']}, max_tokens {found['max_tokens']}"
    if found["mean"] is None:
        return f"{step}: none cached ({where})"
    return f"{step} {found['mean']:.1f} (mean of {found['responses']} cached responses, {where})"
