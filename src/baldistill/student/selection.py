"""The select step: which pool rows go to the teacher at stage k.

Given the stage's allocation (core.allocation decides the numbers), choose rows:

- every domain in `real` gets real[d] of its unused rows. When that is all of
  them (always so for tail domains) they are simply taken. Otherwise (head
  domains) the policy's spec (core.policies) chooses: by the IFD of the
  previous stage's student where `by_ifd` (BalDistill, Section 3.5), else
  uniformly at random (seeded by policy.seed, stage and domain).
- `open` rows (policy active, a Superfiltering-style ablation): the highest-IFD
  rows among all rows still unused after the per-domain picks, whatever
  their domain.
- `duplicated[d]` copies of rows of d already taken or selected (policy
  duplicate; ids "<id>#dup<i>", source "duplicate").

IFD ranking drops IFD >= 1 while enough other rows remain (ifd.rank).
Scoring uses the student prompt of student.encoding and the generation-logits
route of student.ifd: one greedy generation plus one forward pass.
Under a launcher (select.launch) every process runs this whole module alike
(the seeded draws included) and only the scoring passes are shared out
(student.parallel), so each process ends with the same rows and report.
With select.candidates_per_row = c, only c random candidates per needed row
are scored, which bounds the cost of a stage on a large pool.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.errors import BaldistillError
from baldistill.core.params import Select, Student
from baldistill.core.policies import policy_spec
from baldistill.core.rows import Row
from baldistill.prompts import load_prompts
from baldistill.student.device import student_device
from baldistill.student.encoding import build_prompt
from baldistill.student.ifd import IfdScore, is_preferred, pick_percentiles, rank, score_by_generation
from baldistill.student.model import load_student
from baldistill.student.parallel import ONE_PROCESS, Workers

OPEN = "*open*"  # the group key of active's pool-wide picks
ScoreRows = Callable[[list[Row]], tuple[list[IfdScore], int]]
_KEYS = ("policy", "quota", "real", "head", "tail", "open", "duplicated")


@dataclass
class _Scorer:
    """Loads the student on first use and scores rows; counts what it did."""

    cfg: Select
    student: Student
    info: DatasetInfo
    adapter_dir: str | None
    workers: Workers = ONE_PROCESS
    # rows -> (their IFD scores, tokens generated); None: the student's own (score_by_generation)
    score_rows: ScoreRows | None = None
    rows_scored: int = 0
    tokens_generated: int = 0
    scores: dict[str, IfdScore] = field(default_factory=dict)
    # ifd.pick_percentiles of every row picked by IFD: where it sits in its domain's unused rows
    percentiles: list[float] = field(default_factory=list)
    _loaded: tuple | None = field(default=None, init=False, repr=False)

    def __call__(self, rows: list[Row]) -> None:
        if not rows:
            return
        scores, tokens = (self.score_rows or self._by_generation)(rows)
        self.rows_scored += len(rows)
        self.tokens_generated += tokens
        self.scores.update((r.id, s) for r, s in zip(rows, scores))

    def _by_generation(self, rows: list[Row]) -> tuple[list[IfdScore], int]:
        if self._loaded is None:
            model, tokenizer = load_student(self.student.model, self.adapter_dir, device=student_device())
            self._loaded = (model, tokenizer, load_prompts(self.info.task, self.info.labels))
        model, tokenizer, templates = self._loaded
        cfg = self.cfg
        prompts = [build_prompt(tokenizer, templates, r.input, self.student.max_input_tokens) for r in rows]
        generated, scores = score_by_generation(
            model,
            tokenizer,
            prompts,
            cfg.max_new_tokens,
            cfg.batch_size,
            batch_tokens=cfg.batch_tokens,
            workers=self.workers,
        )
        return scores, sum(len(g.token_ids) for g in generated)


def _rng(seed: int, stage: int, group: str) -> random.Random:
    """One generator per (seed, stage, group): a domain's draw does not depend on other domains."""
    return random.Random(f"select:{seed}:{stage}:{group}")


def _check(allocation: dict) -> None:
    missing = [k for k in _KEYS if k not in allocation]
    if missing:
        raise BaldistillError(f"allocation: missing key '{missing[0]}'")
    policy_spec(allocation["policy"])


def _candidates(rows: list[Row], k: int, cfg: Select, rng: random.Random) -> list[Row]:
    """The rows to score for k picks: all, or a seeded sample of candidates_per_row * k."""
    per_row = cfg.candidates_per_row
    if per_row is None or per_row * k >= len(rows):
        return rows
    chosen = {id(r) for r in rng.sample(rows, per_row * k)}
    return [r for r in rows if id(r) in chosen]  # keep pool order: ties in IFD break the same way


def _top(cands: list[Row], k: int, scorer: _Scorer) -> list[Row]:
    """The k scored candidates `ifd.rank` picks (IFD >= 1 dropped while others remain)."""
    ifds = [scorer.scores[r.id].ifd for r in cands]
    scorer.percentiles += pick_percentiles(ifds, k)
    return [cands[i] for i in rank(ifds, k, scorer.cfg.drop_ifd_ge_1)]


def _domain_picks(unused, allocation, scorer, seed, stage) -> dict[str, list[Row]]:
    """real[d] rows per domain. Candidates of every IFD domain are scored in
    one call, so small domains still fill whole generation batches."""
    by_ifd = policy_spec(allocation["policy"]).by_ifd
    picks, pending = {}, {}
    for domain, k in allocation["real"].items():
        rows = [r for r in unused if r.domain == domain]
        if k > len(rows):
            raise BaldistillError(f"allocation: domain {domain!r} needs {k} pool rows but only {len(rows)} are unused")
        rng = _rng(seed, stage, domain)
        if k <= 0:
            picks[domain] = []
        elif k >= len(rows):
            picks[domain] = rows
        elif not by_ifd:
            picks[domain] = rng.sample(rows, k)
        else:
            pending[domain] = (_candidates(rows, k, scorer.cfg, rng), k)
    scorer([r for cands, _ in pending.values() for r in cands])
    picks.update((d, _top(cands, k, scorer)) for d, (cands, k) in pending.items())
    return {d: picks[d] for d in allocation["real"]}


