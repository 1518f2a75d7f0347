"""synthesize STAGE PREVIOUS: teacher-written examples (input + rationale in one
call) for this stage's tail domains, as many as the allocation's synthetic
quota (none: no call, an empty output and the same report shape). Pool rows
annotated in earlier stages (PREVIOUS's training set) show their rationales
as demonstrations."""

import sys

from baldistill.core import layout
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.files import read_json, write_json
from baldistill.core.params import load_params, stage_index
from baldistill.core.rows import read_rows, write_rows
from baldistill.core.step import stage_command
from baldistill.core.step_keys import SYNTHESIZE, teacher_keys
from baldistill.teacher.budget import check_run_budget, step_allowance
from baldistill.teacher.endpoint import open_client
from baldistill.teacher.journal import step_payer
from baldistill.teacher.synthesis import synthesize, with_earlier_rationales
from baldistill.teacher.usage import usd_spent


@stage_command("stage", "previous")
def main(stage: str, previous: str) -> None:
    params = load_params()
    here = layout.StagePaths(stage)
    allocation = read_json(here.allocation)
    quota = {d: n for d, n in allocation["synthetic"].items() if n > 0}
    pool = with_earlier_rationales(read_rows(layout.POOL), read_rows(layout.StagePaths(previous).train_set))
    info, k = DatasetInfo.load(layout.INFO), stage_index(stage)
    teacher = teacher_keys(params.teacher, SYNTHESIZE)  # only the keys dvc.yaml lists for this step
    seed, max_input_chars = params.policy.seed, params.data.max_input_chars
    earlier = read_json(layout.StagePaths(previous).ledger)  # the run's earlier stages
    allowance = step_allowance(allocation, "synthesize", str(here.allocation))
    check_run_budget(params.budget.total, earlier["calls_budgeted"], allowance, f"synthesize@{stage}")
    spent = usd_spent(earlier)
    cap = {"max_usd": params.budget.max_usd, "spent_usd": spent, "payer": step_payer("synthesize", stage)}
    with open_client(teacher, budget=allowance, **cap) as client:
        held_out = [r.input for path in (layout.TEST, layout.VALIDATION) for r in read_rows(path)]
        rows, report = synthesize(pool, quota, k, teacher, seed, max_input_chars, info, client, held_out)
        client.export_used(here.teacher_responses("synthesize"))
        # Inside the block: its payments close only once the outputs are written (cache.py).
        write_rows(here.synthetic, rows)
        write_json(here.report("synthesize"), report)
    print(f"{stage}: {len(rows)} synthetic rows from {report['requested']} teacher calls", file=sys.stderr)


if __name__ == "__main__":
    main()
