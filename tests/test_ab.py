"""The A/B tab's handlers called directly (tabs/ab.py): two tiny random checkpoints answer one
espeak-ng prompt, the order is hidden until the vote, refusals reach the page as gr.Error, and
a damaged votes database is refused before any model runs and left as it was.
(tests/test_app_browser.py drives the same tab in chromium.)"""

import hashlib
import subprocess

import gradio as gr
import numpy as np
import pytest
import torch

import app
from eval.vote_store import read_votes
from s2s.codecs.codec import CodecUnavailable, load_codec
from s2s.models.checkpoint import save_checkpoint
from s2s.models.model import ModelConfig, S2SModel


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
def test_both_answer_the_vote_is_stored_and_only_then_names_are_shown(wb):
    prompt = str(wb.reports.parent / "hello.wav")
    one, two = wb.guard.checkpoints()
    for _ in range(2):  # which plays as A is the server's coin flip (tests/test_votes.py checks both come up)
        audio_a, audio_b, pair_id, status, *buttons = wb.ab_serve(prompt, one, two)
        assert one not in status and two not in status and "vote" in status
        assert audio_a[0] == audio_b[0] and audio_a[1].size and audio_b[1].size
        assert all(b["interactive"] for b in buttons)
        stored = read_votes(wb.reports / "votes.sqlite")
        cleared, reveal, *_ = wb.ab_vote(pair_id, "A")
        assert cleared == "" and "Your vote: **A is better**" in reveal
        vote = read_votes(wb.reports / "votes.sqlite")[-1]
        assert len(read_votes(wb.reports / "votes.sqlite")) == len(stored) + 1 and vote["pair_id"] == pair_id
        assert f"A was `{vote['a']}`, B was `{vote['b']}`" in reveal and {vote["a"], vote["b"]} == {one, two}
        assert vote["choice"] == "A" and vote["prompt"] == "hello.wav"
        with pytest.raises(gr.Error, match="already has a vote"):
            wb.ab_vote(pair_id, "B")
    # the two sides are the two models: same seed and settings, different weights -> different replies
    pipe_one, pipe_two = wb.pipeline(one), wb.pipeline(two)
    r1 = pipe_one.respond(prompt, seed=3, max_seconds=0.3, prompt_codes=False)
    r2 = pipe_two.respond(prompt, seed=3, max_seconds=0.3, prompt_codes=False)
    assert not np.array_equal(r1.reply_codes, r2.reply_codes)


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
