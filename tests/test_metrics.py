"""Checks of eval/metrics.py: identities, a known pitch shift, a peer implementation (pymcd),
a literal VERSA re-implementation (WER: tests/test_wer.py). Run: python -m pytest -q tests/test_metrics.py"""

import math
import shutil
import subprocess

import numpy as np
import pysptk  # imported here so the first test does not pay for the imports
import pyworld
import pytest
import soundfile as sf
from fastdtw import fastdtw
from scipy.signal import firwin, lfilter
from scipy.spatial.distance import euclidean

from eval.metrics import F0_PARAMS, MCD_PARAMS, exact_dtw, log_f0_rmse, mcd

ARCTIC = pysptk.util.example_audio_file()  # CMU ARCTIC a0007, 16 kHz, 4 s
ARCTIC_TEXT = "And you always want to see it in the superlative degree."
# pymcd 0.2.1's Calculate_MCD, expressed in our parameters (see pymcd/mcd.py: librosa load at
# 22050 Hz, pyworld.wav2world = dio + stonemask (71-800 Hz), CheapTrick fft 512, pysptk.mcep
# order 13 alpha 0.65 itype 3, fastdtw on c1.. , distance on c0..c13, no silence removal).
PYMCD_PARAMS = dict(sample_rate=None, int16_scale=False, lowcut_hz=None, f0_method="dio",
                    f0_floor=71.0, f0_ceil=800.0, frame_period_ms=5.0, fft_size=512, order=13,
                    alpha=0.65, mcep_method="sptk-mcep", include_c0=True, power_threshold_db=None,
                    dtw_skip_c0=True)


@pytest.fixture(scope="module")
def speech():
    x, sr = sf.read(ARCTIC)
    return x, sr


def harmonic_tone(hz, sr=24000, seconds=0.5):
    # harvest calls a pure sine unvoiced; nine harmonics make it a voiced, speech-like source
    t = np.arange(int(sr * seconds)) / sr
    return sum(0.3 / k * np.sin(2 * np.pi * hz * k * t) for k in range(1, 10))


def world_modified(x, sr, f0_ratio=1.0, stretch=1.0):
    f0, sp, ap = pyworld.wav2world(x, sr, frame_period=5.0)
    if stretch != 1.0:
        idx = np.round(np.linspace(0, len(f0) - 1, int(round(len(f0) * stretch)))).astype(int)
        f0, sp, ap = f0[idx], np.ascontiguousarray(sp[idx]), np.ascontiguousarray(ap[idx])
    return pyworld.synthesize(f0 * f0_ratio, sp, ap, sr, 5.0)


# ----------------------------------------------------------------------------- MCD


def test_mcd_of_a_signal_with_itself_is_zero(speech):
    x, sr = speech
    seg = x[8000:20000]
    for dtw in ("fastdtw", None):
        r = mcd(seg, seg.copy(), sr, dtw=dtw)
        assert r.mcd == 0.0 and r.n_frames > 50
    assert float(r) == r.mcd


def test_mcd_records_its_parameters(speech):
    x, sr = speech
    seg = x[8000:20000]
    assert mcd(seg, seg, sr).params == MCD_PARAMS
    r = mcd(seg, seg, sr, dtw="exact", power_threshold_db=-30.0)
    assert r.params == {**MCD_PARAMS, "dtw": "exact", "power_threshold_db": -30.0}
    assert MCD_PARAMS["sample_rate"] == 24000 and MCD_PARAMS["order"] == 39
    assert MCD_PARAMS["alpha"] == 0.466 and MCD_PARAMS["fft_size"] == 1024


def test_mcd_needs_an_explicit_sample_rate(speech):
    x, _ = speech
    with pytest.raises(TypeError):
        mcd(x, x)  # no default sample rate on purpose
    with pytest.raises(ValueError, match="sr must be a positive int"):
        mcd(x, x, 0)
    with pytest.raises(ValueError, match="sr must be a positive int"):
        log_f0_rmse(x, x, 16000.0)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(0), "ref is empty"),
        (np.array([0.1, np.nan, 0.2] * 1000), "ref contains NaN"),
        (np.zeros((2, 1000)), r"ref must be a 1-D waveform \[T\], got shape \(2, 1000\)"),
        (np.ones(1000, dtype=np.int16), "ref must be a float waveform"),
        (np.zeros(4000), "ref is all zeros"),
    ],
)
def test_bad_waveforms_are_named(bad, message):
    good = harmonic_tone(220, 16000, 0.25)
    with pytest.raises(ValueError, match=message):
        mcd(bad, good, 16000)
    with pytest.raises(ValueError, match=message.replace("ref", "gen")):
        log_f0_rmse(good, bad, 16000)


