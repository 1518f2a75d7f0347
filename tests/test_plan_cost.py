"""Tokens and dollars in `baldistill plan`: the arithmetic (property tests), the
token counts against what the steps really send and what the real local
server reports, and the command's new fields."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import urllib.request

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from baldistill.cli import seeded_draw
from baldistill.core import assets
from baldistill.core.allocation import allocate, make_plan, start_state
from baldistill.core.dataset_info import DatasetInfo
from baldistill.core.errors import BaldistillError
from baldistill.core.files import write_json
from baldistill.core.params import Params
from baldistill.core.rows import Row, domain_counts, write_rows
from baldistill.plan.costs import CostSettings, plan_costs
from baldistill.plan.spend import (
    NO_COST,
    Cached,
    Price,
    Tokens,
    annotate_cached,
    annotate_tokens,
    annotated_before,
    chosen_cached,
    chosen_tokens,
    known_cached,
    mean_completion,
    step_cost,
    synthesis_tokens,
    total_cost,
    unknown_cached,
    usd,
)
from baldistill.prompts import load_prompts
from baldistill.student.selection import select
from baldistill.teacher.annotation import annotate, annotation_request
from baldistill.teacher.cache import RequestCache, request_key
from baldistill.teacher.client import Response
from baldistill.teacher.synthesis import synthesize
from baldistill.teacher.tokens import PER_MESSAGE, PER_REPLY, ApproxCounter, GgufCounter, approx_tokens
from baldistill.teacher.usage import Usage

counts_lists = st.lists(st.integers(0, 5000), min_size=1, max_size=12)
prices = st.floats(0, 100, allow_nan=False)


# ---- the arithmetic -------------------------------------------------------------------------


@given(counts_lists, st.data())
def test_chosen_range_is_min_to_max_over_every_choice(counts, data):
    """Against brute force: the range is exactly the smallest and largest sum of any q rows."""
    q = data.draw(st.integers(0, min(len(counts), 7)))
    got = chosen_tokens(counts, q)
    sums = [sum(c) for c in itertools.combinations(counts, q)]
    assert (got.low, got.high) == (min(sums), max(sums))
    assert got.low <= got.expected + 1e-9 and got.expected <= got.high + 1e-9
    assert math.isclose(got.expected, sum(sums) / len(sums), rel_tol=1e-9, abs_tol=1e-9)


@given(counts_lists)
def test_choosing_every_row_is_exact(counts):
    got = chosen_tokens(counts, len(counts))
    assert got.exact and got.low == sum(counts) == got.expected


@given(st.integers(0, 5000), st.integers(1, 20), st.data())
def test_equal_rows_give_an_exact_count(n, rows, data):
    q = data.draw(st.integers(0, rows))
    got = chosen_tokens([n] * rows, q)
    assert got.exact and got.low == q * n


def test_choosing_more_rows_than_there_are_is_an_error():
    with pytest.raises(ValueError, match="cannot choose 3 of 2 rows"):
        chosen_tokens([1, 2], 3)


@given(st.dictionaries(st.sampled_from("abcde"), counts_lists, min_size=1), st.data())
def test_annotate_tokens_add_up_per_domain(by_domain, data):
    real = {d: data.draw(st.integers(0, len(c))) for d, c in by_domain.items()}
    got = annotate_tokens(real, 0, by_domain)
    assert got.low == sum(sum(sorted(c)[: real[d]]) for d, c in by_domain.items())
    assert got.high == sum(sum(sorted(c)[len(c) - real[d] :]) for d, c in by_domain.items())
    everything = [n for c in by_domain.values() for n in c]
    wide = annotate_tokens({}, len(everything), by_domain)
    assert wide.exact and wide.low == sum(everything)


@given(st.lists(st.integers(0, 3000), max_size=10), st.data(), st.integers(1, 512))
def test_synthesis_range_adds_at_most_max_tokens_per_earlier_rationale(drawn, data, max_tokens):
    shown = [data.draw(st.integers(0, 3)) for _ in drawn]
    mean = data.draw(st.floats(0, max_tokens))
    got = synthesis_tokens(drawn, shown, max_tokens, mean)
    assert got.low == sum(drawn)
    assert got.high - got.low == sum(shown) * max_tokens
    assert got.low <= got.expected <= got.high + 1e-6
    assert got.exact == (sum(shown) == 0)


@given(st.floats(0, 1e7), st.floats(0, 1e7), prices, prices, st.floats(0, 10))
def test_dollars_are_linear_in_price(prompt, completion, per_in, per_out, scale):
    base = usd(prompt, completion, per_in, per_out)
    assert math.isclose(
        usd(prompt, completion, per_in * scale, per_out * scale), scale * base, rel_tol=1e-9, abs_tol=1e-12
    )
    assert math.isclose(base, prompt * per_in / 1e6 + completion * per_out / 1e6, rel_tol=1e-9, abs_tol=1e-12)


@given(
    st.integers(0, 500),
    st.integers(0, 10**6),
    st.integers(0, 10**5),
    st.integers(1, 1024),
    prices,
    prices,
    st.floats(0.01, 1),
    st.data(),
)
def test_step_cost_bounds_and_batch_share(calls, low, spread, max_tokens, per_in, per_out, factor, data):
    mean = data.draw(st.one_of(st.none(), st.floats(0, max_tokens)))
    prompt = Tokens(low, low + spread, low + spread / 2)
    cost = step_cost(calls, prompt, max_tokens, mean).to_dict(Price(per_in, per_out, factor))
    assert cost["completion_tokens"]["max"] == calls * max_tokens
    sync, batch = cost["usd"]["sync"], cost["usd"]["batch"]
    assert math.isclose(batch["max"], factor * sync["max"], rel_tol=1e-9, abs_tol=1e-12)
    if mean is None and calls:
        assert cost["completion_tokens"]["expected"] is None and sync["expected"] is None
    else:
        assert cost["completion_tokens"]["expected"] <= cost["completion_tokens"]["max"] + 0.1
        assert sync["expected"] <= sync["max"] + 1e-9
        assert math.isclose(batch["expected"], factor * sync["expected"], rel_tol=1e-9, abs_tol=1e-12)


@given(st.lists(st.booleans(), max_size=9), st.data())
def test_cached_range_is_fewest_to_most_over_every_choice(hits, data):
    """Against brute force: the fewest and most cached rows any q rows hold, and the mean over all choices."""
    q = data.draw(st.integers(0, len(hits)))
    got = chosen_cached(hits, q)
    found = [sum(c) for c in itertools.combinations(hits, q)]
    assert (got.low, got.high) == (min(found), max(found))
    assert math.isclose(got.expected, sum(found) / len(found), rel_tol=1e-9, abs_tol=1e-9)
    if q == len(hits):
        assert got == known_cached(hits)


@given(
    st.dictionaries(st.sampled_from("abcde"), st.lists(st.booleans(), min_size=1, max_size=8), min_size=1), st.data()
)
def test_annotate_cached_adds_up_per_domain_and_everything_is_exact(hits, data):
    real = {d: data.draw(st.integers(0, len(h))) for d, h in hits.items()}
    got = annotate_cached(real, 0, hits)
    parts = [chosen_cached(h, real[d]) for d, h in hits.items()]
    assert (got.low, got.high) == (sum(p.low for p in parts), sum(p.high for p in parts))
    everything = [h for flags in hits.values() for h in flags]
    assert annotate_cached({}, len(everything), hits) == known_cached(everything)


@given(st.integers(0, 60), st.data(), prices, st.floats(0.01, 1))
def test_what_is_left_to_pay_is_the_calls_the_cache_does_not_answer(calls, data, per_in, factor):
    hits = data.draw(st.lists(st.booleans(), min_size=calls, max_size=calls))
    unknown = data.draw(st.integers(0, calls))
    cached = known_cached(hits[unknown:]) + unknown_cached(unknown)
    cost = step_cost(calls, Tokens(10 * calls, 10 * calls, 10.0 * calls), 32, 16.0, cached)
    got = cost.to_dict(Price(per_in, 4 * per_in, factor))
    found = sum(hits[unknown:])
    assert got["cached_calls"] == {"min": found, "max": found + unknown, "expected": found}
    assert got["to_pay"]["calls"] == {"min": calls - found - unknown, "max": calls - found, "expected": calls - found}
    for kind in ("sync", "batch"):
        share = (calls - found) / calls if calls else 1.0
        assert math.isclose(got["to_pay"]["usd_expected"][kind], share * got["usd"][kind]["expected"], abs_tol=1e-12)


def test_more_cached_calls_than_calls_is_an_error():
    with pytest.raises(ValueError, match="of 2 calls"):
        step_cost(2, Tokens(1, 1, 1.0), 8, 4.0, Cached(3, 3, 3.0))


def test_a_total_has_an_expected_value_only_if_every_step_has_one():
    known = step_cost(3, Tokens(10, 20, 15.0), 8, 4.0)
    unknown = step_cost(2, Tokens(5, 5, 5.0), 8, None)
    assert total_cost([known, known]).completion_expected == 24.0
    assert total_cost([known, unknown]).completion_expected is None
    assert total_cost([known, step_cost(0, Tokens(0, 0, 0.0), 8, None)]).completion_expected == 12.0
    assert total_cost([]) == NO_COST


def test_rationales_written_before_a_stage_count_its_earlier_stages_only():
    stages = [
        {"real": {"a": 2, "b": 0}, "open": 0},
        {"real": {"a": 1, "b": 3}, "open": 1},
        {"real": {"a": 5, "b": 5}, "open": 0},
    ]
    assert annotated_before(stages, 0, True) == {}
    assert annotated_before(stages, 1, True) == {"a": 2, "b": 0}
    assert annotated_before(stages, 2, True) == {"a": 4, "b": 4}  # an open pick may be of either domain
    assert annotated_before(stages, 2, False) == {}


def test_mean_completion_is_per_model_and_max_tokens():
    history = [("m", 64, 10), ("m", 64, 30), ("m", 256, 200), ("other", 64, 64)]
    assert mean_completion(history, "m", 64) == (20.0, 2)
    assert mean_completion(history, "m", 128) is None


@given(st.lists(st.text(max_size=300), min_size=1, max_size=4))
def test_the_approximation_counts_a_quarter_of_the_bytes_plus_overhead(texts):
    messages = [{"role": "user", "content": t} for t in texts]
    got = approx_tokens(messages)
    assert got == sum(-(-len(t.encode()) // 4) for t in texts) + PER_MESSAGE * len(texts) + PER_REPLY
    assert approx_tokens([*messages, {"role": "user", "content": "more words"}]) > got


# ---- counts against what the steps send ---------------------------------------------------

LABELS = ["earn", "acq", "crude", "tea", "platinum"]
INFO = DatasetInfo(name="R52", task="classification", labels=LABELS)
SIZES = {"earn": 30, "acq": 12, "crude": 6, "tea": 2, "platinum": 1}


def small_pool() -> list[Row]:
    words = "profit oil shares bank tender cocoa dividend quarter estimate".split()
    return [
        Row(
            id=f"{d}-{i}",
            domain=d,
            input=" ".join(words[(i * 7 + j) % len(words)] for j in range(5 + 3 * i)) + f" {d} news",
            label=d,
        )
        for d, n in SIZES.items()
        for i in range(n)
    ]


def params_for(**teacher) -> Params:
    price = {"input_per_1m": 2.0, "output_per_1m": 8.0}
    teacher = {"base_url": "https://teacher.invalid/v1", "model": "m", "price": price, **teacher}
    return Params.model_validate({"budget": {"total": 30}, "stages": {"s0": "start", "s1": "s0"}, "teacher": teacher})


def costs(plan, pool, params, counter, cache):
    """plan_costs with the sections it reads, as cli.py passes them."""
    settings = CostSettings(params.teacher, params.data.max_input_chars, params.policy.seed)
    draw = seeded_draw(params.select, params.student, params.policy.seed)
    return plan_costs(plan, pool, settings, INFO, counter, cache, draw)


class Recorder:
    """A client that records the requests a step sends and answers nothing useful."""

    def __init__(self):
        self.requests = []

    def run_batch(self, requests, desc=""):
        self.requests += list(requests)
        answers = [Response(str(i), "", "stop", 0, 0, False) for i, _ in enumerate(requests)]
        return answers, Usage()


def test_plan_counts_the_requests_the_steps_send(tmp_path):
    """Stage 0 of a naive plan: tea and platinum are tail (all rows annotated, the
    rest synthesized): those counts are exact and equal the steps' own requests."""
    pool, params, counter = small_pool(), params_for(), ApproxCounter()
    plan = make_plan(domain_counts(pool), 30, 2, "naive")
    s0 = plan["per_stage"][0]
    assert s0["tail"] == ["tea", "platinum"] and s0["synthetic"]["platinum"] > 0
    cost = costs(plan, pool, params, counter, RequestCache(tmp_path / "cache"))
    synth = Recorder()
    synthesize(pool, {d: n for d, n in s0["synthetic"].items() if n}, 0, params.teacher, 0, 600, INFO, synth)
    sent = sum(counter.count(r.messages) for r in synth.requests)
    assert cost["per_stage"][0]["synthesize"]["prompt_tokens"] == {
        "min": sent,
        "max": sent,
        "expected": sent,
        "exact": True,
    }
    assert cost["per_stage"][0]["synthesize"]["calls"] == len(synth.requests) == sum(s0["synthetic"].values())
    tail = [r for r in pool if r.domain in ("tea", "platinum")]
    annotated = Recorder()
    annotate(tail, 0, params.teacher, params.data.max_input_chars, INFO, annotated)
    # Only the tail rows are known; the head rows' part is a range whose ends we rebuild here.
    prompts, cut = load_prompts("classification"), params.data.max_input_chars
    tokens = {
        r.id: counter.count(annotation_request(prompts, params.teacher.max_tokens, cut, INFO, r).messages) for r in pool
    }
    assert sum(tokens[r.id] for r in tail) == sum(counter.count(r.messages) for r in annotated.requests)
    low = high = sum(tokens[r.id] for r in tail)
    for d in ("earn", "acq", "crude"):
        ordered = sorted(tokens[r.id] for r in pool if r.domain == d)
        low, high = low + sum(ordered[: s0["real"][d]]), high + sum(ordered[len(ordered) - s0["real"][d] :])
    got = cost["per_stage"][0]["annotate"]["prompt_tokens"]
    assert (got["min"], got["max"]) == (low, high) and low < high


