"""Two run records, paired on their common test rows: record B minus record A,
with the report's paired bootstrap (95% intervals, resampled within domains),
whatever their policies. For a change that should not move the result (e.g.
train.share_prefix), run the same policy and seed both ways and compare.

    python bench/paired_records.py docs/results/v2/runs/r52v2-adaptive-seed0.json \
        docs/results/v2/runs/r52v2sp-adaptive-seed0.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from baldistill.report.comparison import KEYS, NAMES, compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="run record (the baseline)")
    parser.add_argument("b", help="run record compared with it")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    a, b = (json.loads(Path(path).read_text()) for path in (args.a, args.b))
    info = a["info"]
    [result] = compare(
        {"a": [a["predictions"]], "b": [b["predictions"]]},
        "a",
        task=info["task"],
        labels=info.get("labels") or [],
        pool_counts=a["counts"],
        head_threshold=info["head_threshold"],
        n_boot=args.n_boot,
        test_counts=info.get("test_counts"),
    )
    print(f"{b['summary']['experiment']} minus {a['summary']['experiment']} (points, paired 95% interval):")
    for key in KEYS:
        interval = result[key]
        low, high = (f"{x * 100:+.1f}" if x is not None else "n/a" for x in (interval.low, interval.high))
        print(f"  {NAMES.get(key, key)}: {interval.estimate * 100:+.1f} [{low}, {high}]")


if __name__ == "__main__":
    main()