def test_bad_options_list_the_valid_ones():
    tone = harmonic_tone(220, 16000, 0.25)
    with pytest.raises(ValueError, match=r"dtw='dwt' is not valid; choose one of \['fastdtw', 'exact', None\]"):
        mcd(tone, tone, 16000, dtw="dwt")
    with pytest.raises(ValueError, match="f0_method='yin'"):
        log_f0_rmse(tone, tone, 16000, f0_method="yin")
    with pytest.raises(ValueError, match="mcep_method"):
        mcd(tone, tone, 16000, mcep_method="mfcc")


def test_frame_by_frame_mode_refuses_very_different_lengths():
    a, b = harmonic_tone(220, 16000, 0.4), harmonic_tone(220, 16000, 0.6)
    with pytest.raises(ValueError, match="seq_mismatch_tolerance"):
        mcd(a, b, 16000, dtw=None, f0_method="dio")


@pytest.mark.slow  # importing torch takes seconds
def test_torch_and_float32_inputs_give_the_numpy_result(speech):
    torch = pytest.importorskip("torch")
    x, sr = speech
    seg = x[8000:20000]
    noisy = seg + 0.01 * np.random.default_rng(0).standard_normal(len(seg))
    want = mcd(seg.astype(np.float32), noisy.astype(np.float32), sr)
    got = mcd(torch.from_numpy(seg.astype(np.float32)), torch.from_numpy(noisy.astype(np.float32)), sr)
    assert got.mcd == want.mcd and got.mcd > 1.0


def test_exact_dtw_finds_the_minimum_cost_path():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((13, 3)), rng.standard_normal((9, 3))
    cost = np.linalg.norm(a[:, None] - b[None], axis=-1)
    # naive reference: the textbook recursion, one cell at a time
    acc = np.full((14, 10), np.inf)
    acc[0, 0] = 0
    for i in range(1, 14):
        for j in range(1, 10):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    ia, ib = exact_dtw(a, b)
    assert (ia[0], ib[0]) == (0, 0) and (ia[-1], ib[-1]) == (12, 8)
    steps = np.stack([np.diff(ia), np.diff(ib)], 1)
    assert {tuple(s) for s in steps} <= {(0, 1), (1, 0), (1, 1)}
    assert cost[ia, ib].sum() == pytest.approx(acc[13, 9])
    _, path = fastdtw(a, b, dist=euclidean)
    assert cost[ia, ib].sum() <= sum(cost[i, j] for i, j in path) + 1e-12


