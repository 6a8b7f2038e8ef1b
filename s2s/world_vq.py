"""WORLD-VQ: an offline speech codec (WORLD vocoder + k-means tables), 24 kHz, 75 frames/s, 4 x 1024.

    from s2s.world_vq import WorldVQCodec
    codec = WorldVQCodec()                 # tables from assets/world_vq/tables.npz
    codes = codec.encode(wav, sr)          # LongTensor [4, F], F = ceil(T' / 320), T' = samples at 24 kHz
    audio = codec.decode(codes)            # FloatTensor [F * 320] at 24 kHz (WORLD synthesis)

Frames: the 24 kHz signal is zero-padded to F * 320 samples, F = ceil(T' / 320); frame i is
analysed at sample i * 320 (pyworld dio + stonemask F0, CheapTrick envelope, D4C
aperiodicity, 13.333 ms hop) and decode() synthesises exactly F * 320 samples from F frames.
Envelopes are floored FLOOR_DB below the utterance's loudest frame (so empty bands of
band-limited input, e.g. 16 kHz recordings, and digital silence look alike) and turned into a
39th-order mel-cepstrum (alpha 0.466) by the linear map pysptk.sp2mc applies.

Codebooks [K=4, F] (LAYOUT; chosen over 5 measured alternatives, see DESIGN NOTES below):
    0  spectral shape: mel-cepstrum c1..c39, k-means stage 1 (1024 x 39)
    1  spectral shape: residual of stage 1, k-means stage 2 (1024 x 39)
    2  log-F0 / voicing: 0 = unvoiced, 1..1023 = log-spaced F0 bins F0_MIN..F0_MAX (no training)
    3  joint k-means of [c0 (log gain), band aperiodicity (3 bands, dB) * W_BAP, shape residual
       of stage 2] (1024 x 43): loudness, breathiness and a third shape stage share 10 bits
Taking the gain (c0) out of the shape codebooks (gain-shape VQ) keeps loudness changes from
using up shape codewords.

DESIGN NOTES (measured 2026-11 on 200 held-out-voice prompts of the corpus, Whisper tiny.en,
original WER 39.7 %; all layouts use the F0 codebook above and the same 200k training frames):
    layout (4 x 10 bits)                                      WER %   feature MCD dB
    no VQ (this analysis + synthesis, F0 bins only)            51.3    0
    A  mc c0..c39 2-stage + band aperiodicity VQ               63.9    4.99
    D  mc c0..c39 2-stage + [bap, mc residual]                 60.8    4.33   (63.5 w/o augmentation)
    Dw D with c16..c39 weighted down to 0.5                    56.4    4.35
    E  mc 3-stage + (256 F0 bins x 4 bap classes)              60.9    4.12
    G  shape c1..c39 2-stage + [c0, bap, shape residual]       56.7    4.39   <- this LAYOUT
    (G with weighted shape: 61.8 / 58.5, i.e. +-3 points is run-to-run noise here)
WORLD itself is the main loss on these espeak-ng voices: pyworld analysis/synthesis without
any quantisation already costs ~12 points at a 5 ms hop and ~14 at 13.3 ms; harvest instead
of dio changes nothing measurable (45.5 vs 46.3 %) at 10x the cost. Training copies with
16 kHz band limits, a noise floor and warped formants keep real 16 kHz speech (ARCTIC) intact.

Commands:
    python -m s2s.world_vq train --data data/corpus/manifest.jsonl --out assets/world_vq/tables.npz
    python -m s2s.world_vq quality [--data assets/eval/manifest.jsonl]    # WER / MCD / log-F0 RMSE
    python -m s2s.world_vq speed                                        # encode/decode x real time
Tests: python -m pytest -q tests/test_world_vq.py
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from s2s.codec_base import Codec, CodecUnavailable, StreamDecoder
from s2s.manifest import audio_path, read_manifest

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
F0_MIN, F0_MAX = 50.0, 800.0  # range of the F0 bins (and of the dio search)
N_CODES = 1024
F0_STEP = math.log(F0_MAX / F0_MIN) / (N_CODES - 2)  # ln-F0 width of one bin (~4.7 cents)
W_BAP = 0.163  # 1 dB of band aperiodicity weighs like 1 dB of mel-cepstral distortion
LAYOUT = "shape2+f0+gain_bap_shape3"
VERSION = 1
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TABLES = ROOT / "assets" / "world_vq" / "tables.npz"
TRAIN_COMMAND = "python -m s2s.world_vq train --data data/corpus/manifest.jsonl --out assets/world_vq/tables.npz"
# Keys of a tables file and their shapes; "config" is a JSON string of the analysis settings.
TABLE_SHAPES = {"mc0": (N_CODES, ORDER), "mc1": (N_CODES, ORDER), "cb3": (N_CODES, 1 + N_BAP + ORDER)}
ARCTIC_TEXT = "And you always want to see it in the superlative degree."


def analysis_config() -> dict:
    """Settings the tables depend on; stored in the tables file and checked on load."""
    return {"layout": LAYOUT, "sample_rate": SAMPLE_RATE, "hop": HOP, "fft_size": FFT_SIZE,
            "order": ORDER, "alpha": ALPHA, "floor_db": FLOOR_DB, "w_bap": W_BAP,
            "f0_range": [F0_MIN, F0_MAX]}


# ----------------------------------------------------------------------------- WORLD analysis


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
    sp = pyworld.cheaptrick(xp, f0, t, SAMPLE_RATE, fft_size=FFT_SIZE)
    ap = pyworld.d4c(xp, f0, t, SAMPLE_RATE, fft_size=FFT_SIZE)
    f0, sp, ap = f0[:F], sp[:F], ap[:F]  # dio gives F + 1 frames (0 .. F * HOP)
    power_db = 10.0 * np.log10(sp.mean(axis=1) + 1e-30)
    floor = 10.0 ** ((power_db.max() - FLOOR_DB) / 10.0)
    mc = np.log(np.maximum(sp, floor)) @ _mcep_maps()[0]
    bap = pyworld.code_aperiodicity(ap, SAMPLE_RATE)
    bap[f0 <= 0] = 0.0  # WORLD ignores aperiodicity in unvoiced frames: do not spend codes on it
    return Features(f0=f0, mc=mc, bap=bap)


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


def quantise_f0(f0: np.ndarray) -> np.ndarray:
    """F0 in Hz [F] -> codes [F]: 0 = unvoiced (f0 <= 0), else 1 + nearest log-spaced bin (clipped)."""
    f0 = np.asarray(f0, dtype=np.float64)
    voiced = f0 > 0
    bins = np.rint((np.log(np.where(voiced, f0, F0_MIN)) - math.log(F0_MIN)) / F0_STEP)
    return np.where(voiced, 1 + np.clip(bins, 0, N_CODES - 2), 0).astype(np.int64)


def dequantise_f0(codes: np.ndarray) -> np.ndarray:
    """Codes [F] -> F0 in Hz [F] (bin centres; 0 for code 0)."""
    c = np.asarray(codes, dtype=np.int64)
    return np.where(c > 0, F0_MIN * np.exp((c - 1) * F0_STEP), 0.0)


# ----------------------------------------------------------------------------- tables


class TablesError(CodecUnavailable, ValueError):
    """A WORLD-VQ tables file is missing or malformed; the message names the path and the fix."""


@dataclass
class Tables:
    mc0: np.ndarray  # [1024, 39] float32, stage-1 shape (c1..c39)
    mc1: np.ndarray  # [1024, 39] stage-2 shape residual
    cb3: np.ndarray  # [1024, 1 + 3 + 39] [c0, W_BAP * band aperiodicity, stage-3 shape residual]
    sha256: str
    path: str

    def __post_init__(self) -> None:
        self.norms = {k: (getattr(self, k) ** 2).sum(axis=1) for k in TABLE_SHAPES}  # for argmin


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_tables(path: str | os.PathLike | None = None) -> Tables:
    """Read and validate a tables .npz (no pickle); raises TablesError saying what is wrong."""
    path = Path(DEFAULT_TABLES if path is None else path).expanduser()
    fix = f"Train tables with: {TRAIN_COMMAND} (or pass tables=PATH to a trained file)"
    if not path.is_file():
        raise TablesError(f"WORLD-VQ tables not found: {path} does not exist. {fix}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # not a zip, truncated, or holds pickled objects
        raise TablesError(f"WORLD-VQ tables {path} are not a readable .npz ({type(e).__name__}: {e}). {fix}") from None
    missing = sorted((set(TABLE_SHAPES) | {"config"}) - set(arrays))
    if missing:
        raise TablesError(
            f"WORLD-VQ tables {path} lack key(s) {missing}; expected {sorted(TABLE_SHAPES) + ['config']}, "
            f"found {sorted(arrays)}. {fix}"
        )
    try:
        config = json.loads(str(arrays["config"]))
    except ValueError as e:
        raise TablesError(f"WORLD-VQ tables {path}: 'config' is not JSON ({e}). {fix}") from None
    want = analysis_config()
    diff = {k: (config.get(k), v) for k, v in want.items() if config.get(k) != v}
    if diff:
        raise TablesError(
            f"WORLD-VQ tables {path} were trained for other settings (key: (file, code)) {diff}. {fix}"
        )
    tables = {}
    for key, shape in TABLE_SHAPES.items():
        a = arrays[key]
        if a.shape != shape or a.dtype not in (np.float16, np.float32):
            raise TablesError(
                f"WORLD-VQ tables {path}: {key!r} must be float16/float32 of shape {shape}, "
                f"got {a.dtype} {a.shape}. {fix}"
            )
        if not np.all(np.isfinite(a)):
            raise TablesError(f"WORLD-VQ tables {path}: {key!r} holds NaN or inf. {fix}")
        tables[key] = a.astype(np.float32)
    return Tables(**tables, sha256=_sha256(path), path=str(path))


def save_tables(path: str | os.PathLike, mc0: np.ndarray, mc1: np.ndarray, cb3: np.ndarray) -> Path:
    """Write a tables .npz (float32, plus the analysis config as JSON) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, mc0=mc0.astype(np.float32), mc1=mc1.astype(np.float32),
                        cb3=cb3.astype(np.float32), config=np.array(json.dumps(analysis_config())))
    os.replace(tmp, path)
    return path


