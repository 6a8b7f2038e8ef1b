"""The votes database (eval/votes.py): served pairs and votes, refusals, several writers at once,
a writer killed with SIGKILL, corrupt or foreign files left untouched; win rates and ranking."""

import hashlib
import multiprocessing
import os
import signal
import sqlite3
import time
import warnings

import pytest

from eval.vote_store import SCHEMA_VERSION, VoteError, VotesError, VoteStore, read_votes
from eval.votes import preference, preference_markdown


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_served_pair_takes_one_vote_and_unknown_pairs_are_refused(tmp_path):
    db = tmp_path / "reports" / "votes.sqlite"
    store = VoteStore(db)
    pair = store.serve("ckpts/x", "ckpts/y", prompt="hello.wav", swap=True)
    assert (pair.a, pair.b) == ("ckpts/y", "ckpts/x") and len(pair.id) >= 16
    sides = {VoteStore(db).serve("ckpts/x", "ckpts/y").a for _ in range(40)}
    assert sides == {"ckpts/x", "ckpts/y"}  # the order is a coin flip
    with pytest.raises(VoteError, match="no pair 'made-up' was served"):
        store.vote("made-up", "A")
    with pytest.raises(VoteError, match=r"'maybe' is not one of \['A', 'B', 'tie'\]"):
        store.vote(pair.id, "maybe")
    assert store.vote(pair.id, "B") == pair
    with pytest.raises(VoteError, match="already has a vote"):
        store.vote(pair.id, "A")
    with pytest.raises(VoteError, match="two different checkpoints"):
        store.serve("ckpts/x", "ckpts/x")
    assert read_votes(db) == [{"pair_id": pair.id, "a": "ckpts/y", "b": "ckpts/x", "choice": "B",
                               "prompt": "hello.wav", "voted_at": pytest.approx(time.time(), abs=60)}]
    assert store.counts() == {"served": 41, "votes": 1}
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with pytest.raises(VotesError, match="no votes database at"):
        read_votes(tmp_path / "none.sqlite")
    assert not (tmp_path / "none.sqlite").exists()  # reading never creates one


def test_corrupt_foreign_and_other_version_databases_are_refused_untouched(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(os.urandom(8192))
    # the right magic, then garbage: sqlite itself finds it malformed
    malformed = tmp_path / "malformed.sqlite"
    malformed.write_bytes(b"SQLite format 3\x00" + os.urandom(8192 - 16))
    foreign = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE notes (x)")
    con.commit()
    con.close()
    newer = tmp_path / "newer.sqlite"
    store = VoteStore(newer)
    kept = store.serve("a", "b")
    store.vote(kept.id, "tie")
    con = sqlite3.connect(newer)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")  # as a later workbench would write it
    con.close()
    for path, message in ((garbage, "is not a SQLite database"), (malformed, "cannot be read as a SQLite database"),
                          (foreign, "not a votes database"), (newer, f"schema version {SCHEMA_VERSION + 1}")):
        before = digest(path)
        for attempt in (lambda: VoteStore(path), lambda: read_votes(path)):
            with pytest.raises(VotesError, match=message) as e:
                attempt()
            assert str(path) in str(e.value) and "left as it is" in str(e.value)
        assert digest(path) == before, path  # byte-identical: nothing overwritten
    con = sqlite3.connect(newer)
    assert con.execute("SELECT pair_id, choice FROM votes").fetchall() == [(kept.id, "tie")]  # no vote lost


def _voter(db, worker, n, start):
    start.wait()  # every writer begins at once
    store = VoteStore(db)
    for i in range(n):
        pair = store.serve(f"model{worker % 2}", f"model{2 + i % 2}", prompt=f"w{worker}-{i}")
        store.vote(pair.id, "A" if i % 3 else "tie")


def test_votes_survive_concurrent_writers(tmp_path):
    db = tmp_path / "votes.sqlite"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_voter, args=(db, w, 25, start)) for w in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    votes = read_votes(db)
    assert len(votes) == 100 and len({v["pair_id"] for v in votes}) == 100
    assert sorted(v["prompt"] for v in votes) == sorted(f"w{w}-{i}" for w in range(4) for i in range(25))


def _endless_voter(db, log):
    store = VoteStore(db)
    with open(log, "a") as f:
        while True:
            pair = store.serve("x", "y")
            store.vote(pair.id, "A")
            f.write(pair.id + "\n")  # written only after the vote's COMMIT returned
            f.flush()


