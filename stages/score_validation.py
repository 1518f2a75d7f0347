"""score_validation STAGE PREVIOUS: the previous stage's student scored per
domain on the validation rows, which policy feedback allocates stage STAGE's
calls by (core/feedback.py).

DVC cannot leave a foreach step out by a param, so the step runs for every
policy and stage; where no score is needed (every other policy, and stage s0)
it writes the validation rows per domain, unscored, without loading a model
(the student's modules are imported only to score). Like evaluate, it runs
under evaluate.launch; the main process alone writes."""

import sys

from baldistill.core import layout
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.feedback import scores_record
from baldistill.core.files import read_json, write_json
from baldistill.core.params import load_params, stage_index
from baldistill.core.policies import policy_spec
from baldistill.core.rows import domain_counts, read_rows
from baldistill.core.step import stage_command


@stage_command("stage", "previous")
def main(stage: str, previous: str) -> None:
    params = load_params()
    rows, counts = read_rows(layout.VALIDATION), read_json(layout.COUNTS)
    info = DatasetInfo.load(layout.INFO)
    here = layout.StagePaths(stage)
    if not (policy_spec(params.policy.name).scores_validation and stage_index(stage) > 0):
        per_domain = dict.fromkeys(counts, 0) | domain_counts(rows)
        write_json(here.validation_scores, scores_record(stage, previous, None, per_domain))
        print(f"{stage}: no validation score needed ({info.name}, policy {params.policy.name})", file=sys.stderr)
        return
    from baldistill.student.parallel import Workers
    from baldistill.student.validation import score_by_domain

    workers = Workers.from_launcher()  # before the model: it joins the launcher's process group
    adapter = str(layout.StagePaths(previous).adapter)
    scores = score_by_domain(rows, params.evaluate, params.student, info, counts, adapter, workers)
    if not workers.is_main:
        return  # every process holds the same scores; one writes them
    record = scores_record(stage, previous, scores, {})
    write_json(here.validation_scores, record)
    print(f"{stage}: {previous}'s student on {len(rows)} validation rows: {record['pooled']}", file=sys.stderr)


if __name__ == "__main__":
    main()
