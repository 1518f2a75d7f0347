"""Each policy against a baseline, with paired bootstrap 95% intervals.

Every experiment scores the same fixed test rows, so the runs are aligned row
by row and the bootstrap (core.bootstrap) resamples rows jointly for both
sides; several runs of a policy (seeds) are pooled by resampling them too. A
difference is called significant only when its interval excludes 0, and the
report says as plainly which differences are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from baldistill.core.bootstrap import Interval, paired_bootstrap
from baldistill.core.errors import BaldistillError
from baldistill.core.rows import DEFAULT_HEAD_THRESHOLD

Predictions = Sequence[Mapping]  # one run's predictions.jsonl rows: {"id", "domain", "gold", "pred", ...}
# The headline (the test split's own distribution), its balanced reading, head and tail.
KEYS = ("macro", "micro", "balanced_macro", "head", "tail")
NAMES = {"balanced_macro": "balanced macro"}


def align(runs_by_policy: Mapping[str, Sequence[Predictions]]) -> tuple[list[str], list[str], dict[str, list[list]]]:
    """(golds, domains, {policy: [preds of each run]}) in one row order.

    Pairing needs every run to score the same test rows; a run that scored
    other rows (another test set, an older test draw) is refused by name.
    """
    first_policy, first_runs = next(iter(runs_by_policy.items()))
    reference = {row["id"]: row for row in first_runs[0]}
    ids = sorted(reference)
    preds: dict[str, list[list]] = {}
    for policy, runs in runs_by_policy.items():
        preds[policy] = []
        for index, run in enumerate(runs, start=1):
            by_id = {row["id"]: row for row in run}
            if set(by_id) != set(reference):
                raise BaldistillError(
                    f"run {index} of policy {policy!r} scored other test rows than {first_policy!r} "
                    f"({len(set(by_id) ^ set(reference))} rows differ); paired intervals need one fixed test set"
                )
            preds[policy].append([by_id[i]["pred"] for i in ids])
    return [reference[i]["gold"] for i in ids], [reference[i]["domain"] for i in ids], preds


def compare(
    runs_by_policy: Mapping[str, Sequence[Predictions]],
    baseline: str,
    *,
    task: str,
    labels: Sequence[str],
    pool_counts: dict[str, int],
    head_threshold: int,
    n_boot: int = 1000,
    seed: int = 0,
    test_counts: Mapping[str, int] | None = None,
) -> list[dict]:
    """One record per policy other than `baseline`: {"policy", "runs", key: Interval} for KEYS;
    `test_counts` (the full split's rows per domain) weight the headline keys to its distribution."""
    if baseline not in runs_by_policy:
        raise BaldistillError(f"baseline policy {baseline!r} is not among the experiments compared")
    golds, domains, preds = align(runs_by_policy)
    out = []
    for policy, runs in preds.items():
        if policy == baseline:
            continue
        intervals = paired_bootstrap(
            runs,
            preds[baseline],
            golds,
            domains,
            task=task,
            labels=labels,
            pool_counts=pool_counts,
            head_threshold=head_threshold,
            n_boot=n_boot,
            seed=seed,
            keys=KEYS,
            test_counts=test_counts,
        )
        out.append({"policy": policy, "runs": len(runs), **intervals})
    return out


def compare_pairs(
    runs_by_policy: Mapping[str, Sequence[Predictions]], pairs: Sequence[tuple[str, str]], **options
) -> list[dict]:
    """One record per (policy, baseline) pair, as compare gives it plus "baseline" and
    "baseline_runs": chosen readings such as the paper's Table 3 (balance against (N)),
    where a table against one baseline would bury them. `options` as compare's."""
    out = []
    for policy, baseline in pairs:
        missing = [p for p in (policy, baseline) if p not in runs_by_policy]
        if missing:
            raise BaldistillError(f"pair {policy}:{baseline}: no {missing[0]!r} run among the experiments compared")
        [record] = compare({baseline: runs_by_policy[baseline], policy: runs_by_policy[policy]}, baseline, **options)
        out.append({**record, "baseline": baseline, "baseline_runs": len(runs_by_policy[baseline])})
    return out


def pairs_markdown(records: Sequence[dict], n_test: int) -> str:
    """The chosen pairs' differences (policy minus baseline), one row each, and a sentence per pair."""
    lines = [
        f"Chosen pairs, on the same {n_test} test rows: the first policy minus the second, in points, "
        "paired bootstrap 95% interval; * = the interval excludes 0.",
        "",
        *_table_head(["policy", "against", "runs"]),
    ]
    for r in records:
        runs = f"{r['runs']} vs {r['baseline_runs']}"
        lines.append(f"| {r['policy']} | {r['baseline']} | {runs} | " + " | ".join(_cell(r[k]) for k in KEYS) + " |")
    lines.append("")
    lines += [_sentence(r, r["baseline"]) for r in records]
    return "\n".join(lines) + "\n"


def against_zeroshot(
    trained: Predictions, zeroshot: Predictions, info: dict, counts: dict[str, int], weighted: bool = True
) -> str:
    """One line for `baldistill summary`: the trained student minus the
    untrained (zero-shot) one on the same rows, macro and micro (on the test
    split's own distribution where `weighted` and info has its counts), with intervals."""
    [record] = compare(
        {"zeroshot": [zeroshot], "trained": [trained]},
        "zeroshot",
        task=info["task"],
        labels=info.get("labels") or [],
        pool_counts=counts,
        head_threshold=info.get("head_threshold", DEFAULT_HEAD_THRESHOLD),
        test_counts=info.get("test_counts") if weighted else None,
    )
    verdict = _verdict(record["macro"])
    return (
        f"trained vs zero-shot student: macro {_cell(record['macro'])}, micro {_cell(record['micro'])} "
        f"(points, paired bootstrap 95% interval over {len(trained)} rows): macro difference {verdict}"
    )


def _verdict(interval: Interval) -> str:
    if interval.excludes_zero:
        return "significant"
    if interval.low is None:
        return "no interval (a test row per domain leaves nothing to resample)"
    return "not significant (the interval includes 0)"


def _cell(interval: Interval) -> str:
    if interval.estimate is None:
        return "n/a"
    if interval.low is None or interval.high is None:
        return f"{100 * interval.estimate:+.1f} [n/a]"
    mark = " *" if interval.excludes_zero else ""
    return f"{100 * interval.estimate:+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]{mark}"


def comparison_markdown(records: Sequence[dict], baseline: str, baseline_runs: int, n_test: int) -> str:
    """The table of differences and one plain sentence per policy on what is significant."""
    lines = [
        f"Against {baseline} ({baseline_runs} run{'s' * (baseline_runs != 1)}), on the same {n_test} test rows: "
        "difference in points, paired bootstrap 95% interval; * = the interval excludes 0.",
        "",
        *_table_head(["policy", "runs"]),
    ]
    for record in records:
        lines.append(f"| {record['policy']} | {record['runs']} | " + " | ".join(_cell(record[k]) for k in KEYS) + " |")
    lines.append("")
    lines += [_sentence(record, baseline) for record in records]
    return "\n".join(lines) + "\n"


def _table_head(columns: list[str]) -> list[str]:
    """A differences table's header and rule: `columns`, then one Δ column per key."""
    names = columns + [f"Δ {NAMES.get(key, key)}" for key in KEYS]
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def _sentence(record: dict, baseline: str) -> str:
    """What is significant of one policy against `baseline`, and what is not, in words."""
    better = [k for k in KEYS if record[k].excludes_zero and record[k].estimate > 0]
    worse = [k for k in KEYS if record[k].excludes_zero and record[k].estimate < 0]
    if not better and not worse:
        return f"- {record['policy']}: no difference from {baseline} is significant."
    parts = [f"better on {_names(better)}"] if better else []
    parts += [f"worse on {_names(worse)}"] if worse else []
    rest = [k for k in KEYS if k not in better + worse]
    tail = f"; {_names(rest)}: not significant" if rest else ""
    return f"- {record['policy']}: significantly {' and '.join(parts)} than {baseline}{tail}."


def _names(keys: Sequence[str]) -> str:
    return ", ".join(NAMES.get(key, key) for key in keys)