def _nearest(x: np.ndarray, table: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """x [N, D], table [1024, D] -> index [N] of the nearest codeword (squared Euclidean)."""
    return np.argmin(norms[None, :] - 2.0 * (x @ table.T), axis=1)


def features_to_codes(feat: Features, t: Tables) -> np.ndarray:
    """Features of F frames -> int64 codes [4, F]."""
    mc = feat.mc.astype(np.float32)
    shape = mc[:, 1:]
    c0 = _nearest(shape, t.mc0, t.norms["mc0"])
    r = shape - t.mc0[c0]
    c1 = _nearest(r, t.mc1, t.norms["mc1"])
    r = r - t.mc1[c1]
    z = np.concatenate([mc[:, :1], W_BAP * feat.bap.astype(np.float32), r], axis=1)
    c3 = _nearest(z, t.cb3, t.norms["cb3"])
    return np.stack([c0, c1, quantise_f0(feat.f0), c3]).astype(np.int64)


def frame_seeds(codes: np.ndarray) -> np.ndarray:
    """codes [4, F] -> [F] ints that pick each frame's noise (same codes, same noise, wherever they are)."""
    c = np.asarray(codes, dtype=np.int64)
    return ((c[0] * N_CODES + c[1]) * N_CODES + c[3]) * N_CODES + c[2]


def codes_to_features(codes: np.ndarray, t: Tables) -> Features:
    """int codes [4, F] -> Features (the codewords' sum for the mel-cepstrum)."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.int64) for c in codes)
    shape = t.mc0[c0] + t.mc1[c1] + t.cb3[c3, 1 + N_BAP :]
    mc = np.concatenate([t.cb3[c3, :1], shape], axis=1)
    bap = np.minimum(t.cb3[c3, 1 : 1 + N_BAP] / W_BAP, 0.0)
    return Features(f0=dequantise_f0(c2), mc=mc, bap=bap)


# ----------------------------------------------------------------------------- codec


class WorldVQCodec(Codec):
    """WORLD vocoder + VQ tables; see the module docstring for the frame grid and codebooks."""

    name = "world_vq"
    sample_rate = SAMPLE_RATE
    frame_rate = 75.0
    n_codebooks = 4
    cardinality = N_CODES
    # Streaming (WorldStreamDecoder): windows start at an unvoiced frame at least 2 frames
    # (> half an FFT) before the new audio; the last LOOKAHEAD frames wait for their right
    # neighbours (a pulse's response reaches 512 samples back and its length depends on
    # the next pulse). Measured: streamed == one-shot to float rounding.
    stream_context_frames = 2
    stream_lookahead_frames = 3
    stream_crossfade_ms = 2.5
    stream_max_context_frames = 150  # 2 s: longer voiced runs fall back to a crossfaded window

    def __init__(self, tables: str | os.PathLike | None = None) -> None:
        self.tables = load_tables(tables)
        self.params = {"tables": self.tables.sha256[:16], "version": VERSION}

    def encode(self, wav, sr: int) -> torch.Tensor:
        """wav [C, T] or [T] at sr -> LongTensor [4, ceil(T' / 320)], T' = samples at 24 kHz."""
        x = self._mono_at_rate(wav, sr).astype(np.float64)
        return torch.from_numpy(features_to_codes(analyse(x), self.tables))

    def decode(self, codes) -> torch.Tensor:
        """LongTensor [4, F] -> FloatTensor [F * 320] at 24 kHz; codes outside 0..1023 -> ValueError."""
        codes = self.check_codes(codes)
        if codes.shape[1] == 0:
            return torch.zeros(0)
        c = codes.numpy()
        feat = codes_to_features(c, self.tables)
        return torch.from_numpy(synthesise(feat.f0, feat.mc, feat.bap, seeds=frame_seeds(c)))

    def stream_decoder(self) -> "WorldStreamDecoder":
        return WorldStreamDecoder(self)


class WorldStreamDecoder(StreamDecoder):
    """StreamDecoder for WORLD-VQ: same push()/flush() contract, exact instead of approximate.

    The generic decoder re-decodes a fixed left context, which for WORLD restarts a voiced
    pulse train mid-run, at a different phase (on ARCTIC: 11 / 24 dB SNR against one-shot for
    5- / 15-frame pushes; this decoder: 140 dB, float rounding). Here each window starts at the
    latest unvoiced frame at least `context` frames before the new audio (synthesise()'s
    output from an unvoiced frame on does not depend on earlier frames), so the chunks
    concatenate to exactly codec.decode(all codes). Only a voiced run longer than
    `max_context` frames falls back to a fixed window, blended over `crossfade` samples.
    """

    def __init__(self, codec: WorldVQCodec, max_context_frames: int | None = None) -> None:
        self.codec = codec
        self.hop = codec.hop_length
        self.context = int(codec.stream_context_frames)
        self.lookahead = int(codec.stream_lookahead_frames)
        self.max_context = int(max_context_frames or codec.stream_max_context_frames)
        self.crossfade = int(round(codec.stream_crossfade_ms * codec.sample_rate / 1000.0))
        self._fade_in = torch.linspace(0.0, 1.0, self.crossfade + 2)[1:-1]
        self.reset()

    def _start(self, done: int) -> int:
        """First frame of the window that renders from frame `done` on."""
        limit = done - self.context
        if limit <= 0:
            return 0
        voicing = self._codes[2]
        lo = max(self._first, done - self.max_context)
        for s in range(limit, lo - 1, -1):
            if int(voicing[s - self._first]) == 0:
                return s
        return 0 if lo == 0 else lo


# ----------------------------------------------------------------------------- training


def kmeans(x: np.ndarray, k: int = N_CODES, iters: int = 15, seed: int = 0, log=print) -> np.ndarray:
    """Lloyd k-means of x [N, D] with k-means++ init on a subsample -> float32 [k, D].

    Deterministic for a seed. An empty cluster is re-seeded with the worst-fit point.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) < k:
        raise ValueError(f"k-means needs at least k={k} frames, got {len(x)}")
    rng = np.random.default_rng(seed)
    sub = x[rng.choice(len(x), min(len(x), 20 * k), replace=False)]
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = sub[rng.integers(len(sub))]
    d_min = ((sub - centres[0]) ** 2).sum(axis=1)
    for j in range(1, k):  # k-means++: next centre drawn in proportion to squared distance
        total = float(d_min.sum())  # 0 once every distinct point is a centre (duplicates)
        centres[j] = sub[rng.choice(len(sub), p=d_min / total) if total > 0 else rng.integers(len(sub))]
        d_min = np.minimum(d_min, ((sub - centres[j]) ** 2).sum(axis=1))
    for it in range(iters):
        idx, dist = np.empty(len(x), np.int64), np.empty(len(x), np.float32)
        norms = (centres**2).sum(axis=1)
        for s in range(0, len(x), 32768):  # chunks keep the [N, k] distance matrix small
            d = norms[None, :] - 2.0 * (x[s : s + 32768] @ centres.T)
            idx[s : s + 32768] = np.argmin(d, axis=1)
            dist[s : s + 32768] = d[np.arange(len(d)), idx[s : s + 32768]]
        dist += (x**2).sum(axis=1)
        count = np.bincount(idx, minlength=k)
        sums = np.stack([np.bincount(idx, weights=x[:, j], minlength=k) for j in range(x.shape[1])], axis=1)
        full = count > 0
        centres[full] = (sums[full] / count[full, None]).astype(np.float32)
        if (~full).any():
            centres[~full] = x[np.argsort(-dist)[: int((~full).sum())]]
        log(f"  k-means iter {it + 1}/{iters}: mse {float(dist.mean()):.4f}, empty {int((~full).sum())}")
    return centres


def _warp_matrix(beta: float) -> np.ndarray:
    """[40, 40] all-pass frequency warp of a mel-cepstrum (formants move by ~beta: a new 'voice')."""
    return np.stack([pysptk.freqt(np.eye(ORDER + 1)[j], ORDER, beta) for j in range(ORDER + 1)])


def _augment(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Input conditions the synthetic corpus lacks: band-limited (16 kHz) audio, a noise floor."""
    from s2s.audio import resample

    if kind == "band16k":
        return resample(resample(x.astype(np.float32), SAMPLE_RATE, 16000), 16000, SAMPLE_RATE)[: len(x)]
    if kind == "noise":
        rms = math.sqrt(float(np.mean(x**2))) + 1e-9
        return x + rng.standard_normal(len(x)) * rms * 10 ** (-rng.uniform(25.0, 45.0) / 20.0)
    raise ValueError(f"unknown augmentation {kind!r}; valid: band16k, noise")


def training_files(manifest: Path, split: str = "train") -> list[Path]:
    """Prompt and (unique) response audio of the manifest's rows in split."""
    rows = [r for r in read_manifest(manifest, check_audio=False) if r["split"] == split]
    if not rows:
        raise ValueError(f"{manifest} has no rows with split={split!r}")
    files = [audio_path(manifest, r["prompt_audio"]) for r in rows]
    files += sorted({audio_path(manifest, r["response_audio"]) for r in rows})
    return files


def collect_features(files: list[Path], max_frames: int, seed: int, augment: bool = True, log=print):
    """Analyse files in a seeded random order until max_frames -> (mc [N, 40], bap [N, 3]).

    With augment, every file also gives one altered copy (band-limited, noisy, or a
    frequency-warped mel-cepstrum, in turn).
    """
    from s2s.audio import load_audio

    rng = np.random.default_rng(seed)
    kinds = ["band16k", "noise", "warp"]
    mcs, baps, total = [], [], 0
    for n, i in enumerate(rng.permutation(len(files))):
        x = load_audio(files[i], SAMPLE_RATE).numpy().astype(np.float64)
        feats = [analyse(x)]
        if augment:
            kind = kinds[n % len(kinds)]
            if kind == "warp":
                f = feats[0]
                feats.append(Features(f0=f.f0, mc=f.mc @ _warp_matrix(rng.uniform(-0.08, 0.08)), bap=f.bap))
            else:
                feats.append(analyse(_augment(x, kind, rng)))
        for f in feats:
            mcs.append(f.mc)
            baps.append(f.bap)
            total += len(f.mc)
        if (n + 1) % 100 == 0:
            log(f"  analysed {n + 1} files, {total} frames")
        if total >= max_frames:
            break
    mc, bap = np.concatenate(mcs)[:max_frames], np.concatenate(baps)[:max_frames]
    return mc.astype(np.float32), bap.astype(np.float32)


def train_tables(mc: np.ndarray, bap: np.ndarray, iters: int = 15, seed: int = 0, log=print):
    """Residual k-means: shape stage 1, stage 2, then [c0, W_BAP * bap, shape residual] -> (mc0, mc1, cb3)."""
    log(f"stage 1 (shape c1..c39) on {len(mc)} frames")
    shape = np.ascontiguousarray(mc[:, 1:])
    mc0 = kmeans(shape, iters=iters, seed=seed, log=log)
    r = shape - mc0[_nearest(shape, mc0, (mc0**2).sum(1))]
    log("stage 2 (residual)")
    mc1 = kmeans(r, iters=iters, seed=seed + 1, log=log)
    r = r - mc1[_nearest(r, mc1, (mc1**2).sum(1))]
    log("codebook 3 (c0 + band aperiodicity + shape residual)")
    cb3 = kmeans(np.concatenate([mc[:, :1], W_BAP * bap, r], axis=1), iters=iters, seed=seed + 2, log=log)
    return mc0, mc1, cb3


def cmd_train(args) -> None:
    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", flush=True)  # noqa: E731
    files = training_files(Path(args.data), split=args.split)
    log(f"{len(files)} files in split {args.split!r} of {args.data}; analysing up to {args.max_frames} frames")
    mc, bap = collect_features(files, args.max_frames, args.seed, augment=not args.no_augment, log=log)
    mc0, mc1, cb3 = train_tables(mc, bap, iters=args.iters, seed=args.seed, log=log)
    out = save_tables(args.out, mc0, mc1, cb3)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, sha256 {_sha256(out)[:16]})")


# ----------------------------------------------------------------------------- quality / speed


def _eval_rows(manifest: Path, splits: list[str]) -> list[tuple[Path, str]]:
    rows = [(audio_path(manifest, r["prompt_audio"]), r["prompt_text"])
            for r in read_manifest(manifest, check_audio=False) if r["split"] in splits]
    if not rows:
        raise ValueError(f"{manifest} has no rows with split in {splits}")
    return rows


def _arctic_path() -> Path:
    bundled = ROOT / "assets" / "eval" / "arctic_a0007.wav"
    return bundled if bundled.is_file() else Path(pysptk.util.example_audio_file())


def score(codec: WorldVQCodec, items: list[tuple[Path, str]], asr, metrics_sr: int | None = 24000) -> dict:
    """Resynthesise each (audio, text): corpus WER of original and resynthesis, mean MCD and log-F0 RMSE."""
    from eval.metrics import log_f0_rmse, mcd, wer
    from s2s.audio import load_audio

    hyp0, hyp1, refs, mcds, f0s = [], [], [], [], []
    for path, text in items:
        x = load_audio(path, SAMPLE_RATE).numpy()
        y = codec.decode(codec.encode(x, SAMPLE_RATE)).numpy()[: len(x)]
        hyp0.append(asr.transcribe(x, SAMPLE_RATE))
        hyp1.append(asr.transcribe(y, SAMPLE_RATE))
        refs.append(text)
        opts = {}
        if metrics_sr not in (None, SAMPLE_RATE):  # band-limited reference: score its own band only
            opts = {"sample_rate": metrics_sr, "alpha": pysptk.util.mcepalpha(metrics_sr)}
        mcds.append(float(mcd(x, y, SAMPLE_RATE, **opts)))
        f0s.append(float(log_f0_rmse(x, y, SAMPLE_RATE, **opts)))
    return {"n": len(items), "wer_orig": float(wer(hyp0, refs)) * 100, "wer_resynth": float(wer(hyp1, refs)) * 100,
            "mcd": float(np.mean(mcds)), "log_f0_rmse": float(np.nanmean(f0s)), "hyps": list(zip(refs, hyp0, hyp1))}


def cmd_quality(args) -> None:
    from eval.asr import load_asr

    codec = WorldVQCodec(args.tables)
    asr = load_asr()
    splits = args.splits.split(",")
    sets = [(f"{args.data} [{args.splits}]", _eval_rows(Path(args.data), splits), 24000),
            ("CMU ARCTIC a0007 (real, 16 kHz; MCD at 16 kHz)", [(_arctic_path(), ARCTIC_TEXT)], 16000)]
    print(f"WORLD-VQ {codec.params}, ASR {getattr(asr, 'name', type(asr).__name__)}")
    print("| set | clips | WER orig % | WER resynth % | delta | MCD dB | log-F0 RMSE |")
    print("|---|---|---|---|---|---|---|")
    for name, items, msr in sets:
        r = score(codec, items, asr, metrics_sr=msr)
        print(f"| {name} | {r['n']} | {r['wer_orig']:.1f} | {r['wer_resynth']:.1f} | "
              f"{r['wer_resynth'] - r['wer_orig']:+.1f} | {r['mcd']:.2f} | {r['log_f0_rmse']:.3f} |", flush=True)
        if args.verbose:
            for ref, h0, h1 in r["hyps"]:
                print(f"    {ref!r}: orig {h0!r} / resynth {h1!r}")


def cmd_speed(args) -> None:
    from s2s.audio import load_audio

    codec = WorldVQCodec(args.tables)
    x = load_audio(_arctic_path(), SAMPLE_RATE).numpy()
    x = np.tile(x, max(1, math.ceil(args.seconds * SAMPLE_RATE / len(x))))[: int(args.seconds * SAMPLE_RATE)]
    seconds = len(x) / SAMPLE_RATE
    enc, dec = [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        codes = codec.encode(x, SAMPLE_RATE)
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        codec.decode(codes)
        dec.append(time.perf_counter() - t)
    e, d = float(np.median(enc)), float(np.median(dec))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"WORLD-VQ speed on {seconds:.1f} s of speech, median of {args.runs} runs "
          f"({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load:.1f}):")
    print(f"  encode  {e * 1000:7.1f} ms  {seconds / e:6.1f}x real time")
    print(f"  decode  {d * 1000:7.1f} ms  {seconds / d:6.1f}x real time")
    print(f"  both    {(e + d) * 1000:7.1f} ms  {seconds / (e + d):6.1f}x real time")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m s2s.world_vq", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="k-means tables from a corpus manifest's train split")
    t.add_argument("--data", default="data/corpus/manifest.jsonl")
    t.add_argument("--out", default=str(DEFAULT_TABLES))
    t.add_argument("--split", default="train")
    t.add_argument("--max-frames", type=int, default=200_000)
    t.add_argument("--iters", type=int, default=15)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-augment", action="store_true", help="skip the band-limited/noisy/warped copies")
    q = sub.add_parser("quality", help="WER / MCD / log-F0 RMSE of resynthesis on the eval set and ARCTIC")
    q.add_argument("--data", default=str(ROOT / "assets" / "eval" / "manifest.jsonl"))
    q.add_argument("--splits", default="eval_voices", help="comma-separated manifest splits (held-out voices)")
    q.add_argument("--tables", default=None)
    q.add_argument("--verbose", action="store_true", help="print every transcript")
    s = sub.add_parser("speed", help="encode/decode real-time factors")
    s.add_argument("--tables", default=None)
    s.add_argument("--seconds", type=float, default=10.0)
    s.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    {"train": cmd_train, "quality": cmd_quality, "speed": cmd_speed}[args.command](args)


if __name__ == "__main__":
    main()