def test_what_the_cache_answers_is_not_to_pay(tmp_path):
    """Naive, stage 0: its synthesis requests and the tail rows' annotate requests are known,
    so a cache holding them makes them free, exactly; 5 of earn's 30 rows cached leave its
    chosen rows a range. Stage 1's synthesis may show rationales stage 0 writes: to pay."""
    pool, params = small_pool(), params_for()
    plan = make_plan(domain_counts(pool), 30, 2, "naive")
    s0 = plan["per_stage"][0]
    synth = Recorder()
    synthesize(pool, {d: n for d, n in s0["synthetic"].items() if n}, 0, params.teacher, 0, 600, INFO, synth)
    prompts, cut = load_prompts("classification"), params.data.max_input_chars
    rows = [r for r in pool if r.domain == "tea"] + [r for r in pool if r.domain == "earn"][:5]
    known = synth.requests + [annotation_request(prompts, params.teacher.max_tokens, cut, INFO, r) for r in rows]
    cache = RequestCache(tmp_path / "cache")
    for request in known:
        material = request.material(params.teacher.model)
        cache.put(request_key(material), material, {"content": "", "completion_tokens": 20, "prompt_tokens": 9})
    cache.close()

    cost = costs(plan, pool, params, ApproxCounter(), RequestCache(tmp_path / "cache"))
    synth0, annotate0 = cost["per_stage"][0]["synthesize"], cost["per_stage"][0]["annotate"]
    n = len(synth.requests)
    assert synth0["cached_calls"] == {"min": n, "max": n, "expected": n} and synth0["to_pay"]["calls"]["max"] == 0
    assert synth0["to_pay"]["usd_expected"]["sync"] == 0
    q = s0["real"]["earn"]
    assert 0 < q < 30 and s0["real"]["tea"] == 2
    assert annotate0["cached_calls"] == {
        "min": 2 + max(0, q - 25),
        "max": 2 + min(q, 5),
        "expected": round(2 + q * 5 / 30, 1),
    }
    synth1 = cost["per_stage"][1]["synthesize"]
    assert synth1["calls"] > 0 and synth1["to_pay"]["calls"]["expected"] == synth1["calls"]
    total = cost["total"]
    # Each stage is counted on its own: both stages' earn rows may be cached ones (a loose upper end).
    cached = n + sum(alloc["real"]["tea"] + alloc["real"]["earn"] * 5 / 30 for alloc in plan["per_stage"])
    assert total["to_pay"]["calls"]["expected"] == pytest.approx(total["calls"] - cached, abs=0.1)
    assert any(note.startswith("cached: ") for note in cost["notes"])


