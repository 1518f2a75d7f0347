from __future__ import annotations

import math

import pytest

from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.errors import BaldistillError
from baldistill.core.params import Params
from baldistill.core.rows import Row
from baldistill.prompts import load_prompts
from baldistill.student import selection
from baldistill.student.encoding import build_prompt
from baldistill.student.ifd import IfdScore, rank, score_by_generation
from baldistill.student.model import load_student

LABELS = ["earn", "crude", "tin"]
INFO = DatasetInfo("tiny", "classification", LABELS)
WORDS = "oil gold wheat rates bank profit shares crude cocoa coffee tin zinc grain ship trade".split()


def make_pool() -> list[Row]:
    """Head domain 'earn' (12 rows), 'crude' (6), tail 'tin' (2); inputs of varied length."""
    rows = []
    for domain, n in (("earn", 12), ("crude", 6), ("tin", 2)):
        for i in range(n):
            text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + 2 * i))
            rows.append(Row(id=f"{domain}-{i}", domain=domain, input=text, label=domain))
    return rows


def make_params(model_dir: str, **select) -> Params:
    return Params.model_validate(
        {
            "budget": {"total": 20},
            "stages": {"s0": "start", "s1": "s0"},
            "student": {"model": model_dir, "max_input_tokens": 32},
            "select": {"max_new_tokens": 6, "batch_size": 8, "candidates_per_row": None, **select},
        }
    )


def allocation(policy: str, real: dict, open_: int = 0, duplicated: dict | None = None) -> dict:
    return {
        "policy": policy,
        "quota": dict(real),
        "real": real,
        "head": [d for d in real if d != "tin"],
        "tail": [d for d in real if d == "tin"],
        "open": open_,
        "duplicated": duplicated or {},
    }


def run(params, alloc, taken=(), stage=1, adapter=None, score_rows=None):
    return selection.select(
        make_pool(),
        alloc,
        set(taken),
        stage,
        params.select,
        params.student,
        params.policy.seed,
        INFO,
        adapter,
        score_rows=score_rows,
    )


def true_ifds(model_dir: str, params: Params, rows: list[Row]) -> list[float]:
    model, tokenizer = load_student(model_dir)
    templates = load_prompts("classification", LABELS)
    prompts = [build_prompt(tokenizer, templates, r.input, params.student.max_input_tokens) for r in rows]
    _, scores = score_by_generation(model, tokenizer, prompts, params.select.max_new_tokens, 3, progress=False)
    return [s.ifd for s in scores]


def test_tail_takes_every_unused_row(tiny_student_dir):
    params = make_params(tiny_student_dir)
    rows, report = run(params, allocation("adaptive", {"tin": 1}), taken={"tin-0"})
    assert [r.id for r in rows] == ["tin-1"]
    assert rows[0].source == "pool" and rows[0].stage == 1 and "ifd" not in rows[0].meta
    assert report["rows_scored"] == 0 and report["selected_per_domain"] == {"tin": 1}


def test_allocation_beyond_the_pool_is_an_error(tiny_student_dir):
    with pytest.raises(BaldistillError, match="tin"):
        run(make_params(tiny_student_dir), allocation("random", {"tin": 3}))
    with pytest.raises(BaldistillError, match="missing key 'head'"):
        run(make_params(tiny_student_dir), {"policy": "random", "quota": {}, "real": {}})


@pytest.mark.parametrize("policy", ["random", "random_label", "balance", "duplicate"])
def test_random_policies_draw_uniformly_and_reproducibly(tiny_student_dir, policy):
    params = make_params(tiny_student_dir)
    alloc = allocation(policy, {"earn": 4, "tin": 2})
    taken = {"earn-0", "earn-1"}
    rows, report = run(params, alloc, taken)
    again, _ = run(params, alloc, taken)
    other_stage, _ = run(params, alloc, taken, stage=2)
    earn = [r.id for r in rows if r.domain == "earn"]
    assert len(earn) == 4 and not set(earn) & taken and len(set(earn)) == 4
    assert [r.id for r in rows] == [r.id for r in again]
    assert earn != [r.id for r in other_stage if r.domain == "earn"]
    assert report["rows_scored"] == 0 and report["tokens_generated"] == 0


