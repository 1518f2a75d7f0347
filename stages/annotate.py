"""annotate STAGE PREVIOUS: teacher rationales (zero-shot CoT, gold label given, greedy)
for the pool rows this stage selected. Policy random_label keeps gold labels
only and calls nobody. Also adds this stage's teacher usage to the ledger."""

import sys

from baldistill import layout
from baldistill.annotation import annotate
from baldistill.dataset_info import DatasetInfo
from baldistill.jsonl import read_json, write_json
from baldistill.ledger import add_usage
from baldistill.params import load_params, stage_index
from baldistill.rows import read_rows, write_rows
from baldistill.stage import stage_command
from baldistill.teacher import Usage, open_client


@stage_command("stage", "previous")
def main(stage: str, previous: str) -> None:
    params = load_params()
    here = layout.StagePaths(stage)
    k = stage_index(stage)
    todo = [r for r in read_rows(here.selected) if r.source != "duplicate"]
    responses = here.dir / "annotate_responses.jsonl"
    if params.policy.name == "random_label" or not todo:
        rows = [r.with_(source="pool", stage=k) for r in todo]
        report = {"stage": k, "requested": len(todo), "kept": len(rows), "teacher": Usage().as_dict()}
        write_rows(responses, [])
    else:
        info = DatasetInfo.load(layout.INFO)
        with open_client(params, len(todo)) as client:
            rows, report = annotate(todo, k, params, info, client)
            client.export_used(responses)
    write_rows(here.annotated, rows)
    write_json(here.report("annotate"), report)
    synthesized = read_json(here.report("synthesize"))["teacher"]
    write_json(here.ledger, add_usage(read_json(layout.StagePaths(previous).ledger), synthesized, report["teacher"]))
    print(f"{stage}: annotated {len(rows)} of {len(todo)} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