@pytest.mark.parametrize("policy", ["random", "duplicate"])
def test_rows_drawn_without_ifd_are_planned_exactly(tmp_path, policy):
    """The steps run stage by stage as a pipeline chains them (allocate, select, annotate):
    the plan's annotate tokens are theirs, exactly, and a cache holding stage 0's
    requests makes stage 0 free and nothing else."""
    pool, params, counter = small_pool(), params_for(), ApproxCounter()
    params = params.model_copy(update={"policy": params.policy.model_copy(update={"name": policy, "seed": 3})})
    state, taken, sent = start_state(domain_counts(pool)), set(), []
    for k in range(2):
        state = allocate(30, params.policy, 2, domain_counts(pool), state, k)
        rows, _ = select(pool, state, taken, k, params.select, params.student, 3, INFO, None)
        taken |= {r.id for r in rows if r.source != "duplicate"}
        annotated = Recorder()
        annotate(
            [r for r in rows if r.source != "duplicate"],
            k,
            params.teacher,
            params.data.max_input_chars,
            INFO,
            annotated,
        )
        sent.append(annotated.requests)
    assert any(state["real"][d] < SIZES[d] for d in ("earn", "acq"))  # head rows were drawn, not all taken
    cache = RequestCache(tmp_path / "cache")
    for request in sent[0]:
        material = request.material(params.teacher.model)
        cache.put(request_key(material), material, {"content": "", "completion_tokens": 20, "prompt_tokens": 9})
    cache.close()

    plan = make_plan(domain_counts(pool), 30, 2, policy, seed=3)
    cost = costs(plan, pool, params, counter, RequestCache(tmp_path / "cache"))
    for k, requests in enumerate(sent):
        got = cost["per_stage"][k]["annotate"]
        tokens = sum(counter.count(r.messages) for r in requests)
        assert got["prompt_tokens"] == {"min": tokens, "max": tokens, "expected": tokens, "exact": True}
        assert got["calls"] == len(requests)
        free = len(requests) if k == 0 else 0
        assert got["cached_calls"] == {"min": free, "max": free, "expected": free}


