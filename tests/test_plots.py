"""Per-domain CSV and PNG charts."""

from __future__ import annotations

import csv

from baldistill.core.metrics import score
from baldistill.report.plots import comparison_chart, domain_chart, domain_table, write_domain_csv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
POOL = {"earn": 300, "acq": 100, "gold": 20, "crude": 10, "tin": 1}


def make_metrics(preds: list[str | None]) -> dict:
    golds = ["earn", "earn", "acq", "gold", "crude", "tin"]
    return score("classification", golds, preds, golds, list(POOL), POOL, 50)


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000  # axes, bars and labels were drawn


def test_domain_table_orders_head_to_tail_with_shares():
    table = domain_table(make_metrics(["earn", "acq", "acq", "gold", None, "tin"])["per_domain"], 50)
    assert [r["domain"] for r in table] == ["earn", "acq", "gold", "crude", "tin"]
    assert [r["group"] for r in table] == ["head", "head", "tail", "tail", "tail"]
    assert abs(sum(r["share"] for r in table) - 1) < 1e-5
    assert table[0]["share"] == round(300 / 431, 6)


def test_write_domain_csv(tmp_path):
    metrics = make_metrics(["earn", "earn", "acq", None, "crude", "earn"])
    path = tmp_path / "plots" / "per_domain.csv"
    write_domain_csv(metrics, 50, path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["domain", "pool_rows", "share", "score", "n", "group"]
    assert [r["domain"] for r in rows] == list(metrics["per_domain"])
    assert float(rows[0]["score"]) == metrics["per_domain"]["earn"]["score"]
    assert rows[-1]["group"] == "tail" and rows[0]["n"] == "2"


def test_domain_chart_is_a_png(tmp_path):
    out = tmp_path / "per_domain.png"
    domain_chart(make_metrics(["earn", "acq", "acq", "gold", None, "tin"]), 50, out, title="adaptive s2")
    assert_png(out)


def test_domain_chart_with_only_head_domains(tmp_path):
    metrics = score("math", ["1", "2"], ["1", "3"], ["alg", "geo"], [], {"alg": 90, "geo": 80}, 50)
    domain_chart(metrics, 50, tmp_path / "c.png")
    assert_png(tmp_path / "c.png")


def test_comparison_chart_is_a_png(tmp_path):
    series = {
        "random": make_metrics(["earn", "earn", "acq", None, None, None])["per_domain"],
        "adaptive": make_metrics(["earn", "acq", "acq", "gold", "crude", "tin"])["per_domain"],
    }
    series["partial"] = {k: v for k, v in series["random"].items() if k != "tin"}  # a missing domain is a gap
    out = tmp_path / "compare.png"
    comparison_chart(series, out, head_threshold=50, title="R52")
    assert_png(out)


def test_head_tail_chart_draws_one_pair_of_bars_per_policy(tmp_path):
    from baldistill.report.plots import head_tail_chart

    groups = [
        {"policy": "random", "runs": 3, "head": 0.40, "head_std": 0.02, "tail": 0.30, "tail_std": 0.05},
        {"policy": "adaptive", "runs": 1, "head": 0.42, "head_std": 0.0, "tail": None, "tail_std": None},
    ]
    out = tmp_path / "head_tail.png"
    head_tail_chart(groups, out)
    assert out.read_bytes()[:4] == b"\x89PNG"
