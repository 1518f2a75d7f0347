"""`baldistill plan`: what a run will spend, before any money is spent."""

from __future__ import annotations

from typing import Mapping

from .policy import make_plan


def plan_for(counts: Mapping[str, int], budget: int, stages: int, policy: str, *, seed: int = 0,
             schedule: str = "spread") -> dict:
    return make_plan(counts, budget, stages, policy, seed=seed, schedule=schedule)


def render_plan(plan: dict, counts: Mapping[str, int]) -> str:
    """A human-readable table per stage: quota, taken, synthesized per domain."""
    lines = [f"policy {plan['policy']}: budget {plan['budget']} teacher calls over {plan['stages']} stage(s); "
             f"plan uses {plan['teacher_calls']}"]
    for rnd in plan["rounds"]:
        lines.append("")
        lines.append(f"stage {rnd['stage']}: {rnd['teacher_calls']} teacher calls, "
                     f"{sum(rnd['real'].values())} pool rows taken, {sum(rnd['synthetic'].values())} synthesized"
                     + (f", {sum(rnd['duplicated'].values())} duplicated" if any(rnd["duplicated"].values()) else "")
                     + (f", {rnd['open']} picked by IFD over the whole pool" if rnd["open"] else ""))
        lines.append(f"  head ({len(rnd['head'])}): {', '.join(rnd['head']) or '-'}")
        lines.append(f"  tail ({len(rnd['tail'])}): {', '.join(rnd['tail']) or '-'}")
        width = max(len(d) for d in counts)
        lines.append(f"  {'domain'.ljust(width)}  pool  quota  taken  synth")
        for d in counts:
            if rnd["quota"].get(d) or rnd["synthetic"].get(d):
                lines.append(f"  {d.ljust(width)}  {counts[d]:>4}  {rnd['quota'][d]:>5}  {rnd['real'][d]:>5}"
                             f"  {rnd['synthetic'][d]:>5}")
    return "\n".join(lines)
