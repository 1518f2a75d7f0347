"""How long a student step takes to exit once its work is done, with and
without the garbage collector's objects frozen first (core.step.entry_point
freezes them at exit). Python's shutdown runs full collections over every
object the step's imports made (torch, transformers, peft, sympy): on
CPU-sized runs that is a second or more per step.

Each trial is a fresh interpreter that imports what a student step imports,
stamps the time, optionally registers gc.freeze() to run at exit (as
entry_point does), and exits; the time from the stamp to the process's end is
its exit time. The two variants alternate, so both see the same machine load.

    python bench/step_exit.py --trials 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP = """
import atexit, gc, sys, time
import torch, transformers.modeling_utils, peft
{freeze}
open(sys.argv[1], "w").write(repr(time.time()))
"""


def exit_seconds(freeze: bool) -> float:
    with tempfile.TemporaryDirectory() as folder:
        stamp = Path(folder) / "stamp"
        code = STEP.format(freeze="atexit.register(gc.freeze)" if freeze else "")
        subprocess.run([sys.executable, "-c", code, str(stamp)], check=True)
        ended = time.time()
        return ended - float(stamp.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    trials = parser.parse_args().trials
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(trials):
        for freeze in (False, True):
            times[freeze].append(exit_seconds(freeze))
    for freeze, seconds in times.items():
        label = "gc.freeze() first" if freeze else "plain exit"
        print(f"{label:18s} median {statistics.median(seconds):.2f} s  ({', '.join(f'{s:.2f}' for s in seconds)})")
    print(f"ratio plain/frozen: {statistics.median(times[False]) / statistics.median(times[True]):.1f}x")


if __name__ == "__main__":
    main()
