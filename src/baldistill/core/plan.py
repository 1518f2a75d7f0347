"""`baldistill plan`: what a run will spend, before any money is spent."""

from __future__ import annotations

from collections.abc import Mapping


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
            + (f", {alloc['open']} picked by IFD over the whole pool" if alloc["open"] else "")
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
