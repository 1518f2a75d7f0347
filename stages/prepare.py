"""prepare: the long-tailed pool, the capped test set, per-domain counts, the
long-tail chart, and the empty `start` state that stage s0 follows."""

import sys

from baldistill.core import layout
from baldistill.core.allocation import start_state
from baldistill.core.files import write_json
from baldistill.core.params import START, load_params
from baldistill.core.rows import domain_counts, write_rows
from baldistill.core.step import entry_point
from baldistill.data import datasets
from baldistill.report.plots import longtail_chart
from baldistill.teacher.usage import empty_ledger


@entry_point
def main() -> None:
    params = load_params()
    pool, validation, test, info = datasets.prepare(params.data)
    counts = domain_counts(pool)
    write_rows(layout.POOL, pool)
    write_rows(layout.TEST, test)
    write_rows(layout.VALIDATION, validation)
    write_json(layout.COUNTS, counts)
    write_json(layout.INFO, info)
    longtail_chart(counts, layout.LONGTAIL_PNG, info["name"], info["head_threshold"])

    start = layout.StagePaths(START)
    write_json(start.allocation, start_state(counts))
    write_json(start.taken, [])
    write_json(start.ledger, empty_ledger())
    write_rows(start.train_set, [])
    start.adapter.mkdir(parents=True, exist_ok=True)
    (start.adapter / "BASE").write_text("no adapter: the base student\n")
    print(
        f"{info['name']}: {len(pool)} pool rows in {len(counts)} domains, {len(validation)} validation rows "
        f"held out of it, {len(test)} test rows",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
