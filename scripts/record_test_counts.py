"""Add the full test split's per-domain counts (info.test_counts) to run records made
before prepare recorded them, so that their reports read the long-tailed headline.

Each record's data set is prepared again from its registry package with the record's
test cap (`--cap`), and refused unless the prepared test rows are exactly the record's
rows (same ids): then the counts are those of the split its rows were drawn from.

    python scripts/record_test_counts.py r52 20 docs/results/runs/r52-*.json
    python scripts/record_test_counts.py mcqa 50 docs/results/runs/mcqa-*.json
"""

import sys

from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_json, write_json
from baldistill.core.params import Data
from baldistill.data import datasets


def main(dataset: str, cap: str, *paths: str) -> None:
    _, _, test, info = datasets.prepare(Data(dataset=dataset, test_per_domain=int(cap)))
    ids = {row.id for row in test}
    for path in paths:
        record = read_json(path)
        if {row["id"] for row in record["predictions"]} != ids:
            raise BaldistillError(f"{path}: predictions: its test rows are not {dataset} capped at {cap}")
        record["info"]["test_counts"] = info["test_counts"]
        write_json(path, record)
        print(f"{path}: {len(ids)} rows standing for {sum(info['test_counts'].values())}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