def test_expected_completion_comes_from_the_cache_for_this_model_and_max_tokens(tmp_path):
    cache = RequestCache(tmp_path / "cache")
    for i, (model, max_tokens, used) in enumerate([("m", 64, 40), ("m", 64, 20), ("m", 99, 99), ("x", 64, 64)]):
        request = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": str(i)}]}
        cache.put(str(i), request, {"content": "", "completion_tokens": used, "prompt_tokens": 1})
    cache.close()
    pool, params = small_pool(), params_for(max_tokens=64, synth_max_tokens=99)
    plan = make_plan(domain_counts(pool), 30, 2, "naive")
    cost = costs(plan, pool, params, ApproxCounter(), RequestCache(tmp_path / "cache"))
    assert cost["expected_completion"]["annotate"]["mean"] == 30.0
    assert cost["expected_completion"]["synthesize"] == {"model": "m", "max_tokens": 99, "mean": 99.0, "responses": 1}
    annotate_calls = cost["per_stage"][1]["annotate"]["calls"]
    assert cost["per_stage"][1]["annotate"]["completion_tokens"] == {
        "max": annotate_calls * 64,
        "expected": annotate_calls * 30.0,
    }


def test_no_cache_file_no_expected_value_and_none_created(tmp_path):
    pool, params = small_pool(), params_for()
    plan = make_plan(domain_counts(pool), 30, 2, "naive")
    cost = costs(plan, pool, params, ApproxCounter(), RequestCache(tmp_path / "cache"))
    assert cost["total"]["completion_tokens"]["expected"] is None and cost["total"]["usd"]["sync"]["expected"] is None
    assert any("no teacher cache" in note for note in cost["notes"])
    assert not (tmp_path / "cache").exists()


