"""Paired bootstrap confidence interval of a policy's gain over a baseline.

Every policy is scored on the same fixed test rows, so the two policies' errors
are correlated: a hard row is hard for both. Resampling the test rows jointly
for both sides (paired) cancels that shared noise and gives a much tighter
interval for the difference than two independent intervals would. Rows are
resampled within their domain (as many draws as the domain has rows): the test
set was drawn per domain, and each replicate keeps its per-domain sizes, so the
stratified weights that carry the scores to the full split's distribution
(metrics.stratified_weights, from `test_counts`) stay the same in every replicate.
With one row in every domain nothing is left to resample: the interval is undefined.

With several training seeds per policy, the seed is a second source of noise.
Each replicate then also resamples the runs of each side (as many draws, with
replacement, as the side has runs) and averages their metric on the same
resampled rows: a two-level bootstrap. With one run per side it is the plain
paired bootstrap, and the row indices drawn for a given `seed` do not depend
on how many runs there are (rows and runs come from separate random streams).

Every replicate is scored by metrics.score, so the metric (F1 with its
NO_ANSWER rule, accuracy, word F1, head/tail split) is defined in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from baldistill.core.dataset_info import check_task
from baldistill.core.errors import BaldistillError
from baldistill.core.metrics import score

KEYS = ("macro", "micro", "head", "tail")
# The balanced readings of the same rows (metrics.score), available beside the headline keys.
ALL_KEYS = (*KEYS, "balanced_macro", "balanced_micro")

Run = Sequence[str | None]


@dataclass(frozen=True)
class Interval:
    """Policy minus baseline for one metric.

    `estimate` is the difference of the means over runs on the full test set;
    `low`/`high` the percentile interval over the replicates; `n_boot` the
    number of replicates the interval was computed from (replicates where the
    metric was undefined for either side are skipped, so it can be below the
    number requested). Any of the three values is None when undefined.
    """

    estimate: float | None
    low: float | None
    high: float | None
    n_boot: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies strictly on one side of 0 (a significant difference)."""
        if self.low is None or self.high is None:
            return False
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    policy_runs: Sequence[Run],
    baseline_runs: Sequence[Run],
    golds: Sequence[str],
    domains: Sequence[str],
    *,
    task: str,
    labels: Sequence[str],
    pool_counts: dict[str, int],
    head_threshold: int,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    keys: Sequence[str] = KEYS,
    test_counts: Mapping[str, int] | None = None,
) -> dict[str, Interval]:
    """Interval of (policy minus baseline) for each metric in `keys`.

    Each run is the predictions of one training seed, aligned with `golds` and
    `domains`. `task`, `labels`, `pool_counts`, `head_threshold` and
    `test_counts` (the full test split's rows per domain) are passed to
    metrics.score. A replicate where a key is None (e.g. no tail domain was
    drawn) is skipped for that key; if fewer than half of `n_boot` replicates
    remain, low and high are None. The result depends only on the inputs and
    `seed`.
    """
    keys = tuple(keys)
    _validate(policy_runs, baseline_runs, golds, domains, task, n_boot, seed, confidence, keys)
    golds_arr = np.asarray(list(golds), dtype=object)
    domains_arr = np.asarray(list(domains), dtype=object)
    policy = [np.asarray(list(run), dtype=object) for run in policy_runs]
    baseline = [np.asarray(list(run), dtype=object) for run in baseline_runs]
    n = len(golds_arr)

    def metrics_on(run: np.ndarray, rows: np.ndarray) -> dict[str, float | None]:
        result = score(
            task,
            golds_arr[rows].tolist(),
            run[rows].tolist(),
            domains_arr[rows].tolist(),
            labels,
            pool_counts,
            head_threshold,
            test_counts=test_counts,
        )
        return {key: _defined(result[key]) for key in keys}

    def side_mean(runs: list[np.ndarray], picks: np.ndarray, rows: np.ndarray) -> dict[str, float | None]:
        # A run drawn twice is scored once and weighted by its count: scoring dominates the cost.
        chosen, counts = np.unique(picks, return_counts=True)
        scored = [(metrics_on(runs[i], rows), c) for i, c in zip(chosen.tolist(), counts.tolist())]
        out: dict[str, float | None] = {}
        for key in keys:
            values = [(m[key], c) for m, c in scored]
            # Within one replicate all runs share the rows, so a key is None for all or for none.
            out[key] = None if any(v is None for v, _ in values) else sum(v * c for v, c in values) / len(picks)
        return out

    everything = np.arange(n)
    full_policy = side_mean(policy, np.arange(len(policy)), everything)
    full_baseline = side_mean(baseline, np.arange(len(baseline)), everything)

    # Separate streams: the rows drawn do not depend on how many runs each side has.
    row_rng, policy_rng, baseline_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    diffs: dict[str, list[float]] = {key: [] for key in keys}
    strata = [np.flatnonzero(domains_arr == d) for d in dict.fromkeys(domains_arr.tolist())]
    # One row per domain (the smoke preset): resampled within their domains the rows
    # never vary, and a zero-width interval would call any difference significant.
    if all(len(members) == 1 for members in strata):
        return {key: Interval(_difference(full_policy[key], full_baseline[key]), None, None, 0) for key in keys}
    for _ in range(n_boot):
        rows = np.concatenate([members[row_rng.integers(0, len(members), size=len(members))] for members in strata])
        p = side_mean(policy, policy_rng.integers(0, len(policy), size=len(policy)), rows)
        b = side_mean(baseline, baseline_rng.integers(0, len(baseline), size=len(baseline)), rows)
        for key in keys:
            if p[key] is not None and b[key] is not None:
                diffs[key].append(p[key] - b[key])

    alpha = 1.0 - confidence
    out: dict[str, Interval] = {}
    for key in keys:
        estimate = _difference(full_policy[key], full_baseline[key])
        values = diffs[key]
        # Too few defined replicates would give an interval of a different, selected population.
        if not values or len(values) < n_boot / 2:
            out[key] = Interval(estimate, None, None, len(values))
            continue
        low, high = np.quantile(np.asarray(values), [alpha / 2, 1 - alpha / 2])
        out[key] = Interval(estimate, float(low), float(high), len(values))
    return out


