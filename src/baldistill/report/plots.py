"""Per-domain results as a CSV (for `dvc plots`) and as PNG charts, and the
long-tail chart of a prepared pool.

The charts follow the paper's Figure 2: domains on the x axis ranked from
head (most pool rows) to tail, so the effect of balancing on the tail is
visible at a glance. Figures are built with matplotlib's object API
(`Figure`), never pyplot, so no display, no global backend state, and no
figure leaks when many charts are drawn in one process.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from baldistill.core.files import atomic_open, write_csv
from baldistill.core.rows import head_to_tail, is_head

CSV_FIELDS = ("domain", "pool_rows", "share", "score", "n", "group")
HEAD_COLOR, TAIL_COLOR = "#3b6ea8", "#d9822b"


def domain_table(per_domain: Mapping[str, dict], head_threshold: int) -> list[dict]:
    """One record per domain, head to tail; share = the domain's part of the pool rows."""
    total = sum(v["pool_rows"] for v in per_domain.values()) or 1
    order = head_to_tail({domain: v["pool_rows"] for domain, v in per_domain.items()})
    ordered = [(domain, per_domain[domain]) for domain in order]
    return [
        {
            "domain": domain,
            "pool_rows": v["pool_rows"],
            "share": round(v["pool_rows"] / total, 6),
            "score": v["score"],
            "n": v["n"],
            "group": "head" if is_head(v["pool_rows"], head_threshold) else "tail",
        }
        for domain, v in ordered
    ]


def write_domain_csv(metrics: dict, head_threshold: int, path: str | Path) -> list[dict]:
    """Write the per-domain table of a metrics dict (metrics.score) as CSV, atomically."""
    table = domain_table(metrics["per_domain"], head_threshold)
    write_csv(path, CSV_FIELDS, table)
    return table


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _save(figure: Figure, out_png: str | Path) -> None:
    figure.tight_layout()
    with atomic_open(out_png, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)


def _figure(n_domains: int) -> Figure:
    return Figure(figsize=(max(6.0, 0.28 * n_domains + 2.5), 4.2))


def domain_chart(metrics: dict, head_threshold: int, out_png: str | Path, title: str = "") -> None:
    """Bar chart of per-domain scores, head to tail, head and tail in two colours
    with a dashed line between them; macro/micro (and head/tail means) in the title."""
    table = domain_table(metrics["per_domain"], head_threshold)
    figure = _figure(len(table))
    ax = figure.add_subplot()
    xs = range(len(table))
    colors = [HEAD_COLOR if r["group"] == "head" else TAIL_COLOR for r in table]
    ax.bar(xs, [100 * r["score"] for r in table], color=colors)
    _mark_split(ax, table)
    _domain_axis(ax, table)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 105)
    summary = (
        f"macro {_fmt(metrics['macro'])}  micro {_fmt(metrics['micro'])}  "
        f"head {_fmt(metrics['head'])}  tail {_fmt(metrics['tail'])}"
    )
    ax.set_title(f"{title}\n{summary}" if title else summary, fontsize=10)
    handles = [Patch(color=c, label=g) for c, g in ((HEAD_COLOR, "head"), (TAIL_COLOR, "tail"))]
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    _save(figure, out_png)


