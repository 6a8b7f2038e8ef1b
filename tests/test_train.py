"""Training on a tiny real spoken manifest (espeak-ng speech, a small real EnCodec)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from s2s.data.dataset import Pair, augment_features, augment_prompt, collate, corrupt_reply_input, crop_replies
from s2s.models.checkpoint import load_checkpoint, save_checkpoint
from s2s.models.model import ModelConfig, S2SModel
from s2s.training.ranking import answer_ranking_accuracy, answer_scores
from s2s.training.flags import parse_args
from s2s.training.train import Trainer, loss_fn, lr_at

TINY = ["--preset", "10m", "--batch-frames", "2000", "--lr", "3e-3", "--warmup", "2",
        "--dropout", "0", "--check-every", "0", "--eval-every", "5", "--workers", "1", "--threads", "2"]


def tiny_args(manifest, out, *extra):
    return parse_args(["--data", str(manifest), "--out", str(out), *TINY, *extra])


@pytest.fixture(autouse=True)
def small_preset(monkeypatch):
    """The 10m preset shrunk, so a step takes milliseconds."""
    from s2s.models import model
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
    assert any("rank_eval_voices" in r for r in log)  # the answer ranking ran at validation
    _, config = load_checkpoint(out, codec=tiny_encodec.describe())
    assert config["training"]["steps"] == 40 == result["step"]
    assert config["training"]["pairs"] == 4



@pytest.mark.slow
def test_eval_every_and_save_every_zero_mean_never(spoken_manifest, tiny_encodec, tmp_path):
    out = tmp_path / "run"  # --eval-every 0 used to end in ZeroDivisionError after step 1
    result = Trainer(tiny_args(spoken_manifest, out, "--steps", "4", "--log-every", "1", "--eval-every", "0",
                               "--save-every", "0"), codec=tiny_encodec).run()
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert result["step"] == 4 and [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert not any("val_loss" in r for r in log)  # never validated
    _, config = load_checkpoint(out, codec=tiny_encodec.describe())  # saved once, at the end
    assert config["training"]["steps"] == 4


@pytest.mark.slow
def test_resume_continues_at_the_same_step_with_the_same_optimiser(spoken_manifest, tiny_encodec, tmp_path):
    straight = tmp_path / "straight"
    augment = ["--stretch", "0.15", "--mask-spans", "2", "--onset-weight", "4", "--reply-noise", "0.2",
               "--crop-frames", "6", "--crop-until", "6"]  # replayed too, across the onset -> full phase change
    Trainer(tiny_args(spoken_manifest, straight, "--steps", "8", *augment), codec=tiny_encodec).run()
    split = tmp_path / "split"
    Trainer(tiny_args(spoken_manifest, split, "--steps", "8", "--stop-after", "5", *augment), codec=tiny_encodec).run()
    resumed = Trainer(tiny_args(spoken_manifest, split, "--steps", "8", "--resume", *augment), codec=tiny_encodec)
    assert resumed.start_step == 5
    resumed.run()
    a, _ = load_checkpoint(straight)
    b, config = load_checkpoint(split)
    assert config["training"]["steps"] == 8
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


@pytest.mark.slow
def test_fine_tune_on_one_accent(spoken_manifest, tiny_encodec, tmp_path):
    base = tmp_path / "base"  # hears both the Whisper features and the codes; the fine-tune keeps that
    Trainer(tiny_args(spoken_manifest, base, "--steps", "3", "--frontend", "whisper_tiny_en+codes"),
            codec=tiny_encodec).run()
    tuned = tmp_path / "tuned"
    trainer = Trainer(tiny_args(spoken_manifest, tuned, "--steps", "3", "--init", str(base),
                                "--filter", "accent=en-us", "--lr", "1e-4"), codec=tiny_encodec)
    assert {r["accent"] for r in trainer.rows} == {"en-us"} and len(trainer.rows) == 2
    trainer.run()
    model, config = load_checkpoint(tuned)
    assert model.cfg.frontend == "whisper_tiny_en+codes" == config["frontend"]["name"]
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
    rows = [json.loads(line) for line in (broken / "manifest.jsonl").read_text().splitlines()]
    rows[2]["response_text"] = " "
    (broken / "prompts" / "greet-en-us.wav").write_bytes((spoken_manifest.parent / "prompts" / "greet-en-us.wav").read_bytes())
    (broken / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=rf"1 row\(s\) of .* have no answer .*{rows[2]['id']}"):
        Trainer(tiny_args(broken / "manifest.jsonl", tmp_path / "o"), codec=tiny_encodec)
    assert not (tmp_path / "o").exists()  # nothing written before the refusals


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
           "-m", "s2s.training.train", "--data", str(spoken_manifest), "--out", str(out), "--codec", "encodec_24khz",
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


def test_answer_ranking_follows_the_prompt():
    torch.manual_seed(0)
    card = 32
    model = S2SModel(ModelConfig(cardinality=card, d_model=32, n_head=4, n_layer=1, d_ff=64, n_encoder_layer=1))
    answers = {"greet": torch.randint(0, card, (4, 12)), "bye": torch.randint(0, card, (4, 9))}
    pairs = [Pair(f"{intent}{i}", torch.randint(0, card, (4, 10)), answers[intent], intent)
             for i in range(2) for intent in answers]
    assert answer_ranking_accuracy(model, pairs, answers, steps=1) == 0.5  # untrained: one answer for all
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        loss_fn(model, collate(pairs, card), card).backward()
        opt.step()
    assert model.training  # left as it was
    assert answer_ranking_accuracy(model, pairs, answers, steps=1) == 1.0  # step 0 alone decides
    assert answer_ranking_accuracy(model, pairs, {"greet": answers["bye"], "bye": answers["greet"]}, steps=1) == 0.0
    # A score is the teacher-forced log-likelihood per token of the answer's first steps.
    model.eval()
    scores = answer_scores(model, pairs[0], [answers["greet"], answers["bye"]], steps=100)
    assert torch.allclose(scores[0], -loss_fn(model, collate([pairs[0]], card), card), rtol=1e-4)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        answer_ranking_accuracy(model, pairs, answers, steps=0)


def test_onset_weight_is_a_weighted_mean_over_reply_tokens():
    torch.manual_seed(0)
    model = S2SModel(ModelConfig(cardinality=16, d_model=16, n_head=2, n_layer=1, d_ff=16)).eval()
    pairs = [Pair("a", torch.randint(0, 16, (4, 5)), torch.randint(0, 16, (4, 7))),
             Pair("b", torch.randint(0, 16, (4, 3)), torch.randint(0, 16, (4, 4)))]
    batch = collate(pairs, 16)
    plain = loss_fn(model, batch, 16)
    assert torch.allclose(loss_fn(model, batch, 16, onset_weight=5.0, onset_steps=100), plain)  # all weighted alike
    logits = model(batch.prompt, batch.reply_in, batch.prompt_mask)
    nll = torch.nn.functional.cross_entropy(logits.permute(0, 3, 1, 2), batch.target, reduction="none")
    real = batch.target != 17  # PAD
    weight = torch.where(torch.arange(batch.target.shape[-1]) < 3, 5.0, 1.0).expand_as(nll) * real
    expected = (nll * weight).sum() / weight.sum()
    assert torch.allclose(loss_fn(model, batch, 16, onset_weight=5.0, onset_steps=3), expected)
    assert not torch.allclose(expected, plain)


def test_prompt_augmentation_stretches_and_masks_reproducibly():
    prompt = torch.arange(400).view(4, 100) % 1024
    same = augment_prompt(prompt, 1024, 0.0, 0, torch.Generator().manual_seed(0))
    assert torch.equal(same, prompt) and same is not prompt
    lengths = set()
    for seed in range(20):
        out = augment_prompt(prompt, 1024, 0.2, 0, torch.Generator().manual_seed(seed))
        lengths.add(out.shape[1])
        assert 83 <= out.shape[1] <= 125  # 100 frames / (1 +- 0.2)
        assert torch.equal(out[1:], out[:1] + 100 * torch.arange(1, 4)[:, None])  # whole frames kept
        assert torch.all(out[0, 1:] >= out[0, :-1])  # in order: frames dropped or repeated only
    assert len(lengths) > 5
    masked = augment_prompt(prompt, 1024, 0.0, 3, torch.Generator().manual_seed(1), span_frames=8)
    changed = (masked != prompt).any(dim=0).sum()
    assert 0 < changed <= 24 and masked.max() < 1024
    again = augment_prompt(prompt, 1024, 0.0, 3, torch.Generator().manual_seed(1), span_frames=8)
    assert torch.equal(masked, again)


def test_codec_options_from_the_command_line(spoken_manifest, tmp_path):
    from s2s.training.train import codec_options
    assert codec_options(["bandwidth=6", "tables=a=b.npz", "download=True"]) == {
        "bandwidth": 6.0, "tables": "a=b.npz", "download": True}
    with pytest.raises(ValueError, match="must look like KEY=VALUE"):
        codec_options(["bandwidth"])
    args = tiny_args(spoken_manifest, tmp_path / "x", "--codec", "world_vq", "--codec-option", "tables=/nope.npz")
    with pytest.raises(ValueError, match="/nope.npz does not exist"):
        Trainer(args)
    args = tiny_args(spoken_manifest, tmp_path / "x", "--codec", "world_vq", "--codec-option", "bandwith=6")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bandwith'\] for world_vq"):
        Trainer(args)


def test_reply_noise_replaces_input_codes_only():
    pairs = [Pair(str(i), torch.randint(0, 16, (4, 5)), torch.randint(0, 16, (4, 40))) for i in range(8)]
    batch = collate(pairs, 16)
    noisy = corrupt_reply_input(batch, 16, 0.8, torch.Generator().manual_seed(0))
    assert torch.equal(noisy.target, batch.target) and torch.equal(noisy.prompt, batch.prompt)
    special = batch.reply_in >= 16  # BOS, PAD, EOS stay where they are
    assert torch.equal(noisy.reply_in[special], batch.reply_in[special])
    changed = ((noisy.reply_in != batch.reply_in) & ~special).flatten(1).sum(1) / (~special).flatten(1).sum(1)
    assert 0.2 < changed.mean() < 0.55  # levels drawn in [0, 0.8): ~0.4, 1/16 redraw the same code
    assert changed.max() - changed.min() > 0.2  # each pair its own level
    assert noisy.reply_in.max() <= batch.reply_in.max()
    assert torch.equal(corrupt_reply_input(batch, 16, 0.0, torch.Generator()).reply_in, batch.reply_in)


def test_onset_crop_keeps_the_first_steps_and_teaches_no_end():
    reply = torch.randint(0, 16, (4, 10))
    full = collate([Pair("a", None, reply, features=torch.randn(5, 3))], 16)
    cropped = collate(crop_replies([Pair("a", None, reply, features=torch.randn(5, 3))], 4), 16, max_steps=4)
    assert torch.equal(cropped.target, full.target[..., :4])
    assert torch.equal(cropped.reply_in, full.reply_in[..., :4])
    eos = 16 + 2
    assert not (cropped.target == eos).any()


def test_feature_augmentation_stretches_and_zeroes_spans():
    feats = torch.randn(50, 8) + 3.0
    same = augment_features(feats, 0.0, 0, torch.Generator().manual_seed(0))
    assert torch.equal(same, feats)
    lengths = {augment_features(feats, 0.2, 0, torch.Generator().manual_seed(s)).shape[0] for s in range(20)}
    assert min(lengths) >= 41 and max(lengths) <= 63 and len(lengths) > 3
    masked = augment_features(feats, 0.0, 3, torch.Generator().manual_seed(1), span_frames=5)
    zero_rows = (masked == 0).all(dim=1)
    assert 1 <= int(zero_rows.sum()) <= 15 and torch.equal(masked[~zero_rows], feats[~zero_rows])