@pytest.mark.parametrize("policy", ["naive", "adaptive"])
def test_ifd_policies_take_the_top_ifd_rows(tiny_student_dir, policy):
    params = make_params(tiny_student_dir)
    rows, report = run(params, allocation(policy, {"crude": 3, "tin": 2}), taken={"crude-5"})
    crude_pool = [r for r in make_pool() if r.domain == "crude" and r.id != "crude-5"]
    ifds = true_ifds(tiny_student_dir, params, crude_pool)
    expected = [crude_pool[i].id for i in rank(ifds, 3, drop_ifd_ge_1=True)]
    crude = [r for r in rows if r.domain == "crude"]
    assert [r.id for r in crude] == expected
    by_id = {p.id: v for p, v in zip(crude_pool, ifds)}
    for row in crude:
        assert row.meta["ifd"] == pytest.approx(by_id[row.id], rel=1e-4)
        assert {"ppl_cond", "ppl_direct"} <= row.meta.keys()
    assert report["rows_scored"] == 5 and report["tokens_generated"] > 0
    assert report["ifd_ge_1"] == sum(v >= 1 for v in ifds)
    assert report["selected_per_domain"] == {"crude": 3, "tin": 2}
    # The top 3 of 5 scored rows (tin is taken whole, unscored): 5/6, 4/6, 3/6.
    assert report["ifd_percentile"]["rows"] == 3
    assert report["ifd_percentile"]["mean"] == pytest.approx((5 + 4 + 3) / 3 / 6, abs=1e-4)


def test_zero_quota_domains_cost_nothing(tiny_student_dir):
    rows, report = run(make_params(tiny_student_dir), allocation("adaptive", {"earn": 0, "crude": 0, "tin": 2}))
    assert [r.domain for r in rows] == ["tin", "tin"] and report["rows_scored"] == 0
    assert report["ifd_percentile"] is None


def test_base_marker_dir_scores_like_no_adapter(tiny_student_dir, tmp_path):
    (tmp_path / "BASE").write_text("")
    params = make_params(tiny_student_dir)
    alloc = allocation("naive", {"earn": 2})
    a, _ = run(params, alloc)
    b, _ = run(params, alloc, adapter=str(tmp_path))
    assert [(r.id, r.meta) for r in a] == [(r.id, r.meta) for r in b]


def test_candidates_per_row_bounds_scoring(tiny_student_dir):
    params = make_params(tiny_student_dir, candidates_per_row=2)
    rows, report = run(params, allocation("adaptive", {"earn": 2}))
    assert report["rows_scored"] == 4 and len(rows) == 2
    assert report["ifd_percentile"]["mean"] == pytest.approx((4 + 3) / 2 / 5, abs=1e-4)
    assert all(math.isfinite(r.meta["ifd"]) or r.meta["ifd"] is None for r in rows)


def test_active_takes_the_highest_ifd_over_all_domains(tiny_student_dir):
    params = make_params(tiny_student_dir)
    taken = {f"earn-{i}" for i in range(8)}
    rows, report = run(params, allocation("active", {}, open_=4), taken)
    unused = [r for r in make_pool() if r.id not in taken]
    ifds = true_ifds(tiny_student_dir, params, unused)
    assert [r.id for r in rows] == [unused[i].id for i in rank(ifds, 4)]
    assert report["rows_scored"] == len(unused)


def fixed_scores(values: dict[str, float]):
    """Scores rows by `values` (IFD per row id) in place of the student."""

    def score_rows(rows):
        return [IfdScore(values[r.id], 1.0, 1.0) for r in rows], 0

    return score_rows