def test_a_killed_writer_loses_no_committed_vote(tmp_path):
    db, log = tmp_path / "votes.sqlite", tmp_path / "committed.txt"
    VoteStore(db)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_endless_voter, args=(db, log))
    proc.start()
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 30):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # mid-write, most likely: it does nothing else
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    committed = [line for line in log.read_text().split("\n")[:-1]]  # a torn last line is not counted
    assert len(committed) >= 30
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    stored = {v["pair_id"] for v in read_votes(db)}
    assert set(committed) <= stored and len(stored) - len(committed) <= 1
    store = VoteStore(db)  # and it still takes votes
    store.vote(store.serve("x", "y").id, "B")
    assert len(read_votes(db)) == len(stored) + 1


def test_preference_win_rates_and_ranking():
    votes = []
    for i in range(30):  # strong beats weak 27 of 30, 3 ties; mid in between
        votes.append({"a": "ckpts/strong", "b": "ckpts/weak", "choice": "A" if i < 27 else "tie"})
        votes.append({"a": "ckpts/mid", "b": "ckpts/strong", "choice": "B" if i < 20 else "A"})
        votes.append({"a": "ckpts/weak", "b": "ckpts/mid", "choice": "B" if i < 22 else "A"})
    rows = preference(votes)
    assert [r["model"] for r in rows] == ["ckpts/strong", "ckpts/mid", "ckpts/weak"]
    strong = rows[0]
    assert (strong["games"], strong["wins"], strong["ties"], strong["losses"]) == (60, 47, 3, 10)
    assert strong["win_rate"] == pytest.approx(48.5 / 60)
    for r in rows:
        assert r["win_rate_lo"] <= r["win_rate"] <= r["win_rate_hi"]
        assert r["bt_score_lo"] <= r["bt_score"] <= r["bt_score_hi"]
    assert rows[0]["bt_score_lo"] > rows[2]["bt_score_hi"]  # clearly separated
    md = preference_markdown(rows, len(votes), "votes.sqlite", {"strong": {"answer_accuracy": 0.9, "wer": 0.1}})
    assert "| 1 | `ckpts/strong` | 60 | 47 / 10 / 3 | 80.8% [" in md and "| 90.0% | 10.0% |" in md
    assert preference([]) == [] and "No votes" in preference_markdown([], 0, "v.sqlite")


def test_votes_in_separate_groups_warn_and_are_ranked_within_each_group():
    votes = [{"a": "ckpts/a1", "b": "ckpts/a2", "choice": "A" if i < 8 else "B"} for i in range(10)]
    votes += [{"a": "ckpts/b1", "b": "ckpts/b2", "choice": "B" if i < 6 else "tie"} for i in range(10)]
    with pytest.warns(UserWarning, match=r"2 groups of models that never met.*ckpts/a1, ckpts/a2; ckpts/b1, ckpts/b2"):
        rows = preference(votes, resamples=200)
    assert [(r["group"], r["rank"], r["model"]) for r in rows] == [
        (1, 1, "ckpts/a1"), (1, 2, "ckpts/a2"), (2, 1, "ckpts/b2"), (2, 2, "ckpts/b1")]
    for r in rows:  # each group centred on its own: scores say nothing across groups
        assert r["bt_score_lo"] <= r["bt_score"] <= r["bt_score_hi"]
    assert sum(r["bt_score"] for r in rows[:2]) == pytest.approx(0)
    assert sum(r["bt_score"] for r in rows[2:]) == pytest.approx(0)
    md = preference_markdown(rows, len(votes), "votes.sqlite")
    assert "**The votes form 2 groups of models that never met**" in md and "| 2.1 | `ckpts/b2` |" in md


def test_a_resample_without_a_models_votes_leaves_it_out_of_its_interval():
    votes = [{"a": "strong", "b": "weak", "choice": "A" if i < 30 else "B"} for i in range(40)]
    votes.append({"a": "rare", "b": "strong", "choice": "B"})  # rare's only vote: absent from ~37% of resamples
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one group: no warning
        rows = {r["model"]: r for r in preference(votes)}
    # in every resample that has its vote, rare lost to strong (with the prior: by log(1.25 / 0.25) = 1.61
    # or more); a resample without it must not place it anywhere
    assert rows["rare"]["bt_score_hi"] < rows["strong"]["bt_score_hi"] - 1.5, rows
    assert rows["rare"]["bt_score_lo"] <= rows["rare"]["bt_score"] <= rows["rare"]["bt_score_hi"]
