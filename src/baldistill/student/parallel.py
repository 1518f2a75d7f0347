"""Batched student inference shared by the processes a launcher started.

select and evaluate run under the same launcher as training (params
select.launch, evaluate.launch: e.g. `accelerate launch --multi_gpu
--num_processes 4`). Every process runs the whole step; only the model's
batched passes are shared out:

1. The caller makes the batches exactly as one process makes them
   (`generation.length_batches`: rows sorted by length, longest first).
   A batch's results depend on which rows share it (padding width, kernel
   shapes), so keeping the batches keeps every number bit for bit, at equal
   threads per process: torch's CPU kernels split some reductions by thread,
   so a 2-thread and a 1-thread process differ in the last digits (IFD about
   1e-7 relative on the tiny test student; tests/test_parallel_inference.py).
2. Whole batches are dealt to the processes in snake order (0, 1, ..., n-1,
   n-1, ..., 0, ...): each round hands out batches of similar length, and the
   process that got the longest one in a round gets the shortest in the next,
   so the processes finish together.
3. Each process runs its batches; the results are gathered to every process
   (accelerate's gather_object) and put back in input order. Every process
   then holds what one process would have computed, so the step's own logic
   (ranking, metrics) runs unchanged and the main process alone writes.

With one process (plain `python`) nothing is gathered and this is the plain loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from accelerate.utils import gather_object
from tqdm import tqdm

from baldistill.student.device import launcher_state

T = TypeVar("T")


def deal(batches: Sequence[Sequence[int]], count: int) -> list[list[int]]:
    """Which batches (by position) each of `count` processes runs, dealt in snake order."""
    hands: list[list[int]] = [[] for _ in range(count)]
    for position in range(len(batches)):
        turn, seat = divmod(position, count)
        hands[seat if turn % 2 == 0 else count - 1 - seat].append(position)
    return hands


def _round_sizes(batches: Sequence[Sequence[int]], count: int) -> list[int]:
    """Rows in each round of `count` batches: what the main bar advances by per batch of its own."""
    return [sum(len(b) for b in batches[start : start + count]) for start in range(0, len(batches), count)]


@dataclass(frozen=True)
class Workers:
    """This process's place among the processes sharing the work (index 0 is the main one)."""

    index: int = 0
    count: int = 1

    @classmethod
    def from_launcher(cls) -> Workers:
        """The processes `accelerate launch` (or torchrun) started; one process under plain python."""
        state = launcher_state()
        return cls(state.process_index, state.num_processes)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def map_batches(
        self,
        batches: Sequence[list[int]],
        run: Callable[[list[int]], list[T]],
        *,
        progress: bool = True,
        desc: str = "",
    ) -> list[T]:
        """run(batch) for every batch of row indices (together 0..n-1 once each), shared out
        as the module docstring says; one result per row, in row order, in every process.

        Only the main process shows a bar; it counts the rows of every process, taking
        each of its batches as one round of the deal (the others run batches of similar
        length in the meantime) and jumping to the end once all results are in."""
        rounds = _round_sizes(batches, self.count)
        total = sum(len(b) for b in batches)
        done: list[tuple[int, T]] = []
        show = progress and self.is_main
        with tqdm(total=total, desc=desc, unit="row", disable=not show, leave=False) as bar:
            for position in deal(batches, self.count)[self.index]:
                done.extend(zip(batches[position], run(batches[position])))
                bar.update(min(rounds[position // self.count], bar.total - bar.n))
            gathered = gather_object(done) if self.count > 1 else done
            bar.update(bar.total - bar.n)
        return _in_order(gathered, total)


ONE_PROCESS = Workers()  # a frozen value, the default of every batched pass: no launcher, nothing shared


def _in_order(pairs: Sequence[tuple[int, T]], n: int) -> list[T]:
    """The results of (row index, result) pairs as a list in row order; every row must have one."""
    out: dict[int, T] = dict(pairs)
    if len(pairs) != n or sorted(out) != list(range(n)):
        raise RuntimeError(f"gathered {len(pairs)} results for {len(out)} of {n} rows: a batch lost or repeated")
    return [out[i] for i in range(n)]