def test_ifd_ge_1_is_dropped_then_used_to_fill(tiny_student_dir):
    values = {f"crude-{i}": v for i, v in enumerate([1.5, 0.2, 0.9, 1.1, math.nan, 0.5])}
    scores = fixed_scores(values)
    params = make_params(tiny_student_dir)
    rows, report = run(params, allocation("naive", {"crude": 2}), score_rows=scores)
    assert [r.id for r in rows] == ["crude-2", "crude-5"]
    rows, report = run(params, allocation("naive", {"crude": 5}), score_rows=scores)
    assert [r.id for r in rows] == ["crude-2", "crude-5", "crude-1", "crude-3", "crude-0"]
    assert report["ifd_ge_1"] == 2 and report["ifd_undefined"] == 1 and report["selected_not_preferred"] == 2
    kept, _ = run(
        make_params(tiny_student_dir, drop_ifd_ge_1=False), allocation("naive", {"crude": 2}), score_rows=scores
    )
    assert [r.id for r in kept] == ["crude-0", "crude-3"]


def test_duplicate_adds_copies_of_taken_or_selected_rows(tiny_student_dir):
    params = make_params(tiny_student_dir)
    taken = {"tin-0", "tin-0#dup0"}
    alloc = allocation("duplicate", {"tin": 1}, duplicated={"tin": 3, "crude": 1})
    rows, report = run(params, alloc, taken)
    copies = [r for r in rows if r.source == "duplicate"]
    assert [r.id for r in rows if r.source == "pool"] == ["tin-1"]
    assert len(copies) == 3 and all(r.domain == "tin" and r.stage == 1 for r in copies)
    assert {r.meta["duplicate_of"] for r in copies} == {"tin-0", "tin-1"}
    ids = [r.id for r in rows]
    assert len(set(ids)) == len(ids) and not set(ids) & taken
    assert all("#dup" in r.id for r in copies)
    assert report["duplicates_missing"] == {"crude": 1} and report["duplicates_per_domain"]["tin"] == 3


@pytest.mark.slow
def test_real_smollm2_converts_generates_and_scores(tmp_path, monkeypatch):
    """The default student end to end: fresh GGUF -> fp32 conversion, greedy
    generation, IFD by the generation-logits route == the two-pass route, and a select."""
    from baldistill.core import assets
    from baldistill.student.encoding import encode_prompt
    from baldistill.student.ifd import score_two_pass
    from baldistill.student.model import resolve_model_dir

    try:
        gguf = assets.path_of("smollm2-135m-instruct")
    except BaldistillError as exc:
        pytest.skip(str(exc))
    (tmp_path / "assets").mkdir()
    for src in (gguf, gguf.with_suffix(".sha256")):
        (tmp_path / "assets" / src.name).symlink_to(src)
    monkeypatch.setenv("BALDISTILL_HOME", str(tmp_path))
    folder = resolve_model_dir("smollm2-135m-instruct")
    assert [p.name for p in (tmp_path / "models").iterdir()] == [assets.ASSETS["smollm2-135m-instruct"].sha256]

    params = make_params("smollm2-135m-instruct", max_new_tokens=12)
    model, tokenizer = load_student(folder)
    templates = load_prompts("classification", LABELS)
    pool = [r for r in make_pool() if r.domain == "crude"][:4]
    prompts = [build_prompt(tokenizer, templates, r.input, 32) for r in pool]
    generated, scores = score_by_generation(model, tokenizer, prompts, 12, 4, progress=False)
    assert all(g.text.strip() for g in generated)
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    two_pass = score_two_pass(model, tokenizer, prompt_ids, [g.token_ids for g in generated], 4)
    for a, b in zip(scores, two_pass):
        assert a.ifd == pytest.approx(b.ifd, rel=1e-4) and math.isfinite(a.ifd)
    rows, report = selection.select(
        pool,
        allocation("naive", {"crude": 2}),
        set(),
        1,
        params.select,
        params.student,
        params.policy.seed,
        INFO,
        None,
    )
    assert len(rows) == 2 and report["rows_scored"] == 4 and all("ifd" in r.meta for r in rows)
