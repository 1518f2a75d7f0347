"""allocate STAGE PREVIOUS: this stage's per-domain quotas, and which domains the
pool meets and which need synthesis (policy feedback: from the previous student's
validation scores)."""

import sys

from baldistill.core import layout
from baldistill.core.allocation import allocate
from baldistill.core.feedback import read_scores
from baldistill.core.files import read_json, write_json
from baldistill.core.params import load_params, stage_index
from baldistill.core.step import stage_command


@stage_command("stage", "previous")
def main(stage: str, previous: str) -> None:
    params = load_params()
    here = layout.StagePaths(stage)
    counts = read_json(layout.COUNTS)
    state = read_json(layout.StagePaths(previous).allocation)
    validation = read_json(here.validation_scores)
    scores = read_scores(validation["domains"], str(here.validation_scores)) if validation["scored"] else None
    result = allocate(params.budget.total, params.policy, params.K, counts, state, stage_index(stage), scores)
    write_json(here.allocation, result)
    print(
        # Algorithm 1's per-stage split (not the data set's head/tail): a domain whose
        # unused pool rows meet its quota, or one that needs synthesis.
        f"{stage}: {result['teacher_calls']} teacher calls, {len(result['head'])} domains met from the pool, "
        f"{len(result['tail'])} needing synthesis, {sum(result['synthetic'].values())} rows to synthesize",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