def test_a_policy_that_does_not_annotate_sends_no_annotate_tokens(tmp_path):
    pool, params = small_pool(), params_for()
    plan = make_plan(domain_counts(pool), 30, 2, "random_label")
    cost = costs(plan, pool, params, ApproxCounter(), RequestCache(tmp_path / "cache"))
    for stage in cost["per_stage"]:
        assert stage["annotate"]["calls"] == 0 and stage["annotate"]["prompt_tokens"]["max"] == 0
    assert cost["total"]["usd"]["sync"]["max"] == 0


def test_later_synthesis_is_a_range_when_earlier_stages_wrote_rationales(tmp_path):
    """naive, stage 1: tea and platinum were annotated at stage 0, so their demonstrations may show rationales."""
    pool, params = small_pool(), params_for(max_tokens=48, demonstrations=2)
    plan = make_plan(domain_counts(pool), 30, 2, "naive")
    cost = costs(plan, pool, params, ApproxCounter(), RequestCache(tmp_path / "cache"))
    s1 = cost["per_stage"][1]["synthesize"]
    calls = sum(plan["per_stage"][1]["synthetic"].values())
    assert s1["calls"] == calls > 0
    # tea has 2 rows (2 demonstrations, both annotated at s0), platinum 1 row (1 demonstration).
    shown = sum(min(2, SIZES[d]) * n for d, n in plan["per_stage"][1]["synthetic"].items())
    assert s1["prompt_tokens"]["max"] - s1["prompt_tokens"]["min"] == shown * 48
    assert any("stage 1 synthesize" in note for note in cost["notes"])


