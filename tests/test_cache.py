"""The request cache: keys, durability across processes, export/import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from baldistill.core.errors import BaldistillError
from baldistill.teacher.cache import RequestCache, default_dir, key_material, request_key
from baldistill.teacher.claims import Claim, Claimant

MESSAGES = [{"role": "user", "content": "Explain. The answer is earn."}]


def key(temperature=0.0, sample=None, **changes):
    material = key_material("m", MESSAGES, temperature, 64, sample)
    material.update(changes)
    return request_key(material)


def test_key_ignores_sample_for_greedy_requests_only():
    assert key(0.0, sample=1) == key(0.0, sample=2)
    assert key(0.9, sample=1) != key(0.9, sample=2)
    assert key(0.0) != key(0.9, sample=0)
    assert key(max_tokens=65) != key()


def test_key_is_independent_of_dict_order():
    a = {"model": "m", "messages": MESSAGES, "temperature": 0.0, "max_tokens": 64}
    b = dict(reversed(list(a.items())))
    b["messages"] = [dict(reversed(list(MESSAGES[0].items())))]
    assert request_key(a) == request_key(b)
    assert len(request_key(a)) == 64


def test_first_answer_wins(tmp_path):
    with RequestCache(tmp_path) as cache:
        assert cache.put("k", {"q": 1}, {"content": "first"})
        assert not cache.put("k", {"q": 1}, {"content": "second"})
        assert cache.get("k") == {"content": "first"}
        assert cache.get("missing") is None and len(cache) == 1


def test_location_comes_from_env_then_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("BALDISTILL_TEACHER_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_dir() == tmp_path / ".baldistill" / "teacher-cache"
    monkeypatch.setenv("BALDISTILL_TEACHER_CACHE", str(tmp_path / "elsewhere"))
    with RequestCache() as cache:
        cache.put("k", {}, {"content": "x"})
    assert (tmp_path / "elsewhere" / "cache.sqlite").exists()


def test_the_database_is_created_at_first_use_not_at_opening(tmp_path):
    """A step with nothing to ask opens a cache but leaves no file behind."""
    with RequestCache(tmp_path / "lazy") as cache:
        assert cache.export_jsonl(tmp_path / "used.jsonl", []) == 0
        assert not (tmp_path / "lazy").exists()
        assert cache.get("k") is None
        assert cache.path.exists()


def test_an_unusable_cache_directory_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    cache = RequestCache(tmp_path / "file" / "cache")
    with pytest.raises(BaldistillError, match="cannot open the teacher cache") as caught:
        cache.get("k")
    assert "\n" not in str(caught.value)


def test_entries_written_by_other_processes_are_visible(tmp_path):
    """Two writer processes at once, then a reader: nothing lost, nothing locked."""
    script = textwrap.dedent(
        """
        import sys
        from baldistill.teacher.cache import RequestCache
        cache = RequestCache(sys.argv[1])
        for i in range(20):
            cache.put(f"{sys.argv[2]}-{i}", {"i": i}, {"content": sys.argv[2]})
        """
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), name]) for name in ("a", "b")]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    with RequestCache(tmp_path) as cache:
        assert len(cache) == 40
        assert cache.get("b-19") == {"content": "b"}


def test_export_then_import_round_trip(tmp_path):
    material = key_material("m", MESSAGES, 0.0, 64, None)
    k = request_key(material)
    with RequestCache(tmp_path / "one") as cache:
        cache.put(k, material, {"content": "The answer is earn."})
        assert cache.export_jsonl(tmp_path / "used.jsonl", [k, k, "not-there"]) == 1
    with RequestCache(tmp_path / "two") as other:
        assert other.import_jsonl(tmp_path / "used.jsonl") == 1
        assert other.import_jsonl(tmp_path / "used.jsonl") == 0
        assert other.get(k) == {"content": "The answer is earn."}


def test_import_rejects_an_entry_whose_key_does_not_match(tmp_path):
    material = key_material("m", MESSAGES, 0.0, 64, None)
    line = {"key": request_key(material), "request": {**material, "max_tokens": 1}, "response": {"content": "x"}}
    (tmp_path / "bad.jsonl").write_text(json.dumps(line) + "\n")
    with (
        RequestCache(tmp_path / "c") as cache,
        pytest.raises(BaldistillError, match=r"bad\.jsonl:1: key does not match"),
    ):
        cache.import_jsonl(tmp_path / "bad.jsonl")


def finished_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_claimed_key_waits_for_its_holder_then_gets_the_stored_answer(tmp_path):
    me = Claimant.this_process()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as sleeper:
        holder = Claimant(me.host, sleeper.pid)  # another process, running
        with RequestCache(tmp_path) as cache:
            assert cache.claims.claim("k", holder, lease=60).granted
            assert cache.claims.claim("k", holder, lease=60).granted  # its own claim again
            waiting = cache.claims.claim("k", me, lease=60)
            assert not waiting.granted and waiting.answer is None
            cache.put("k", {"q": 1}, {"content": "a"})
            stored = cache.claims.claim("k", me, lease=60)
        sleeper.kill()
    assert stored.answer == {"content": "a"} and not stored.granted


def test_the_claim_of_an_ended_process_is_taken_over(tmp_path):
    me = Claimant.this_process()
    with RequestCache(tmp_path) as cache:
        assert cache.claims.claim("k", Claimant(me.host, finished_pid()), lease=3600).granted
        assert cache.claims.claim("k", me, lease=60).granted


def test_a_claim_from_another_host_holds_until_its_lease_ends(tmp_path):
    me = Claimant.this_process()
    elsewhere = Claimant(me.host + "-elsewhere", me.pid)
    with RequestCache(tmp_path) as cache:
        assert cache.claims.claim("live", elsewhere, lease=3600).granted
        assert not cache.claims.claim("live", me, lease=60).granted
        assert cache.claims.claim("lapsed", elsewhere, lease=-1).granted
        assert cache.claims.claim("lapsed", me, lease=60).granted


def test_a_released_claim_frees_the_key(tmp_path):
    me = Claimant.this_process()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as sleeper:
        other = Claimant(me.host, sleeper.pid)
        with RequestCache(tmp_path) as cache:
            assert cache.claims.claim("k", other, lease=60).granted
            cache.claims.release("k", me)  # not its claim: nothing happens
            assert not cache.claims.claim("k", me, lease=60).granted
            cache.claims.release("k", other)
            assert cache.claims.claim("k", me, lease=60).granted
        sleeper.kill()


def test_a_batch_is_claimed_in_one_transaction_key_by_key(tmp_path):
    me = Claimant.this_process()
    elsewhere = Claimant(me.host + "-elsewhere", me.pid)
    with RequestCache(tmp_path) as cache:
        cache.put("stored", {"q": 1}, {"content": "a"})
        cache.claims.claim("held", elsewhere, lease=3600)
        claims = cache.claims.claim_many(["stored", "held", "free"], me, lease=60)
        assert claims == {
            "stored": Claim({"content": "a"}, granted=False),
            "held": Claim(None, granted=False),
            "free": Claim(None, granted=True),
        }
        assert not cache.claims.claim("free", elsewhere, lease=60).granted  # it is mine now


def test_a_batch_claim_that_fails_midway_claims_nothing(tmp_path):
    def keys():
        yield "first"
        raise KeyboardInterrupt  # the run is stopped while the batch is being claimed

    me = Claimant.this_process()
    elsewhere = Claimant(me.host + "-elsewhere", me.pid)
    with RequestCache(tmp_path) as cache:
        with pytest.raises(KeyboardInterrupt):
            cache.claims.claim_many(keys(), me, lease=3600)
        assert cache.claims.claim("first", elsewhere, lease=60).granted


OLD_SPEND = """CREATE TABLE spend (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, payer TEXT NOT NULL,
model TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, usd REAL NOT NULL,
open INTEGER NOT NULL, created REAL NOT NULL)"""


def test_a_journal_from_before_attempts_reads_as_billed_answers_and_is_upgraded_in_place(tmp_path):
    import sqlite3

    from baldistill.report.spend import journal_totals

    tmp_path.joinpath("cache.sqlite").unlink(missing_ok=True)
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:  # a cache written by the release before the attempt journal
        db.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, request TEXT, response TEXT, created REAL)")
        db.execute(OLD_SPEND)
        db.execute("INSERT INTO spend VALUES (1, 'k', 'r|exp|annotate@s0', 'm', 10, 5, 0.25, 1, 0)")
    assert journal_totals(tmp_path)["by_model"]["m"]["usd"] == 0.25  # read-only: nothing upgraded yet
    with RequestCache(tmp_path) as cache:
        (entry,) = cache.journal.open_entries("r|exp|annotate@s0")
    assert (entry.state, entry.usd, entry.prompt_tokens) == ("billed", 0.25, 10)
    totals = journal_totals(tmp_path)["by_run"]["exp"]
    assert (totals["attempts_billed"], totals["attempts_unknown"]) == (1, 0)
