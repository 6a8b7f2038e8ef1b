"""The A/B tab's handlers called directly (tabs/ab.py): two tiny random checkpoints answer one
espeak-ng prompt, the order is hidden until the vote, refusals reach the page as gr.Error, and
a damaged votes database is refused before any model runs and left as it was.
(tests/test_app_browser.py drives the same tab in chromium.)"""

import hashlib
import subprocess
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch

import app
from eval.vote_store import read_votes
from s2s.codecs.codec import CodecUnavailable, load_codec
from s2s.models.checkpoint import save_checkpoint
from s2s.models.model import ModelConfig, S2SModel
from tabs import ab as ab_tab


@pytest.fixture(scope="module")
def wb(tmp_path_factory, tiny_encodec):
    try:
        codec = load_codec("world_vq")
    except (ImportError, CodecUnavailable, OSError, ValueError):
        codec = tiny_encodec
    root = tmp_path_factory.mktemp("ab")
    for seed, name in ((0, "one"), (1, "two")):
        torch.manual_seed(seed)
        cfg = ModelConfig(n_codebooks=codec.n_codebooks, cardinality=codec.cardinality, d_model=32, n_layer=2,
                          n_head=4, d_ff=64, max_reply_frames=40)
        save_checkpoint(root / "ckpts" / name, S2SModel(cfg), codec.describe())
    subprocess.run(["espeak-ng", "-w", str(root / "hello.wav"), "Hello there."], check=True)
    return app.Workbench(root / "ckpts" / "one", "cpu", roots=[root / "ckpts"], codec_loader=lambda n, **o: codec,
                         examples=[], reports=root / "reports")


@pytest.mark.slow
def test_both_answer_the_vote_is_stored_and_only_then_names_are_shown(wb, monkeypatch):
    prompt = str(wb.reports.parent / "hello.wav")
    one, two = wb.guard.checkpoints()
    monkeypatch.setattr(ab_tab.secrets, "randbelow", lambda n: 7)  # the pair's seed, so the replies can be redone
    own = {}  # each model's own reply to the prompt with that seed and the tab's settings
    for name in (one, two):
        pipe = wb.pipeline(name)
        own[name] = pipe.respond(prompt, seed=7, prompt_codes=False, prompt_max_seconds=60, **ab_tab.SAMPLING,
                                 max_seconds=min(ab_tab.MAX_REPLY_SECONDS,
                                                 pipe.model.cfg.max_reply_frames / pipe.codec.frame_rate)).audio
    assert not np.array_equal(own[one], own[two])  # same seed and settings, different weights
    for _ in range(2):  # which plays as A is the server's coin flip (tests/test_votes.py checks both come up)
        served = wb.ab_serve(prompt, one, two)
        audio_a, audio_b, pair_id, status, *buttons = served
        # nothing the page receives before the vote says which model is which
        page = repr([pair_id, status, audio_a[0], audio_b[0], buttons])
        assert Path(one).name not in page and Path(two).name not in page and "vote" in status
        assert all(b["interactive"] for b in buttons)
        stored = read_votes(wb.reports / "votes.sqlite")
        cleared, reveal, *_ = wb.ab_vote(pair_id, "A")
        assert cleared == "" and "Your vote: **A is better**" in reveal
        vote = read_votes(wb.reports / "votes.sqlite")[-1]
        assert len(read_votes(wb.reports / "votes.sqlite")) == len(stored) + 1 and vote["pair_id"] == pair_id
        assert f"A was `{vote['a']}`, B was `{vote['b']}`" in reveal and {vote["a"], vote["b"]} == {one, two}
        assert vote["choice"] == "A" and vote["prompt"] == "hello.wav"
        # A is the reply of the model the reveal names as A, and B of the other: the vote counts for it
        assert np.array_equal(audio_a[1], own[vote["a"]]) and np.array_equal(audio_b[1], own[vote["b"]])
        with pytest.raises(gr.Error, match="already has a vote"):
            wb.ab_vote(pair_id, "B")


def test_bad_votes_and_bad_choices_are_messages(wb, tmp_path):
    prompt = str(wb.reports.parent / "hello.wav")
    one, two = wb.guard.checkpoints()
    with pytest.raises(gr.Error, match="No pair to vote on"):
        wb.ab_vote("", "A")
    with pytest.raises(gr.Error, match="no pair 'forged-id' was served"):
        wb.ab_vote("forged-id", "A")
    with pytest.raises(gr.Error, match="both .*one.*choose two different checkpoints"):
        wb.ab_serve(prompt, one, one + "/")
    with pytest.raises(gr.Error, match="no checkpoint chosen as checkpoint 2; choices"):
        wb.ab_serve(prompt, one, None)
    with pytest.raises(gr.Error, match="No prompt"):
        wb.ab_serve(None, one, two)
    chunk, long = tmp_path / "chunk.m4a", tmp_path / "long.m4a"  # 70 s of AAC: refused before decoding
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=220:duration=10", "-c:a", "aac",
                    "-b:a", "16k", str(chunk)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "6", "-i", str(chunk), "-c", "copy", str(long)], check=True)
    with pytest.raises(gr.Error, match=r"'long.m4a' lasts 70\.\d s \(1:10\); uploads may last at most 60 s"):
        wb.ab_serve(str(long), one, two)


def test_a_damaged_votes_database_is_refused_and_kept(wb, tmp_path):
    bad = app.Workbench(wb.guard.resolve(wb.default), "cpu", roots=wb.guard.roots, examples=[], reports=tmp_path,
                        codec_loader=wb.models.codec_loader)
    (tmp_path / "votes.sqlite").write_bytes(b"this is not a database" * 100)
    before = hashlib.sha256((tmp_path / "votes.sqlite").read_bytes()).hexdigest()
    one, two = wb.guard.checkpoints()
    with pytest.raises(gr.Error, match="votes.sqlite' is not a SQLite database.*left as it is"):
        bad.ab_serve(str(wb.reports.parent / "hello.wav"), one, two)
    assert bad.models.loaded(bad.guard.resolve(one)) is None  # refused before any model ran
    assert hashlib.sha256((tmp_path / "votes.sqlite").read_bytes()).hexdigest() == before
