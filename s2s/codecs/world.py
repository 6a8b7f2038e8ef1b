"""WORLD vocoder analysis and synthesis at the codec's frame grid (24 kHz, 320-sample hop = 75 frames/s).

    feats = analyse(x)                              # 24 kHz mono [T] -> Features (f0, mc, bap) of F frames
    y = synthesise(feats.f0, feats.mc, feats.bap)   # -> float32 [F * 320]

Frames: the 24 kHz signal is zero-padded to F * 320 samples, F = ceil(T / 320); frame i is
analysed at sample i * 320 (voicing from pyworld dio + stonemask, F0 values from YIN, then
CheapTrick envelope and D4C aperiodicity at that F0, 13.333 ms hop) and synthesise() renders
exactly F * 320 samples from F frames.
Envelopes are floored FLOOR_DB below the utterance's loudest frame (so empty bands of
band-limited input, e.g. 16 kHz recordings, and digital silence look alike) and turned into a
39th-order mel-cepstrum (alpha 0.466) by the linear map pysptk.sp2mc applies. The WORLD-VQ
codec (s2s/codecs/world_vq.py) quantises these features.

Why YIN for the F0 values: on the assistant's voice (Piper joe, ~90-100 Hz by librosa pyin and
autocorrelation) dio + stonemask reads ~170-180 Hz (a median +10.8 semitones over the 50
reference answers, whatever its ceiling), so every reply came out ~11 semitones too high;
harvest is right on some answers and off by 3-12 semitones on others, at 10x the cost. YIN
(librosa, trough threshold 0.1) inside dio's voicing, moved down by octaves where it is more than
1.25x dio's reading (YIN's own slips go up: `fun_fact` read 619 Hz) and where one frame jumps an
octave from its neighbours: median -0.2 semitones against pyin, 78% of the answers within 1
semitone, 87% within 2, worst +7.9, at dio's cost; on espeak-ng voices (78-260 Hz) it agrees
with dio and pyin within ~1 semitone (measured 2026-12-06, `python -m eval.codec_f0`).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

with warnings.catch_warnings():  # pyworld/pysptk import pkg_resources (deprecated)
    warnings.simplefilter("ignore")
    import pysptk
    import pyworld

SAMPLE_RATE = 24000
HOP = 320  # samples per frame: 75 frames/s
FRAME_PERIOD_MS = HOP * 1000.0 / SAMPLE_RATE  # 13.333 ms
FFT_SIZE = 1024
ORDER = 39  # mel-cepstrum c0..c39
ALPHA = 0.466  # all-pass constant for 24 kHz (pysptk.util.mcepalpha(24000))
FLOOR_DB = 70.0  # envelope floor below the loudest frame's mean power
N_BAP = 3  # pyworld.get_num_aperiodicities(24000)
F0_MIN, F0_MAX = 50.0, 800.0  # range of the F0 bins (and of the dio and YIN searches)
YIN_FRAME = 1024  # YIN window at 24 kHz (42.7 ms): its half must exceed the longest period, 480 samples
YIN_TROUGH = 0.1  # YIN's absolute threshold (librosa's default)


@functools.lru_cache(maxsize=None)
def _mcep_maps() -> tuple[np.ndarray, np.ndarray]:
    """sp2mc and mc2sp are linear in the log spectrum: [513, 40] and [40, 513] matrices.

    One matmul instead of a per-frame frequency warp (identical to pysptk to 1e-13).
    """
    n = FFT_SIZE // 2 + 1
    to_mc = pysptk.sp2mc(np.exp(np.eye(n)), ORDER, ALPHA)  # rows: log-spectrum basis -> mc
    to_log_sp = np.log(pysptk.mc2sp(np.eye(ORDER + 1), ALPHA, FFT_SIZE))
    return to_mc, to_log_sp


def n_frames(n_samples: int) -> int:
    """Frames for a 24 kHz signal of n_samples: ceil(n_samples / 320), at least 1."""
    return max(1, -(-int(n_samples) // HOP))


@dataclass
class Features:
    f0: np.ndarray  # [F] Hz, 0 = unvoiced
    mc: np.ndarray  # [F, 40] mel-cepstrum
    bap: np.ndarray  # [F, 3] band aperiodicity, dB (<= 0)


def analyse(x: np.ndarray) -> Features:
    """24 kHz mono [T] -> WORLD features for F = ceil(T / 320) frames (frame i at sample i * 320)."""
    F = n_frames(len(x))
    xp = np.zeros(F * HOP, dtype=np.float64)
    xp[: len(x)] = x
    f0, t = pyworld.dio(xp, SAMPLE_RATE, f0_floor=F0_MIN, f0_ceil=F0_MAX, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(xp, f0, t, SAMPLE_RATE)
    voiced = f0 > 0  # dio says where, YIN how high, never far above dio (whose slips are an octave up)
    f0 = np.where(voiced, fold_octaves(below(yin_f0(xp, len(f0)), 1.25 * f0), voiced), 0.0)
    sp = pyworld.cheaptrick(xp, f0, t, SAMPLE_RATE, fft_size=FFT_SIZE)
    ap = pyworld.d4c(xp, f0, t, SAMPLE_RATE, fft_size=FFT_SIZE)
    f0, sp, ap = f0[:F], sp[:F], ap[:F]  # dio gives F + 1 frames (0 .. F * HOP)
    power_db = 10.0 * np.log10(sp.mean(axis=1) + 1e-30)
    floor = 10.0 ** ((power_db.max() - FLOOR_DB) / 10.0)
    mc = np.log(np.maximum(sp, floor)) @ _mcep_maps()[0]
    bap = pyworld.code_aperiodicity(ap, SAMPLE_RATE)
    bap[f0 <= 0] = 0.0  # WORLD ignores aperiodicity in unvoiced frames: do not spend codes on it
    return Features(f0=f0, mc=mc, bap=bap)


def yin_f0(xp: np.ndarray, n: int) -> np.ndarray:
    """YIN F0 (Hz) at frames i * 320 of a 24 kHz signal [T] -> [n] (edge-padded; YIN always answers)."""
    import librosa  # imported here: only analysis needs it, and it is slow to import

    f0 = librosa.yin(xp, fmin=F0_MIN, fmax=F0_MAX, sr=SAMPLE_RATE, frame_length=YIN_FRAME,
                     hop_length=HOP, center=True, trough_threshold=YIN_TROUGH)
    return f0[:n] if len(f0) >= n else np.pad(f0, (0, n - len(f0)), mode="edge")


def below(f0: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """f0 moved down by whole octaves until it is at most `ceiling` (where the ceiling is > 0)."""
    ratio = np.divide(f0, ceiling, out=np.zeros(np.shape(f0)), where=ceiling > 0)
    k = np.ceil(np.log2(np.maximum(ratio, 1e-12)))
    return f0 / 2.0 ** np.maximum(k, 0.0)


def fold_octaves(f0: np.ndarray, voiced: np.ndarray, width: int = 9) -> np.ndarray:
    """Move single-frame octave jumps back: each voiced frame by the power of 2 that brings it
    nearest the median of its `width` voiced neighbours (YIN slips an octave on ~1% of frames)."""
    from scipy.ndimage import median_filter

    out = np.array(f0, dtype=np.float64)
    v = np.flatnonzero(voiced)
    if len(v) >= 3:
        log_f0 = np.log2(out[v])
        local = median_filter(log_f0, size=min(width, len(v)), mode="nearest")
        out[v] = 2.0 ** (log_f0 - np.round(log_f0 - local))
    return out


# WORLD synthesis (Morise's synthesis.cpp) re-done in numpy, float32, batched over pulses, with
# two changes that make the output of a frame depend only on nearby codes: a voiced run's
# pulse train starts at the run's onset (WORLD carries one phase through the whole file,
# unvoiced stretches included), and unvoiced noise is cut on a fixed 80-sample grid from a
# fixed noise table at offsets derived from the frame's codes (WORLD draws from one global
# random stream). Decoding from any unvoiced frame on therefore gives the same samples as
# decoding from the start, which is what makes streaming equal to one-shot decoding.
UV_STEP = 80  # unvoiced noise segments (3.3 ms; divides HOP so the grid is window-invariant)


@functools.lru_cache(maxsize=None)
def _noise_table() -> np.ndarray:
    return np.random.RandomState(0).standard_normal(1 << 16).astype(np.float32)  # RandomState: frozen stream


@functools.lru_cache(maxsize=None)
def _dc_remover() -> np.ndarray:
    i = np.arange(FFT_SIZE // 2)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * (i + 1.0) / (1.0 + FFT_SIZE))
    w = w / (2.0 * w.sum())
    return np.concatenate([w, w[::-1]]).astype(np.float32)


def _cexp(z: np.ndarray) -> np.ndarray:
    """exp of a complex64 array; ~7x faster than np.exp on complex (which skips SIMD)."""
    out = np.empty(z.shape, np.complex64)
    m = np.exp(z.real)
    out.real, out.imag = m * np.cos(z.imag), m * np.sin(z.imag)
    return out


def _min_phase(log_amp: np.ndarray) -> np.ndarray:
    """log amplitude [P, 513] -> minimum-phase spectrum [P, 513] (folded real cepstrum)."""
    c = np.fft.irfft(log_amp.astype(np.float32), n=FFT_SIZE, axis=1)
    c[:, 1 : FFT_SIZE // 2] *= 2.0
    c[:, FFT_SIZE // 2 + 1 :] = 0.0
    return _cexp(np.fft.rfft(c, axis=1))


def _pulses(f0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f0 [F] -> pulse sample index [P], fractional delay [P] (samples), voiced [P] (sorted by index)."""
    F = len(f0)
    t = np.arange(F * HOP) / HOP
    i0 = np.minimum(t.astype(np.int64), F - 1)
    i1 = np.minimum(i0 + 1, F - 1)
    w = t - i0
    voiced = (1.0 - w) * (f0[i0] > 0) + w * (f0[i1] > 0) > 0.5  # WORLD's sample-wise V/UV
    a, b = np.where(f0[i0] > 0, f0[i0], f0[i1]), np.where(f0[i1] > 0, f0[i1], f0[i0])
    f0_t = (1.0 - w) * a + w * b  # [T] Hz, held across V/UV edges
    edges = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
    idx, frac = [np.arange(0, F * HOP, UV_STEP)], [np.zeros(0)]
    idx[0] = idx[0][~voiced[idx[0]]]
    frac[0] = np.zeros(len(idx[0]))
    for on, off in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        phase = np.concatenate([[0.0], np.cumsum(f0_t[on:off]) / SAMPLE_RATE])  # cycles; 0 at onset
        k = np.floor(phase)
        j = np.flatnonzero(k[1:] > k[:-1])  # a new cycle starts between samples j and j + 1
        j = j[j < off - on - 1]
        idx.append(np.concatenate([[on], on + j]))
        frac.append(np.concatenate([[0.0], (k[j + 1] - phase[j]) / (phase[j + 1] - phase[j])]))
    vflag = [np.zeros(len(idx[0]), bool)] + [np.ones(len(i), bool) for i in idx[1:]]
    idx, frac, vflag = np.concatenate(idx), np.concatenate(frac), np.concatenate(vflag)
    order = np.argsort(idx, kind="stable")
    return idx[order], frac[order], vflag[order]