# ---- the teacher's own tokenizer ------------------------------------------------------------

SMALL_TEACHER = "qwen2.5-coder-0.5b"  # Qwen's tokenizer and chat template, as the 1.5B default


@pytest.fixture(scope="module")
def gguf_counter():
    pytest.importorskip("llama_cpp")
    try:
        return GgufCounter(assets.path_of(SMALL_TEACHER), SMALL_TEACHER)
    except BaldistillError as exc:
        pytest.skip(str(exc))


def one_annotate_prompt() -> list[dict]:
    row = small_pool()[40]
    return list(annotation_request(load_prompts("classification"), 64, 600, INFO, row).messages)


def test_gguf_count_is_the_chat_template_with_special_tokens(gguf_counter):
    """Qwen's template, written out by hand: its default system turn, the user turn and
    the generation prompt; each <|im_start|>/<|im_end|> is one token."""
    messages = one_annotate_prompt()
    text = (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{messages[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    )
    llama = gguf_counter._llama
    assert gguf_counter.count(messages) == len(llama.tokenize(text.encode(), add_bos=False, special=True))
    assert len(llama.tokenize(text.encode(), add_bos=False, special=False)) > gguf_counter.count(messages) + 20
    assert gguf_counter.description == f"tokenizer: {SMALL_TEACHER} GGUF"


@pytest.mark.slow
def test_gguf_count_equals_what_the_real_local_server_reports(gguf_counter):
    """One real annotate prompt through the real llama.cpp server (max_tokens 1)."""
    pytest.importorskip("llama_cpp.server")
    from baldistill.teacher.server import teacher_endpoint

    local = {"model_file": SMALL_TEACHER, "threads": 2, "ctx": 1024, "startup_timeout": 180}
    params = Params.model_validate(
        {"budget": {"total": 1}, "stages": {"s0": "start"}, "teacher": {"base_url": "local", "local": local}}
    )
    messages = one_annotate_prompt()
    with teacher_endpoint(params.teacher) as (base_url, model):
        body = json.dumps({"model": model, "messages": messages, "max_tokens": 1, "temperature": 0}).encode()
        request = urllib.request.Request(f"{base_url}/chat/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            usage = json.loads(response.read())["usage"]
    assert usage["prompt_tokens"] == gguf_counter.count(messages)


# ---- the command --------------------------------------------------------------------------


def run_plan(cwd, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "baldistill.cli", "plan", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    """A project folder with a small prepared pool, params.yaml (local teacher, a
    price) and a teacher cache that has seen some answers of this model."""
    pool = small_pool()
    write_rows(tmp_path / "data/prepared/pool.jsonl", pool)
    write_json(tmp_path / "data/prepared/counts.json", domain_counts(pool))
    INFO.save(tmp_path / "data/prepared/info.json")
    params = {
        "budget": {"total": 30},
        "stages": {"s0": "start", "s1": "s0"},
        "policy": {"name": "naive"},
        "teacher": {"max_tokens": 64, "price": {"input_per_1m": 1.5, "output_per_1m": 6.0}},  # as the history below
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cache = RequestCache(tmp_path / "cache")
    model = Params.model_validate(params).teacher.model
    for i, used in enumerate((20, 64, 41)):
        request = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": str(i)}]}
        cache.put(str(i), request, {"content": "", "completion_tokens": used})
    cache.close()
    monkeypatch.setenv("BALDISTILL_TEACHER_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_plan_json_has_consistent_tokens_and_dollars(prepared):
    result = run_plan(prepared, "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    cost = plan["teacher_cost"]
    assert cost["available"] and cost["counting"].startswith(("tokenizer: ", "approximation: "))
    assert cost["expected_completion"]["annotate"]["mean"] == pytest.approx(125 / 3)
    steps = [stage[step] for stage in cost["per_stage"] for step in ("synthesize", "annotate")]
    assert sum(s["calls"] for s in steps) == plan["teacher_calls"] == cost["total"]["calls"]
    for alloc, stage in zip(plan["per_stage"], cost["per_stage"]):
        assert stage["synthesize"]["calls"] == sum(alloc["synthetic"].values())
    for step in [*steps, cost["total"]]:
        prompt, completion, usd_ = step["prompt_tokens"], step["completion_tokens"], step["usd"]
        assert prompt["min"] <= prompt["expected"] <= prompt["max"]
        assert (prompt["min"] > 0) == (step["calls"] > 0)
        for kind in ("sync", "batch"):
            if completion["expected"] is not None:
                assert usd_[kind]["max"] >= usd_[kind]["expected"]
        assert usd_["batch"]["max"] == pytest.approx(0.5 * usd_["sync"]["max"])
        # The cache holds no request the plan sends: everything is to pay, but what may show a later rationale.
        assert step["cached_calls"]["min"] == 0 and step["cached_calls"]["expected"] == 0
        assert step["to_pay"]["calls"]["expected"] == step["calls"] == step["to_pay"]["calls"]["max"]
        assert usd_["sync"]["max"] == pytest.approx((prompt["max"] * 1.5 + completion["max"] * 6.0) / 1e6)
    annotate0 = cost["per_stage"][0]["annotate"]
    assert annotate0["completion_tokens"]["max"] >= annotate0["completion_tokens"]["expected"] > 0
    assert annotate0["usd"]["batch"]["expected"] == pytest.approx(0.5 * annotate0["usd"]["sync"]["expected"])


def test_plan_human_form_shows_the_block(prepared):
    result = run_plan(prepared)
    assert result.returncode == 0, result.stderr
    assert "stage 1: " in result.stdout  # today's output is still there
    assert "teacher tokens and dollars (" in result.stdout and "batch = 0.5 x sync" in result.stdout
    assert "  total " in result.stdout and "annotate" in result.stdout
    assert "to pay (exp.)" in result.stdout and "to pay, expected: USD " in result.stdout


def test_without_the_prepared_pool_the_plan_says_what_tokens_need(tmp_path):
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps(SIZES))
    args = ("--counts", str(counts), "--budget", "30", "--stages", "2", "--policy", "naive")
    human = run_plan(tmp_path, *args)
    assert human.returncode == 0, human.stderr
    assert "stage 0: " in human.stdout and human.stdout.strip().splitlines()[-1].endswith("run `dvc repro prepare`")
    machine = json.loads(run_plan(tmp_path, *args, "--json").stdout)
    assert machine["teacher_cost"]["available"] is False and "dvc repro prepare" in machine["teacher_cost"]["reason"]


def test_no_tokens_skips_counting(prepared):
    plan = json.loads(run_plan(prepared, "--json", "--no-tokens").stdout)
    assert plan["teacher_cost"] == {"available": False, "reason": "--no-tokens was given"}


def test_counts_that_are_not_the_prepared_pool_get_no_tokens(prepared):
    other = prepared / "other.json"
    other.write_text(json.dumps({**SIZES, "earn": 31}))
    plan = json.loads(run_plan(prepared, "--counts", str(other), "--json").stdout)
    assert plan["teacher_calls"] > 0 and plan["teacher_cost"]["available"] is False
    assert "differ from --counts" in plan["teacher_cost"]["reason"]
