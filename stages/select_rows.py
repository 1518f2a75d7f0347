"""select STAGE PREVIOUS: the pool rows this stage takes (the DVC step `select`;
not named select.py, which would shadow the standard library's module).

Head domains are chosen by the previous stage's student (IFD) or at random, as
the policy's spec says; tail domains give all their unused rows. Run it under
`accelerate launch` to share the scoring between GPUs, processes or machines
(params select.launch); the main process alone writes."""

import sys

from baldistill.core import layout
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.files import read_json, write_json
from baldistill.core.params import load_params, stage_index
from baldistill.core.rows import read_rows, write_rows
from baldistill.core.step import stage_command
from baldistill.student.parallel import Workers
from baldistill.student.selection import select


@stage_command("stage", "previous")
def main(stage: str, previous: str) -> None:
    workers = Workers.from_launcher()  # first: it joins the launcher's process group
    params = load_params()
    here, before = layout.StagePaths(stage), layout.StagePaths(previous)
    info = DatasetInfo.load(layout.INFO)
    taken = set(read_json(before.taken))
    rows, report = select(
        read_rows(layout.POOL),
        read_json(here.allocation),
        taken,
        stage_index(stage),
        params.select,
        params.student,
        params.policy.seed,
        info,
        str(before.adapter),
        workers,
    )
    if not workers.is_main:
        return  # every process holds the same rows; one writes them
    write_rows(here.selected, rows)
    write_json(here.taken, sorted(taken | {r.id for r in rows if r.source != "duplicate"}))
    write_json(here.report("select"), report)
    print(f"{stage}: selected {len(rows)} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