def comparison_chart(
    series: Mapping[str, Mapping[str, dict]], out_png: str | Path, head_threshold: int | None = None, title: str = ""
) -> None:
    """One line per policy over the domains, head to tail (the paper's Figure 2).

    `series` maps a policy name to its metrics' per_domain dict; where a
    domain's entry has a "spread" (sd over runs), mean ± sd is shaded. Domains are
    ordered by the largest pool count any series reports; a domain a series
    lacks is a gap in its line.
    """
    pools: dict[str, int] = {}
    for per_domain in series.values():
        for domain, v in per_domain.items():
            pools[domain] = max(pools.get(domain, 0), v["pool_rows"])
    merged = {d: {"pool_rows": p, "score": 0.0, "n": 0} for d, p in pools.items()}
    table = domain_table(merged, head_threshold if head_threshold is not None else -1)
    figure = _figure(len(table))
    ax = figure.add_subplot()
    for policy, per_domain in series.items():
        ys = [100 * per_domain[r["domain"]]["score"] if r["domain"] in per_domain else float("nan") for r in table]
        (line,) = ax.plot(range(len(table)), ys, marker="o", markersize=3, label=policy)
        spread = [100 * per_domain.get(r["domain"], {}).get("spread", float("nan")) for r in table]
        if any(s > 0 for s in spread):  # several runs: shade mean ± sd
            low = [y - s for y, s in zip(ys, spread)]
            high = [y + s for y, s in zip(ys, spread)]
            ax.fill_between(range(len(table)), low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    if head_threshold is not None:
        _mark_split(ax, table)
    _domain_axis(ax, table)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title or "per-domain score, head to tail", fontsize=10)
    ax.legend(fontsize=8)
    _save(figure, out_png)


def head_tail_chart(groups: list[dict], out_png: str | Path, title: str = "") -> None:
    """Head and tail scores side by side per policy (the paper's Figure 3): means
    over each policy's runs, with their sample sd as error bars where there are several."""
    figure = Figure(figsize=(max(4.0, 1.3 * len(groups) + 2), 3.6), layout="constrained")
    ax = figure.add_subplot()
    width, xs = 0.38, range(len(groups))
    for offset, group, color in ((-width / 2, "head", HEAD_COLOR), (width / 2, "tail", TAIL_COLOR)):
        means = [100 * (g[group] or 0.0) for g in groups]
        errors = [100 * (g.get(group + "_std") or 0.0) for g in groups]
        ax.bar([x + offset for x in xs], means, width, yerr=errors, capsize=3, color=color, label=group)
    ax.set_xticks(list(xs), [f"{g['policy']}\n({g['runs']} run{'s' if g['runs'] > 1 else ''})" for g in groups])
    ax.set_ylabel("mean per-domain score (%)")
    ax.set_title(title or "head vs tail", fontsize=10)
    ax.legend(fontsize=8)
    _save(figure, out_png)


def _mark_split(ax, table: list[dict]) -> None:
    """A dashed vertical line between the last head and the first tail domain."""
    heads = sum(r["group"] == "head" for r in table)
    if 0 < heads < len(table):
        ax.axvline(heads - 0.5, color="grey", linestyle="--", linewidth=1)
        ax.text(heads - 0.7, 104, "head", ha="right", va="top", fontsize=8, color="grey")
        ax.text(heads - 0.3, 104, "tail", ha="left", va="top", fontsize=8, color="grey")


def _domain_axis(ax, table: list[dict]) -> None:
    ax.set_xlim(-0.6, len(table) - 0.4)
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels([f"{r['domain']} ({r['pool_rows']})" for r in table], rotation=90, fontsize=7)
    ax.set_xlabel("domain (pool rows), head to tail")


def longtail_chart(counts: Mapping[str, int], out_png: str | Path, title: str, head_threshold: int) -> None:
    """Pool rows per domain (log scale), head to tail, head and tail in two
    colours, with the head/tail threshold that evaluation uses drawn as a line."""
    domains = head_to_tail(counts)
    values = [counts[d] for d in domains]
    figure = _figure(len(domains))
    ax = figure.add_subplot()
    ax.bar(
        range(len(domains)), values, color=[HEAD_COLOR if is_head(v, head_threshold) else TAIL_COLOR for v in values]
    )
    ax.axhline(head_threshold, color="grey", linestyle="--", linewidth=1, label=f"head > {head_threshold} rows")
    ax.set_yscale("log")
    ax.set_xlim(-0.6, len(domains) - 0.4)
    ax.set_xticks(range(len(domains)))
    ax.set_xticklabels(domains, rotation=90, fontsize=7)
    ax.set_ylabel("pool rows")
    ax.set_title(f"{title}: {sum(values)} pool rows in {len(domains)} domains", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    _save(figure, out_png)
