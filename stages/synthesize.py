"""synthesize STAGE: teacher-written examples (input + rationale in one call)
for this stage's tail domains."""

import sys

from baldistill import layout
from baldistill.dataset_info import DatasetInfo
from baldistill.jsonl import read_json, write_json
from baldistill.params import load_params, stage_index
from baldistill.rows import read_rows, write_rows
from baldistill.stage import stage_command
from baldistill.synthesis import synthesize
from baldistill.teacher import Usage, open_client


@stage_command("stage")
def main(stage: str) -> None:
    params = load_params()
    here = layout.StagePaths(stage)
    quota = {d: n for d, n in read_json(here.allocation)["synthetic"].items() if n > 0}
    budget = sum(quota.values())
    rows, report = [], {"stage": stage_index(stage), "requested": 0, "kept": 0, "teacher": Usage().as_dict()}
    if budget:
        info = DatasetInfo.load(layout.INFO)
        with open_client(params, budget) as client:
            rows, report = synthesize(read_rows(layout.POOL), quota, stage_index(stage), params, info, client)
            client.export_used(here.dir / "synthesize_responses.jsonl")
    else:
        write_rows(here.dir / "synthesize_responses.jsonl", [])
    write_rows(here.synthetic, rows)
    write_json(here.report("synthesize"), report)
    print(f"{stage}: {len(rows)} synthetic rows from {budget} teacher calls", file=sys.stderr)


if __name__ == "__main__":
    main()
