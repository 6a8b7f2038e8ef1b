"""Shared fixtures: a small real EnCodec with random codebooks, a tree of tiny checkpoints, and a
tiny spoken manifest."""

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch


@pytest.fixture(scope="session")
def tiny_encodec():
    """A real (small) EnCodec whose codebooks are random, so codes are non-trivial offline."""
    from transformers import EncodecConfig, EncodecModel

    from s2s.codecs.encodec_24khz import EncodecCodec

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(hidden_size=32, num_filters=8, num_lstm_layers=1))
    for layer in model.quantizer.layers:  # random init leaves the codebooks at zero
        layer.codebook.embed.normal_()
    return EncodecCodec(model=model, bandwidth=3.0)


def espeak(path, text, voice="en-us", pitch=50):
    subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-w", str(path), text], check=True)
    wav, sr = sf.read(path, dtype="float32")
    return len(wav) / sr


@pytest.fixture(scope="session")
def spoken_manifest(tmp_path_factory):
    """A corpus-format manifest: 2 intents x 2 voices in train, 1 eval_voices pair each."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "prompts").mkdir()
    (root / "answers").mkdir()
    intents = {"greet": ("Hello there.", "Hi, nice to meet you."),
               "bye": ("Goodbye now.", "See you later.")}
    rows = []
    for intent, (question, answer) in intents.items():
        espeak(root / "answers" / f"{intent}.wav", answer, voice="en-gb")
        for split, voice, pitch in (("train", "en-us", 40), ("train", "en-gb", 60), ("eval_voices", "en-029", 50)):
            rid = f"{intent}-{voice}"
            espeak(root / "prompts" / f"{rid}.wav", question, voice=voice, pitch=pitch)
            rows.append({"id": rid, "prompt_audio": f"prompts/{rid}.wav", "prompt_text": question,
                         "response_audio": f"answers/{intent}.wav", "response_text": answer,
                         "intent": intent, "voice": f"{voice}-p{pitch}", "accent": voice, "split": split})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "manifest.jsonl"


@pytest.fixture
def speech_like():
    def make(seconds=1.0, seed=0, sr=16000):
        rng = np.random.default_rng(seed)
        t = np.arange(int(seconds * sr)) / sr
        return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
                + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    return make


def tiny_checkpoint(path, codec, **training):
    from s2s.models.checkpoint import save_checkpoint
    from s2s.models.model import ModelConfig, S2SModel

    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, n_layer=1, n_head=2, d_ff=16, max_prompt_frames=400, max_reply_frames=40)
    return save_checkpoint(path, S2SModel(cfg), codec.describe(), training=training)


@pytest.fixture
def tree(tmp_path, tiny_encodec):
    """root/ckpts/{a, b, .hidden}, root/other/c outside the allowed roots, and symlinks."""
    root = tmp_path / "root"
    for name in ("a", "b", ".hidden"):
        tiny_checkpoint(root / "ckpts" / name, tiny_encodec)
    tiny_checkpoint(tmp_path / "other" / "c", tiny_encodec)
    (root / "ckpts" / "escape").symlink_to(tmp_path / "other" / "c", target_is_directory=True)
    (root / "ckpts" / "alias").symlink_to(root / "ckpts" / "a", target_is_directory=True)
    return root