def _versa_mcd_literal(ref, gen, fs):
    """VERSA's mcd_f0(dtw=True) MCD, written out step by step from its source."""

    def extract(x):
        x = lfilter(firwin(255, 70 / (fs // 2), pass_zero=False), 1, x * 32767)
        f0, t = pyworld.harvest(x, fs, f0_floor=40, f0_ceil=800, frame_period=5)
        sp = pyworld.cheaptrick(x, f0, t, fs, fft_size=1024)
        mc = pysptk.sp2mc(sp, 39, 0.466)
        npow = np.array([(s[0] + s[-1] + 2 * s[1:-1].sum()) / 1024 for s in sp])
        return mc[10 * np.log10(npow / npow.mean()) > -20]

    g, r = extract(gen), extract(ref)
    _, path = fastdtw(g, r, dist=euclidean)
    ig, ir = np.array(path).T
    return np.mean(10 / np.log(10) * np.sqrt(2 * np.sum((g[ig] - r[ir]) ** 2, 1)))


@pytest.mark.slow
def test_mcd_matches_a_literal_versa_reimplementation(speech):
    x, sr = speech
    import soxr

    ref = soxr.resample(x[:32000], sr, 24000, quality="HQ")
    gen = ref + 0.003 * np.random.default_rng(2).standard_normal(len(ref))
    want = _versa_mcd_literal(ref, gen, 24000)
    assert mcd(ref, gen, 24000).mcd == pytest.approx(want, rel=1e-9)


@pytest.mark.slow
def test_mcd_matches_pymcd_on_real_speech(speech, tmp_path):
    Calculate_MCD = pytest.importorskip("pymcd.mcd").Calculate_MCD
    import librosa

    x, sr = speech
    rng = np.random.default_rng(0)
    gens = {  # name -> (waveform, pymcd modes to compare)
        "noise_30db": (x + 10 ** (-30 / 20) * x.std() * rng.standard_normal(len(x)), ("plain", "dtw")),
        "noise_10db": (x + 10 ** (-10 / 20) * x.std() * rng.standard_normal(len(x)), ("plain", "dtw")),
        "world_resynth": (world_modified(x, sr)[: len(x)], ("plain", "dtw")),
        "pitch_up_slower": (world_modified(x, sr, 2 ** (200 / 1200), 1.1), ("dtw",)),
    }
    if shutil.which("espeak-ng"):
        wav = tmp_path / "espeak.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), ARCTIC_TEXT], check=True)
        gens["espeak_same_sentence"] = (sf.read(wav)[0], ("dtw",))
    ref = librosa.load(ARCTIC, sr=22050)[0]  # pymcd loads exactly this way
    seen = []
    for name, (y, modes) in gens.items():
        path = tmp_path / f"{name}.wav"
        sf.write(path, y.astype(np.float32), sr if name != "espeak_same_sentence" else 22050)
        gen = librosa.load(path, sr=22050)[0]
        for mode in modes:
            theirs = Calculate_MCD(mode).calculate_mcd(ARCTIC, str(path))
            ours = mcd(ref, gen, 22050, dtw=None if mode == "plain" else "fastdtw", **PYMCD_PARAMS).mcd
            assert ours == pytest.approx(theirs, rel=0.02), (name, mode)
            seen.append(theirs)
    assert len(set(np.round(seen, 3))) == len(seen)  # the pairs really differ


@pytest.mark.slow
def test_mcd_grows_with_degradation(speech):
    x, sr = speech
    rng = np.random.default_rng(3)
    noise = x.std() * rng.standard_normal(len(x))
    x, noise = x[:32000], noise[:32000]
    light, heavy = mcd(x, x + 0.03 * noise, sr).mcd, mcd(x, x + 0.3 * noise, sr).mcd
    assert 0 < light < heavy


# ----------------------------------------------------------------------------- log-F0 RMSE


@pytest.mark.parametrize("cents", [150.0, -300.0])
def test_log_f0_rmse_recovers_a_known_pitch_shift(cents):
    ref, gen = harmonic_tone(220.0), harmonic_tone(220.0 * 2 ** (cents / 1200))
    r = log_f0_rmse(ref, gen, 24000)
    assert r.rmse_cents == pytest.approx(abs(cents), abs=3.0)
    assert r.rmse == pytest.approx(abs(cents) / 1200 * math.log(2), abs=3.0 / 1200 * math.log(2))
    assert r.vuv_error < 0.03 and r.n_frames > 80
    assert r.params == F0_PARAMS


def test_log_f0_rmse_of_a_signal_with_itself_is_zero(speech):
    x, sr = speech
    seg = x[8000:20000]
    r = log_f0_rmse(seg, seg, sr)
    assert r.rmse == 0.0 and r.vuv_error == 0.0 and r.n_frames > 20 and r.n_aligned >= r.n_frames


def test_log_f0_rmse_is_nan_when_nothing_is_voiced_in_both():
    # harvest calls even white noise partly voiced; dio finds no voicing in this noise
    noise = 0.1 * np.random.default_rng(4).standard_normal(12000)
    r = log_f0_rmse(harmonic_tone(220.0, 24000, 0.5), noise, 24000, f0_method="dio")
    assert r.n_frames == 0 and math.isnan(r.rmse) and math.isnan(r.rmse_cents) and r.vuv_error > 0.9


def test_the_sp2mc_matrix_and_the_distance_are_pysptk_and_scipy_exactly():
    import pysptk
    from scipy.spatial.distance import euclidean

    from eval.metrics import _euclidean, _sp2mc_map

    rng = np.random.default_rng(0)
    sp = np.exp(rng.normal(size=(50, 513)))  # a power spectrogram, as CheapTrick gives
    assert np.allclose(np.log(sp) @ _sp2mc_map(513, 39, 0.466), pysptk.sp2mc(sp, 39, 0.466), rtol=0, atol=1e-12)
    u, v = rng.normal(size=40), rng.normal(size=40)
    assert _euclidean(u, v) == pytest.approx(euclidean(u, v), rel=1e-14)