def synthesise(f0: np.ndarray, mc: np.ndarray, bap: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
    """WORLD synthesis of F frames (f0 [F] Hz, mc [F, 40], bap [F, 3] dB) -> float32 [F * 320].

    seeds [F] (ints) pick each frame's noise; decode() derives them from the frame's codes.
    """
    f0 = np.asarray(f0, dtype=np.float64)
    F, T, N = len(f0), len(f0) * HOP, FFT_SIZE
    if F == 0:
        return np.zeros(0, np.float32)
    seeds = np.arange(F, dtype=np.int64) if seeds is None else np.asarray(seeds, dtype=np.int64)
    sp = np.exp(np.asarray(mc, dtype=np.float64) @ _mcep_maps()[1]).astype(np.float32)  # [F, 513] power
    ap = pyworld.decode_aperiodicity(np.ascontiguousarray(bap, dtype=np.float64), SAMPLE_RATE, N).astype(np.float32)
    idx, frac, voiced = _pulses(f0)
    length = np.diff(np.concatenate([idx, [T]]))  # samples to the next pulse
    # Envelope and aperiodicity at each pulse: linear between frames (power / amplitude), as WORLD.
    t = idx / HOP
    i0 = np.minimum(t.astype(np.int64), F - 1)
    i1 = np.minimum(i0 + 1, F - 1)
    w = (t - i0).astype(np.float32)[:, None]
    S = (1.0 - w) * sp[i0] + w * sp[i1]
    A = np.clip((1.0 - w) * ap[i0] + w * ap[i1], 0.001, 0.9999999) ** 2
    # Aperiodic part: zero-mean noise of `length` samples, coloured by the (aperiodic) envelope.
    noise = _noise_table()
    offset = (seeds[i0] * 131 + (idx - i0 * HOP) * 977) % (len(noise) - N)
    n_max = int(length.max())
    mask = np.arange(n_max)[None, :] < length[:, None]
    seg = noise[offset[:, None] + np.arange(n_max)[None, :]] * mask
    seg -= (seg.sum(axis=1) / length)[:, None] * mask
    spec = _min_phase(0.5 * np.log(np.where(voiced[:, None], S * A, S))) * np.fft.rfft(seg, n=N, axis=1)
    out = np.fft.fftshift(np.fft.irfft(spec, n=N, axis=1), axes=1)  # [P, N], pulse at N/2 - 1
    v = np.flatnonzero(voiced)
    if len(v):  # periodic part: min-phase pulse, fractional delay, DC removed, scaled as WORLD
        ph = (-2.0 * np.pi / N) * frac[v, None] * np.arange(N // 2 + 1)[None, :]
        spec = _min_phase(0.5 * np.log(S[v] * (1.0 - A[v]) + 1e-12)) * _cexp((1j * ph).astype(np.complex64))
        per = np.fft.fftshift(np.fft.irfft(spec, n=N, axis=1), axes=1) * np.sqrt(length[v]).astype(np.float32)[:, None]
        dc = per[:, N // 2 :].sum(axis=1)
        per[:, : N // 2] = 0.0
        out[v] += per - dc[:, None] * _dc_remover()[None, :]
    pos = (idx - N // 2 + 1)[:, None] + np.arange(N)[None, :]
    ok = (pos >= 0) & (pos < T)
    return np.bincount(pos[ok], weights=out[ok], minlength=T)[:T].astype(np.float32)
