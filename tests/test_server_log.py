from hypothesis import given
from hypothesis import strategies as st

from baldistill.teacher.server import server_env
from baldistill.teacher.server_log import throughput

LOG = """llama_perf_context_print:        load time =       0.22 ms
llama_perf_context_print: prompt eval time =       0.04 ms /    33 tokens
llama_perf_context_print:        eval time =   24854.31 ms /     7 runs
llama_perf_context_print:       total time =   34727.49 ms /    40 tokens
INFO:     127.0.0.1:50000 - "POST /v1/chat/completions HTTP/1.1" 200 OK
llama_perf_context_print:        load time =       0.22 ms
llama_perf_context_print: prompt eval time =    8828.56 ms /     6 tokens
llama_perf_context_print:        eval time =    6012.02 ms /     7 runs
llama_perf_context_print:       total time =   14847.93 ms /    13 tokens
"""


def test_reads_a_real_llama_cpp_log():
    got = throughput(LOG)
    assert got["completions"] == 2 and got["prompt_tokens_evaluated"] == 39 and got["generated_tokens"] == 14
    # The first prompt pass is booked under neither line: its time is total minus eval.
    prompt_ms = (34727.49 - 24854.31) + (14847.93 - 6012.02)
    assert got["prompt_tokens_per_s"] == round(39 / (prompt_ms / 1000), 2)
    assert got["generation_tokens_per_s"] == round(14 / ((24854.31 + 6012.02) / 1000), 2)


def test_a_log_without_completions_says_nothing():
    assert throughput("") is None
    assert throughput("INFO:     Uvicorn running on http://127.0.0.1:8000\n") is None


ENTRY = st.tuples(st.integers(1, 500), st.integers(1, 200), st.floats(1.0, 1e5), st.floats(1.0, 1e5))


@given(st.lists(ENTRY, min_size=1))
def test_rates_are_tokens_over_seconds(entries):
    lines = []
    for prompt_n, gen_n, prompt_ms, gen_ms in entries:
        lines += [
            f"llama_perf_context_print: prompt eval time = {prompt_ms:10.2f} ms / {prompt_n:5d} tokens",
            f"llama_perf_context_print:        eval time = {gen_ms:10.2f} ms / {gen_n:5d} runs",
            f"llama_perf_context_print: total time = {prompt_ms + gen_ms:10.2f} ms / {prompt_n + gen_n:5d} tokens",
        ]
    got = throughput("\n".join(lines))
    gen_s = sum(round(e[3], 2) for e in entries) / 1000
    assert got["generated_tokens"] == sum(e[1] for e in entries)
    expected = got["generated_tokens"] / gen_s
    assert abs(got["generation_tokens_per_s"] - expected) <= 0.01 + 1e-6 * expected


def test_the_ledger_sums_server_time_over_steps_and_stages():
    from baldistill.teacher.usage import add_usage, empty_ledger

    step = {"calls_paid": 2, "server": throughput(LOG)}
    once = add_usage(empty_ledger(), step, {"calls_paid": 0, "server": None}, rows_synthesized=3)
    twice = add_usage(once, step)
    assert twice["calls_paid"] == 4 and twice["rows_synthesized"] == 3
    assert twice["server_generated_tokens"] == 28
    assert twice["generation_tokens_per_s"] == once["generation_tokens_per_s"] == round(14 / 30.86633, 2)


def test_the_local_server_waits_passively_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("SOME_SETTING", "kept")
    env = server_env()
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["SOME_SETTING"] == "kept"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice wins
    assert server_env()["OMP_WAIT_POLICY"] == "ACTIVE"
    assert server_env({"A": "1"}) == {"A": "1"}  # an explicit environment is taken as given
