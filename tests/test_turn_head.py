"""The turn head: its net (padding, save/load, refusals), its examples (held-out wordings stay out of
training; hesitations go where the speech is quiet) and the bundled head on real speech (espeak
voices and wordings it never trained on): finished or not, backchannel or not."""

import json
import random

import numpy as np
import pytest
import torch

from s2s.data.corpus import load_intents
from s2s.data.turns import (BACKCHANNELS, NEW_BACKCHANNELS, RATE, insert_pause, plan_clips, quietest_point, speak,
                            voice_for)
from s2s.models.turn_head import TurnHead, TurnHeadConfig, TurnHeadError, load_turn_head, save_turn_head


def test_padding_does_not_change_what_the_head_says():
    torch.manual_seed(0)
    net = TurnHead(TurnHeadConfig(dim=16, hidden=8)).eval()
    x = torch.randn(1, 30, 16)
    padded = torch.cat([x, torch.randn(1, 20, 16)], 1)
    mask = torch.arange(50)[None] < 30
    assert torch.allclose(net(x), net(padded, mask), atol=1e-5)
    assert not torch.allclose(net(x), net(x[:, :20]), atol=1e-3)  # the turn's end is read


@pytest.fixture(scope="module")
def whisper():
    from s2s.models.frontend import load_frontend

    return load_frontend("whisper_tiny_en")


def test_a_saved_head_loads_the_same_and_bad_folders_are_refused_by_name(tmp_path, whisper):
    sha = whisper.describe()["params"]["sha256"]
    net = TurnHead(TurnHeadConfig(dim=16, hidden=8, frontend_sha256=sha, finished_threshold=0.7))
    save_turn_head(net, tmp_path / "head", {"note": "test"})
    head = load_turn_head(tmp_path / "head", frontend=whisper)
    x = torch.randn(40, 16)
    assert head.cfg.finished_threshold == 0.7 and head.summary == {"note": "test"}
    with torch.no_grad():
        assert abs(head.p_finished(x) - float(torch.sigmoid(net.eval()(x[None]))[0, 0])) < 1e-6
    assert not list((tmp_path / "head").glob("*.tmp"))
    save_turn_head(TurnHead(TurnHeadConfig(dim=16, hidden=8, frontend_sha256="abc123")), tmp_path / "other", {})
    with pytest.raises(TurnHeadError, match=f"reads whisper_tiny_en features .*abc123.*sha256 {sha[:12]}"):
        load_turn_head(tmp_path / "other", frontend=whisper)
    with pytest.raises(TurnHeadError, match="no turn head in .*config.json is missing"):
        load_turn_head(tmp_path / "nothing")
    (tmp_path / "head" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TurnHeadError, match="cannot be loaded"):
        load_turn_head(tmp_path / "head")
    with pytest.raises(ValueError, match=r"turn features must be \[S, 16\]"):
        head.p_finished(torch.randn(40, 8))


def test_held_out_wordings_and_backchannels_never_reach_training():
    train, held = plan_clips("train", 0, per_wording=3, per_short=2), plan_clips("eval", 0, per_wording=3, per_short=2)
    assert plan_clips("train", 0, per_wording=3, per_short=2) == train  # a pure function of its arguments
    held_out = {p for it in load_intents() for p in it.held_out}
    train_texts = {c["text"] for c in train}
    assert not train_texts & held_out and {c["text"] for c in held if c["kind"] == "plain"} == held_out
    said = lambda plan, kind: {c["text"] for c in plan if c["kind"] == kind}  # noqa: E731
    assert not said(train, "interruption") & said(held, "interruption")
    assert not said(train, "backchannel") & set(NEW_BACKCHANNELS) and said(held, "backchannel") >= set(NEW_BACKCHANNELS)
    assert not {c["voice"] for c in train} & {c["voice"] for c in held}
    assert {c["kind"] for c in train} == {"plain", "words", "cut", "preamble", "backchannel", "interruption"}


