"""annotate STAGE PREVIOUS: teacher rationales (zero-shot CoT, gold label given, greedy)
for the pool rows this stage selected, if the policy annotates (else the gold
labels only, no call). Also writes the stage's teacher ledger: the previous
stage's plus this stage's synthesize and annotate usage."""

import sys

from baldistill.core import layout
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.files import read_json, write_json
from baldistill.core.params import load_params, stage_index
from baldistill.core.policies import policy_spec
from baldistill.core.rows import read_rows, write_rows
from baldistill.core.step import stage_command
from baldistill.core.step_keys import ANNOTATE, teacher_keys
from baldistill.teacher.annotation import annotate, keep_gold_labels
from baldistill.teacher.budget import check_run_budget, step_allowance
from baldistill.teacher.endpoint import open_client
from baldistill.teacher.journal import step_payer
from baldistill.teacher.usage import add_usage, usd_spent


@stage_command("stage", "previous")
def main(stage: str, previous: str) -> None:
    params = load_params()
    here = layout.StagePaths(stage)
    k = stage_index(stage)
    todo = [r for r in read_rows(here.selected) if r.source != "duplicate"]
    synthesized = read_json(here.report("synthesize"))
    earlier = read_json(layout.StagePaths(previous).ledger)
    if policy_spec(params.policy.name).annotates:
        info = DatasetInfo.load(layout.INFO)
        allowance = step_allowance(read_json(here.allocation), "annotate", str(here.allocation))
        so_far = earlier["calls_budgeted"] + synthesized["teacher"]["calls_budgeted"]
        check_run_budget(params.budget.total, so_far, allowance, f"annotate@{stage}")
        spent = usd_spent(earlier) + usd_spent(synthesized["teacher"])
        cap = {"max_usd": params.budget.max_usd, "spent_usd": spent, "payer": step_payer("annotate", stage)}
        teacher = teacher_keys(params.teacher, ANNOTATE)  # only the keys dvc.yaml lists for this step
        with open_client(teacher, budget=allowance, **cap) as client:
            rows, report = annotate(todo, k, teacher, params.data.max_input_chars, info, client)
            client.export_used(here.teacher_responses("annotate"))
            write_outputs(here, rows, report, earlier, synthesized)
    else:
        rows, report = keep_gold_labels(todo, k)
        write_rows(here.teacher_responses("annotate"), [])
        write_outputs(here, rows, report, earlier, synthesized)
    print(f"{stage}: annotated {len(rows)} of {len(todo)} rows", file=sys.stderr)


def write_outputs(here: layout.StagePaths, rows: list, report: dict, earlier: dict, synthesized: dict) -> None:
    # Written before the client closes its payments: a kill before this point
    # leaves them open, and the re-run counts them as this run's (cache.py).
    write_rows(here.annotated, rows)
    write_json(here.report("annotate"), report)
    ledger = add_usage(earlier, synthesized["teacher"], report["teacher"], rows_synthesized=synthesized["kept"])
    write_json(here.ledger, ledger)


if __name__ == "__main__":
    main()
