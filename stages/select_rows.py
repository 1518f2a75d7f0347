"""select STAGE PREVIOUS (the DVC step `select`; not named select.py, which would shadow the stdlib module): the pool rows this stage takes. Head domains are
chosen by the previous stage's student (IFD) or at random, per the policy;
tail domains give all their unused rows."""

import sys

from baldistill import layout
from baldistill.dataset_info import DatasetInfo
from baldistill.jsonl import read_json, write_json
from baldistill.params import load_params, stage_index
from baldistill.rows import read_rows, write_rows
from baldistill.selection import select
from baldistill.stage import stage_command


@stage_command("stage", "previous")
def main(stage: str, previous: str) -> None:
    params = load_params()
    here, before = layout.StagePaths(stage), layout.StagePaths(previous)
    info = DatasetInfo.load(layout.INFO)
    taken = set(read_json(before.taken))
    rows, report = select(read_rows(layout.POOL), read_json(here.allocation), taken, stage_index(stage),
                          params, info.task, str(before.adapter))
    write_rows(here.selected, rows)
    write_json(here.taken, sorted(taken | {r.id for r in rows if r.source != "duplicate"}))
    write_json(here.report("select"), report)
    print(f"{stage}: selected {len(rows)} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
