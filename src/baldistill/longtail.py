"""The long-tail chart of a prepared pool: rows per domain, head to tail."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from .jsonl import atomic_open


def longtail_chart(counts: Mapping[str, int], out_png: str | Path, title: str, head_threshold: int) -> None:
    """Bar chart of pool rows per domain (log scale), largest first; the
    head/tail threshold used by evaluation is drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = sorted(counts, key=lambda d: (-counts[d], d))
    values = [counts[d] for d in domains]
    colors = ["tab:blue" if v > head_threshold else "tab:orange" for v in values]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(domains) + 2), 4))
    ax.bar(range(len(domains)), values, color=colors)
    ax.axhline(head_threshold, color="grey", linestyle="--", linewidth=1, label=f"head > {head_threshold} rows")
    ax.set_yscale("log")
    ax.set_xticks(range(len(domains)), domains, rotation=90, fontsize=7)
    ax.set_ylabel("pool rows")
    ax.set_title(f"{title}: {sum(values)} pool rows in {len(domains)} domains")
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_open(out_png, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