def test_a_hesitation_goes_where_the_speech_is_quiet():
    x = speak(voice_for(random.Random(0), "train"), "Could you tell me the weather for tomorrow?")
    at = quietest_point(x, RATE)
    y, where = insert_pause(x, RATE, 0.5)
    assert where == at and len(y) == len(x) + RATE // 2 and not y[at:at + RATE // 2].any()
    assert 0.3 * len(x) <= at <= 0.7 * len(x)
    block = RATE // 100
    energy = lambda i: float(np.sqrt(np.mean(x[i - block // 2:i + block // 2] ** 2)))  # noqa: E731
    assert energy(at) < 0.25 * float(np.sqrt(np.mean(x ** 2)))


@pytest.fixture(scope="module")
def bundled(whisper):
    return load_turn_head(frontend=whisper), whisper


def test_the_bundled_head_hears_whether_a_held_out_question_is_finished(bundled):
    head, fe = bundled
    rng = random.Random(3)
    wordings = [it.held_out[1] for it in load_intents()][:12]  # the wordings the head was measured on
    done, cut = [], []
    for text in wordings:
        voice = voice_for(rng, "eval")
        words = text.split()
        done.append(head.p_finished(fe.features(speak(voice, text), RATE)))
        cut.append(head.p_finished(fe.features(speak(voice, " ".join(words[: len(words) // 2])), RATE)))
    # mostly right both ways (its held-out figures are in assets/turn_head/config.json)
    assert sum(p >= head.cfg.finished_threshold for p in done) >= 8, done
    assert sum(p < head.cfg.finished_threshold for p in cut) >= 8, cut


def test_the_bundled_head_tells_a_backchannel_from_speech(bundled):
    head, fe = bundled
    rng = random.Random(4)
    bc = [head.p_backchannel(fe.features(speak(voice_for(rng, "eval"), t), RATE)) for t in BACKCHANNELS[::3]]
    speech = [head.p_backchannel(fe.features(speak(voice_for(rng, "eval"), t), RATE))
              for t in ("wait a second", "no, that's not it", "What time is it?", "Tell me a joke.")]
    assert sum(p >= head.cfg.backchannel_threshold for p in bc) >= len(bc) - 2, bc
    assert all(p < head.cfg.backchannel_threshold for p in speech), speech


def test_the_bundled_head_says_what_it_was_trained_on():
    from s2s.models.turn_head import DEFAULT_DIR

    meta = json.loads((DEFAULT_DIR / "config.json").read_text())
    assert meta["summary"]["held_out"]["finished"]["n"] > 100
    assert 0.5 <= meta["config"]["finished_threshold"] < 1


@pytest.mark.slow
def test_examples_built_and_a_head_trained_on_them_loads_with_its_figures(tmp_path):
    from s2s.data.turns import build_turns
    from s2s.training.turn_head import train

    counts = build_turns(tmp_path / "turns", per_wording=2, per_short=1, limit=12, progress=False)
    assert counts["examples"] > 20 and {"train:plain", "eval:plain"} <= set(counts["by_split_kind"])
    meta = [json.loads(line) for line in (tmp_path / "turns" / "examples.jsonl").read_text().splitlines()]
    assert {m["event"] for m in meta} == {"start", "pause"} and {m["finished"] for m in meta} == {-1, 0, 1}
    summary = train(tmp_path / "turns", tmp_path / "head", epochs=2, progress=False)
    head = load_turn_head(tmp_path / "head")
    assert head.summary["held_out"]["finished"]["n"] == summary["held_out"]["finished"]["n"] > 0
    assert 0.5 <= head.cfg.finished_threshold <= 0.99


def test_training_refuses_a_folder_without_examples_and_writes_nothing(tmp_path):
    from s2s.training.turn_head import main

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "examples.npz").write_bytes(b"not an npz")
    with pytest.raises(SystemExit, match="holds no readable turn examples"):
        main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "head")])
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "head"), "--epochs", "0"])
    assert not (tmp_path / "head").exists()


def test_the_server_takes_a_head_by_name_and_refuses_a_bad_one_by_name(tmp_path, whisper):
    from s2s.serve.converse_limits import Limits
    from s2s.serve.converse_turn import load_head

    for bad in ("", "  ", 3, None):
        with pytest.raises(ValueError, match="Limits.turn_head must be 'bundled', 'none' or a folder"):
            Limits(turn_head=bad)

    class Pipe:  # load_head reads only the pipeline's front-end: a Whisper one is shared with the head
        frontend = whisper

    assert load_head(Pipe, "none") == (None, None)
    with pytest.raises(TurnHeadError, match="no turn head in"):
        load_head(Pipe, str(tmp_path / "missing"))
    sha = whisper.describe()["params"]["sha256"]
    save_turn_head(TurnHead(TurnHeadConfig(dim=16, hidden=8, frontend_sha256=sha)), tmp_path / "h", {})
    head, frontend = load_head(Pipe, str(tmp_path / "h"))
    assert frontend is whisper and head.cfg.dim == 16