def _difference(policy: float | None, baseline: float | None) -> float | None:
    return None if policy is None or baseline is None else policy - baseline


def _defined(value: float | None) -> float | None:
    """None for a metric that is undefined (None or NaN), else the value as a float."""
    if value is None or math.isnan(value):
        return None
    return float(value)


def _validate(policy_runs, baseline_runs, golds, domains, task, n_boot, seed, confidence, keys) -> None:
    check_task(task)
    if len(golds) != len(domains):
        raise BaldistillError(f"bootstrap: {len(golds)} golds but {len(domains)} domains")
    if not len(golds):
        raise BaldistillError("bootstrap: no test rows")
    for side, runs in (("policy", policy_runs), ("baseline", baseline_runs)):
        if not len(runs):
            raise BaldistillError(f"bootstrap: {side} has no runs; need at least one")
        for i, run in enumerate(runs):
            # A bare string is a sequence too; it is a caller passing one run instead of a list of runs.
            if isinstance(run, str):
                raise BaldistillError(f"bootstrap: {side} run {i} is a string; pass a list of runs (lists of answers)")
            if len(run) != len(golds):
                raise BaldistillError(
                    f"bootstrap: {side} run {i} has {len(run)} predictions, expected {len(golds)} (one per test row)"
                )
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise BaldistillError(f"bootstrap: n_boot must be an integer >= 1, got {n_boot!r}")
    # numpy's SeedSequence takes non-negative integers only.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BaldistillError(f"bootstrap: seed must be an integer >= 0, got {seed!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise BaldistillError(f"bootstrap: confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    unknown = [key for key in keys if key not in ALL_KEYS]
    if unknown or not keys:
        raise BaldistillError(f"bootstrap: keys must be among {', '.join(ALL_KEYS)}, got {list(keys)!r}")