def _open_picks(rest: list[Row], k: int, by_ifd: bool, scorer: _Scorer, rng) -> list[Row]:
    """k rows from the whole unused pool: top IFD ("active") or a uniform draw."""
    if k <= 0:
        return []
    if k >= len(rest):
        return list(rest)
    if not by_ifd:
        return rng.sample(rest, k)
    cands = _candidates(rest, k, scorer.cfg, rng)
    scorer(cands)
    return _top(cands, k, scorer)


def _duplicates(pool, taken_ids, picked, allocation, seed, stage) -> tuple[list[Row], dict[str, int]]:
    """duplicated[d] copies of d's taken-or-selected pool rows; returns (copies, shortfall per domain)."""
    copies, short = [], {}
    used_ids = set(taken_ids) | {r.id for r in picked}
    for domain, n in allocation["duplicated"].items():
        taken = [r for r in pool if r.domain == domain and r.id in taken_ids]
        sources = taken + [r for r in picked if r.domain == domain]
        if n > 0 and not sources:
            short[domain] = n
            continue
        rng = _rng(seed, stage, f"dup:{domain}")
        order = rng.sample(sources, len(sources)) if sources else []
        for i in range(n):
            original = order[i % len(order)]
            copies.append(_copy(original, used_ids, stage))
    return copies, short


def _copy(row: Row, used_ids: set[str], stage: int) -> Row:
    j = 0
    while f"{row.id}#dup{j}" in used_ids:
        j += 1
    new_id = f"{row.id}#dup{j}"
    used_ids.add(new_id)
    return row.with_(id=new_id, source="duplicate", stage=stage, meta={**row.meta, "duplicate_of": row.id})


def _mark(row: Row, stage: int, scorer: _Scorer) -> Row:
    score = scorer.scores.get(row.id)
    meta = {**row.meta, **score.as_meta()} if score else dict(row.meta)
    return row.with_(source="pool", stage=stage, meta=meta)


def _report(allocation, stage, scorer, chosen, copies, short, seconds, adapter_dir) -> dict:
    drop = scorer.cfg.drop_ifd_ge_1
    selected: dict[str, int] = {}
    for row in chosen:
        selected[row.domain] = selected.get(row.domain, 0) + 1
    scored = list(scorer.scores.values())
    picked_scores = [scorer.scores[r.id] for r in chosen if r.id in scorer.scores]
    return {
        "policy": allocation["policy"],
        "stage": stage,
        "student": scorer.student.model,
        "adapter": adapter_dir,
        "rows_scored": scorer.rows_scored,
        "rows_selected": len(chosen),
        "selected_per_domain": selected,
        "duplicates_per_domain": {d: sum(r.domain == d for r in copies) for d in allocation["duplicated"]},
        "duplicates_missing": short,
        "ifd_ge_1": sum(s.ifd >= 1.0 for s in scored),
        "ifd_undefined": sum(math.isnan(s.ifd) for s in scored),
        "selected_not_preferred": sum(not is_preferred(s.ifd, drop) for s in picked_scores),
        "ifd_percentile": _percentile_summary(scorer),
        "tokens_generated": scorer.tokens_generated,
        "processes": scorer.workers.count,
        "seconds": round(seconds, 3),
    }


def _percentile_summary(scorer: _Scorer) -> dict | None:
    """Mean expected IFD percentile of the IFD picks within their domains' unused
    rows (random selection: 0.5); None when nothing was picked by IFD."""
    got = scorer.percentiles
    if not got:
        return None
    per_row = scorer.cfg.candidates_per_row
    return {
        "mean": round(sum(got) / len(got), 4),
        "rows": len(got),
        "candidates_per_row": per_row,
        "how": "r/(n+1) of each pick among its domain's n scored candidates (unbiased for a uniform sample)",
    }


def select(
    pool: list[Row],
    allocation: dict,
    taken_ids: set[str],
    stage: int,
    cfg: Select,
    student: Student,
    seed: int,
    info: DatasetInfo,
    adapter_dir: str | None,
    workers: Workers = ONE_PROCESS,
    score_rows: ScoreRows | None = None,
) -> tuple[list[Row], dict]:
    """Rows for the teacher at `stage` (marked source/stage, IFD in meta when
    scored) plus duplicates, and a report of what the step did; the same in
    every process of `workers`, which share the scoring. `score_rows` scores
    rows in place of the student with `adapter_dir` (None: the student)."""
    start = time.perf_counter()
    _check(allocation)
    scorer = _Scorer(cfg, student, info, adapter_dir, workers, score_rows)
    unused = [r for r in pool if r.id not in taken_ids]
    picks = _domain_picks(unused, allocation, scorer, seed, stage)
    chosen = [r for rows in picks.values() for r in rows]
    if allocation["open"]:
        picked_ids = {r.id for r in chosen}
        rest = [r for r in unused if r.id not in picked_ids]
        by_ifd = policy_spec(allocation["policy"]).by_ifd
        chosen += _open_picks(rest, int(allocation["open"]), by_ifd, scorer, _rng(seed, stage, OPEN))
    marked = [_mark(r, stage, scorer) for r in chosen]
    copies, short = _duplicates(pool, taken_ids, chosen, allocation, seed, stage)
    report = _report(allocation, stage, scorer, chosen, copies, short, time.perf_counter() - start, adapter_dir)
    return marked + copies, report
