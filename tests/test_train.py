"""Training on a tiny real spoken manifest (espeak-ng speech, a small real EnCodec)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from s2s.checkpoint import load_checkpoint, save_checkpoint
from s2s.model import ModelConfig, S2SModel
from s2s.train import Trainer, lr_at, parse_args

TINY = ["--preset", "10m", "--batch-frames", "2000", "--lr", "3e-3", "--warmup", "2",
        "--dropout", "0", "--check-every", "0", "--eval-every", "5", "--workers", "1", "--threads", "2"]


def tiny_args(manifest, out, *extra):
    return parse_args(["--data", str(manifest), "--out", str(out), *TINY, *extra])


@pytest.fixture(autouse=True)
def small_preset(monkeypatch):
    """The 10m preset shrunk, so a step takes milliseconds."""
    from s2s import model
    monkeypatch.setitem(model.PRESETS, "10m", ModelConfig(d_model=32, n_layer=2, n_head=4, d_ff=64,
                                                          n_encoder_layer=1, preset="10m"))


@pytest.mark.slow
def test_loss_falls_and_checkpoint_records_the_run(spoken_manifest, tiny_encodec, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_args(spoken_manifest, out, "--steps", "40", "--log-every", "1"), codec=tiny_encodec)
    result = trainer.run()
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert any("val_loss" in r for r in log)
    _, config = load_checkpoint(out, codec=tiny_encodec.describe())
    assert config["training"]["steps"] == 40 == result["step"]
    assert config["training"]["pairs"] == 4


@pytest.mark.slow
def test_resume_continues_at_the_same_step_with_the_same_optimiser(spoken_manifest, tiny_encodec, tmp_path):
    straight = tmp_path / "straight"
    Trainer(tiny_args(spoken_manifest, straight, "--steps", "8"), codec=tiny_encodec).run()
    split = tmp_path / "split"
    Trainer(tiny_args(spoken_manifest, split, "--steps", "8", "--stop-after", "5"), codec=tiny_encodec).run()
    resumed = Trainer(tiny_args(spoken_manifest, split, "--steps", "8", "--resume"), codec=tiny_encodec)
    assert resumed.start_step == 5
    resumed.run()
    a, _ = load_checkpoint(straight)
    b, config = load_checkpoint(split)
    assert config["training"]["steps"] == 8
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


@pytest.mark.slow
def test_fine_tune_on_one_accent(spoken_manifest, tiny_encodec, tmp_path):
    base = tmp_path / "base"
    Trainer(tiny_args(spoken_manifest, base, "--steps", "3"), codec=tiny_encodec).run()
    tuned = tmp_path / "tuned"
    trainer = Trainer(tiny_args(spoken_manifest, tuned, "--steps", "3", "--init", str(base),
                                "--filter", "accent=en-us", "--lr", "1e-4"), codec=tiny_encodec)
    assert {r["accent"] for r in trainer.rows} == {"en-us"} and len(trainer.rows) == 2
    trainer.run()
    _, config = load_checkpoint(tuned)
    assert config["training"]["init"] == str(base)
    assert config["training"]["filters"] == ["accent=en-us"]
    assert config["training"]["init_training"]["steps"] == 3


def test_bad_data_is_refused_before_training(spoken_manifest, tiny_encodec, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no training pairs"):
        Trainer(tiny_args(empty, tmp_path / "o"), codec=tiny_encodec)
    with pytest.raises(ValueError, match="does not exist"):
        Trainer(tiny_args(tmp_path / "nope.jsonl", tmp_path / "o"), codec=tiny_encodec)
    broken = tmp_path / "corpus"
    shutil.copytree(spoken_manifest.parent, broken)
    (broken / "prompts" / "greet-en-us.wav").unlink()
    with pytest.raises(ValueError, match="greet-en-us.wav.*does not exist"):
        Trainer(tiny_args(broken / "manifest.jsonl", tmp_path / "o"), codec=tiny_encodec)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        Trainer(tiny_args(spoken_manifest, tmp_path / "o", "--filter", "accent"), codec=tiny_encodec)
    other = save_checkpoint(tmp_path / "wq", S2SModel(ModelConfig(d_model=16, n_head=2, n_layer=1, d_ff=16)),
                            {"name": "world_vq", "params": {"version": 1}})
    with pytest.raises(ValueError, match="trained with codec world_vq"):
        Trainer(tiny_args(spoken_manifest, tmp_path / "o", "--init", str(other)), codec=tiny_encodec)
    with pytest.raises(ValueError, match="--resume: no checkpoint"):
        Trainer(tiny_args(spoken_manifest, tmp_path / "o", "--resume"), codec=tiny_encodec)


def test_learning_rate_schedule():
    args = parse_args(["--data", "x", "--out", "y", "--lr", "1.0", "--warmup", "10", "--steps", "110",
                       "--min-lr-ratio", "0.1"])
    assert lr_at(0, args) == pytest.approx(0.1)
    assert lr_at(9, args) == pytest.approx(1.0)
    assert lr_at(60, args) == pytest.approx(0.55)
    assert lr_at(110, args) == pytest.approx(0.1)


@pytest.mark.slow
def test_ddp_two_gloo_processes(spoken_manifest, tiny_encodec, tmp_path):
    """torchrun with 2 CPU processes (gloo); the codec is the small EnCodec saved to a folder."""
    weights = tmp_path / "encodec"
    tiny_encodec.model.save_pretrained(weights)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "s2s.train", "--data", str(spoken_manifest), "--out", str(out), "--codec", "encodec_24khz",
           "--steps", "4", "--batch-frames", "300", "--check-every", "0", "--workers", "1",
           "--threads", "1", "--warmup", "1"]
    env = {**__import__("os").environ, "S2S_ENCODEC_PATH": str(weights), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _, config = load_checkpoint(out)
    assert config["training"]["world_size"] == 2
    assert config["training"]["steps"] == 4
    assert json.loads(done.stdout.strip().splitlines()[-1])["step"] == 4


@pytest.mark.slow
def test_spoken_check_scores_replies_with_whisper(spoken_manifest, tiny_encodec, tmp_path):
    trainer = Trainer(tiny_args(spoken_manifest, tmp_path / "c", "--steps", "1", "--check-n", "2"),
                      codec=tiny_encodec)
    check = trainer.spoken_check()
    assert check["check_n"] == 2  # the two eval_voices prompts
    assert check["check_wer"] >= 0.5  # an untrained model does not say the answers
    assert 0.0 <= check["check_answer_accuracy"] <= 1.0
    assert trainer.model.training  # back in training mode afterwards
