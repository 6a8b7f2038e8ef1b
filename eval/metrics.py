"""Objective metrics for spoken replies: MCD, log-F0 RMSE and Whisper-normalised WER.

Pure functions over arrays and strings; every result carries the parameters that made it,
so a report can print them beside the number.

    from eval.metrics import mcd, log_f0_rmse, wer
    r = mcd(ref, gen, 24000)            # McdResult(mcd=..., n_frames=..., params={...}); float(r) works
    f = log_f0_rmse(ref, gen, 24000)    # F0Result(rmse=..., rmse_cents=..., vuv_error=..., n_frames=...)
    w = wer(hyps, refs)                 # WerResult(wer=..., mean_utterance_wer=..., substitutions=...)

Definitions (defaults; see MCD_PARAMS / F0_PARAMS):
- MCD as in VERSA's mcd_f0 (from ESPnet / S3PRL-VC), analysed at 24 kHz: [-1, 1] audio scaled
  to the int16 range, a 70 Hz low-cut FIR (255 taps), WORLD harvest F0 (40-800 Hz) at a 5 ms
  frame period, CheapTrick with FFT size 1024, mel-cepstrum order 39, alpha 0.466 (pysptk
  sp2mc), c0 included. Frames below -20 dB normalised power are dropped, the rest aligned by
  fastdtw (Euclidean on mel-cepstra); per-frame 10/ln10 * sqrt(2 * sum_d (c_d - c'_d)^2),
  averaged over the aligned pairs. dtw=None truncates to the shorter signal instead (and,
  like VERSA, refuses lengths that differ by more than seq_mismatch_tolerance).
- log-F0 RMSE as in ESPnet's evaluate_f0: the same WORLD analysis, fastdtw on the full
  mel-cepstra (no silence dropping), frames voiced in both signals, RMSE of ln F0; also in
  cents (x 1200/ln 2); vuv_error is the fraction of aligned frames whose voicing disagrees.
- WER: Whisper-normalised word error rate, defined in s2s/asr/wer.py (training's spoken check
  scores with it too) and re-exported here with WerResult and normalise_text.

The WORLD analysis (harvest is the slow part, ~1.3 s per 3 s clip) is memoised by content,
so mcd() and log_f0_rmse() on the same pair analyse each signal once, and a reference reused
across checkpoints is analysed once per process.

Run the checks: python -m pytest -q tests/test_metrics.py
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from s2s.asr.wer import WerResult, normalise_text, wer

__all__ = ["F0_PARAMS", "MCD_PARAMS", "F0Result", "McdResult", "WerResult", "clear_cache", "exact_dtw",
           "log_f0_rmse", "mcd", "normalise_text", "wer"]

DTW_METHODS = ("fastdtw", "exact", None)
F0_METHODS = ("harvest", "dio")
# "sp2mc": pysptk.sp2mc on the CheapTrick power spectrum (VERSA / ESPnet).
# "sptk-mcep": pysptk.mcep(sp, maxiter=0, etype=1, eps=1e-8, itype=3), pymcd's estimator.
MCEP_METHODS = ("sp2mc", "sptk-mcep")
_CACHE_SIZE = 128  # analyses kept (LRU) ...
_CACHE_MAX_FRAMES = 200_000  # ... and at most this many frames in all (~70 MB at order 39)
_EXACT_DTW_MAX_CELLS = 40_000_000  # ~320 MB of float64 cost matrix


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class McdResult:
    mcd: float  # dB, mean over aligned frame pairs
    n_frames: int  # aligned frame pairs averaged over
    params: dict = field(repr=False)

    def __float__(self) -> float:
        return self.mcd


@dataclass(frozen=True)
class F0Result:
    rmse: float  # RMSE of natural-log F0 over frames voiced in both; nan if there are none
    rmse_cents: float  # the same in cents
    vuv_error: float  # fraction of aligned frames whose voiced/unvoiced decision differs
    n_frames: int  # aligned frames voiced in both (the RMSE's denominator)
    n_aligned: int  # all aligned frame pairs (vuv_error's denominator)
    params: dict = field(repr=False)

    def __float__(self) -> float:
        return self.rmse


# ----------------------------------------------------------------------------- input checks


def _as_wave(x: Any, name: str) -> np.ndarray:
    """1-D float array (numpy or torch, any float dtype) -> float64 numpy [T]; ValueError if bad."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D waveform [T], got shape {tuple(x.shape)}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a float waveform in [-1, 1], got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf samples")
    if not np.any(x):
        raise ValueError(f"{name} is all zeros (digital silence): nothing to analyse")
    return x


def _check_sr(sr: Any, name: str = "sr") -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"{name} must be a positive int (Hz), got {sr!r}")
    return int(sr)


def _check_choice(value: Any, name: str, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(allowed)}")


# ----------------------------------------------------------------------------- WORLD analysis


@dataclass(frozen=True)
class _Analysis:
    sample_rate: int | None
    int16_scale: bool
    lowcut_hz: float | None
    f0_method: str
    f0_floor: float
    f0_ceil: float
    frame_period_ms: float
    fft_size: int
    order: int
    alpha: float
    mcep_method: str

    def check(self) -> None:
        if self.sample_rate is not None:
            _check_sr(self.sample_rate, "sample_rate")
        _check_choice(self.f0_method, "f0_method", F0_METHODS)
        _check_choice(self.mcep_method, "mcep_method", MCEP_METHODS)
        if not 0 < self.f0_floor < self.f0_ceil:
            raise ValueError(f"need 0 < f0_floor < f0_ceil, got {self.f0_floor}, {self.f0_ceil}")
        if self.frame_period_ms <= 0:
            raise ValueError(f"frame_period_ms must be > 0, got {self.frame_period_ms}")
        if self.fft_size <= 0 or self.fft_size & (self.fft_size - 1):
            raise ValueError(f"fft_size must be a power of two, got {self.fft_size}")
        if not 0 < self.order < self.fft_size // 2:
            raise ValueError(f"order must be in 1..{self.fft_size // 2 - 1}, got {self.order}")
        if not -1 < self.alpha < 1:
            raise ValueError(f"alpha must be in (-1, 1), got {self.alpha}")
        if self.lowcut_hz is not None and self.lowcut_hz <= 0:
            raise ValueError(f"lowcut_hz must be > 0 or None, got {self.lowcut_hz}")


@dataclass(frozen=True)
class _Features:
    mcep: np.ndarray  # [T, order + 1] mel-cepstrum, c0 first
    f0: np.ndarray  # [T] Hz, 0 where unvoiced
    npow: np.ndarray  # [T] frame power in dB relative to the utterance mean


_feature_cache: "OrderedDict[tuple, _Features]" = OrderedDict()


def _extract(x: np.ndarray, sr: int, a: _Analysis) -> _Features:
    import pysptk
    import pyworld as pw

    fs = sr
    if a.sample_rate is not None and sr != a.sample_rate:
        import soxr

        x = soxr.resample(x, sr, a.sample_rate, quality="HQ").astype(np.float64)
        fs = a.sample_rate
    if a.int16_scale:  # VERSA / ESPnet analyse int16-range samples
        x = x * np.iinfo(np.int16).max
    if a.lowcut_hz is not None:  # VERSA's low_cut_filter: 255-tap FIR high-pass
        from scipy.signal import firwin, lfilter

        if a.lowcut_hz >= fs // 2:
            raise ValueError(f"lowcut_hz={a.lowcut_hz} must be below Nyquist ({fs // 2} Hz)")
        x = lfilter(firwin(255, a.lowcut_hz / (fs // 2), pass_zero=False), 1, x)
    x = np.ascontiguousarray(x, dtype=np.float64)
    if a.f0_method == "harvest":
        f0, t = pw.harvest(x, fs, f0_floor=a.f0_floor, f0_ceil=a.f0_ceil, frame_period=a.frame_period_ms)
    else:  # dio + stonemask, as pyworld.wav2world (pymcd) does
        f0, t = pw.dio(x, fs, f0_floor=a.f0_floor, f0_ceil=a.f0_ceil, frame_period=a.frame_period_ms)
        f0 = pw.stonemask(x, f0, t, fs)
    sp = pw.cheaptrick(x, f0, t, fs, fft_size=a.fft_size)  # [T, fft_size/2 + 1] power
    if a.mcep_method == "sp2mc":  # = pysptk.sp2mc(sp, a.order, a.alpha), all frames in one product
        mcep = np.log(sp) @ _sp2mc_map(sp.shape[1], a.order, a.alpha)
    else:
        mcep = pysptk.mcep(sp, order=a.order, alpha=a.alpha, maxiter=0, etype=1, eps=1e-8,
                           min_det=0.0, itype=3)
    # frame power from the one-sided power spectrum (ESPnet's _spvec2pow), then dB vs the mean
    power = (sp[:, 0] + sp[:, -1] + 2.0 * sp[:, 1:-1].sum(axis=1)) / (2 * (sp.shape[1] - 1))
    with np.errstate(divide="ignore"):
        npow = 10.0 * np.log10(power / power.mean())
    return _Features(mcep=np.asarray(mcep, dtype=np.float64), f0=np.asarray(f0), npow=npow)


@functools.lru_cache(maxsize=8)
def _sp2mc_map(n_bins: int, order: int, alpha: float) -> np.ndarray:
    """pysptk.sp2mc is linear in the log power spectrum (irfft, then the freqt all-pass warp):
    its [n_bins, order + 1] matrix, so a clip's frames convert in one product instead of one
    Python-level call per frame (a quarter of the analysis time, measured)."""
    import pysptk

    return np.asarray(pysptk.sp2mc(np.exp(np.eye(n_bins)), order, alpha), dtype=np.float64)


def _euclidean(u: np.ndarray, v: np.ndarray) -> float:
    """scipy.spatial.distance.euclidean without its per-call input checks (fastdtw calls it
    once per cell of its window: ~7000 times per clip pair)."""
    d = u - v
    return math.sqrt(np.dot(d, d))


def _features(x: np.ndarray, sr: int, a: _Analysis) -> _Features:
    """_extract, memoised on (content hash, sr, analysis parameters); LRU, bounded in count and frames."""
    key = (hashlib.blake2b(x.tobytes(), digest_size=16).hexdigest(), x.size, sr, a)
    hit = _feature_cache.get(key)
    if hit is not None:
        _feature_cache.move_to_end(key)
        return hit
    feats = _extract(x, sr, a)
    _feature_cache[key] = feats
    while len(_feature_cache) > _CACHE_SIZE or (
            len(_feature_cache) > 1 and sum(len(f.f0) for f in _feature_cache.values()) > _CACHE_MAX_FRAMES):
        _feature_cache.popitem(last=False)
    return feats


def clear_cache() -> None:
    """Forget memoised WORLD analyses (e.g. to time the analysis itself)."""
    _feature_cache.clear()


# ----------------------------------------------------------------------------- DTW


def exact_dtw(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact DTW with Euclidean frame distance; steps (1,0), (0,1), (1,1) of weight 1.

    a: [Ta, D], b: [Tb, D] -> index arrays (ia, ib) of the optimal path, from (0, 0) to
    (Ta-1, Tb-1). The recursion runs over anti-diagonals so each step is one numpy op.
    """
    from scipy.spatial.distance import cdist

    ta, tb = len(a), len(b)
    if ta * tb > _EXACT_DTW_MAX_CELLS:
        raise ValueError(f"exact DTW of {ta} x {tb} frames is too large; use dtw='fastdtw'")
    cost = cdist(a, b)  # [Ta, Tb]
    acc = np.full((ta + 1, tb + 1), np.inf)
    acc[0, 0] = 0.0
    for s in range(2, ta + tb + 1):  # s = i + j in 1-based accumulated coordinates
        i = np.arange(max(1, s - tb), min(ta, s - 1) + 1)
        j = s - i
        acc[i, j] = cost[i - 1, j - 1] + np.minimum(np.minimum(acc[i - 1, j], acc[i, j - 1]), acc[i - 1, j - 1])
    i, j, path = ta, tb, []
    while (i, j) != (0, 0):
        path.append((i - 1, j - 1))
        steps = ((acc[i - 1, j - 1], i - 1, j - 1), (acc[i - 1, j], i - 1, j), (acc[i, j - 1], i, j - 1))
        _, i, j = min(steps, key=lambda c: c[0])  # ties prefer the diagonal
    path.reverse()
    ia, ib = np.array(path).T
    return ia, ib


def _align(a: np.ndarray, b: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method == "exact":
        return exact_dtw(a, b)
    from fastdtw import fastdtw

    _, path = fastdtw(a, b, dist=_euclidean)  # radius 1, Euclidean, as VERSA / ESPnet / pymcd call it
    ia, ib = np.array(path).T
    return ia, ib


def _truncate(n_ref: int, n_gen: int, tolerance: float) -> int:
    n = min(n_ref, n_gen)
    mismatch = (n_ref + n_gen - 2 * n) / (n_ref + n_gen)
    if mismatch >= tolerance:
        raise ValueError(
            f"dtw=None compares frame by frame but ref has {n_ref} frames and gen {n_gen} "
            f"(mismatch {mismatch:.3f} >= seq_mismatch_tolerance {tolerance}); use dtw='fastdtw'")
    return n


# ----------------------------------------------------------------------------- MCD

_LOG_SPEC_DB = 10.0 / math.log(10.0)


def mcd(
    ref: Any,
    gen: Any,
    sr: int,
    *,
    sample_rate: int | None = 24000,
    int16_scale: bool = True,
    lowcut_hz: float | None = 70.0,
    f0_method: str = "harvest",
    f0_floor: float = 40.0,
    f0_ceil: float = 800.0,
    frame_period_ms: float = 5.0,
    fft_size: int = 1024,
    order: int = 39,
    alpha: float = 0.466,
    mcep_method: str = "sp2mc",
    include_c0: bool = True,
    power_threshold_db: float | None = -20.0,
    dtw: str | None = "fastdtw",
    dtw_skip_c0: bool = False,
    seq_mismatch_tolerance: float = 0.1,
) -> McdResult:
    """Mel-cepstral distortion (dB) of gen against ref, both 1-D float waveforms at rate sr.

    sample_rate: analysis rate both signals are resampled to (soxr HQ); None = analyse at sr.
    power_threshold_db: with DTW, drop frames at or below this normalised power first (None = keep all).
    dtw: "fastdtw" (radius 1), "exact", or None = frame by frame, truncated to the shorter.
    dtw_skip_c0: align on c1.. only (pymcd does); the distance still follows include_c0.
    """
    params = _params(mcd, locals())
    ref_x, gen_x, sr = _as_wave(ref, "ref"), _as_wave(gen, "gen"), _check_sr(sr)
    analysis = _analysis(params)
    _check_choice(dtw, "dtw", DTW_METHODS)
    fr, fg = _features(ref_x, sr, analysis), _features(gen_x, sr, analysis)
    cr, cg = (fr.mcep, fg.mcep) if include_c0 else (fr.mcep[:, 1:], fg.mcep[:, 1:])
    if dtw is None:
        n = _truncate(len(cr), len(cg), seq_mismatch_tolerance)
        a, b = cg[:n], cr[:n]
    else:
        if power_threshold_db is not None:
            cr, cg = cr[fr.npow > power_threshold_db], cg[fg.npow > power_threshold_db]
            for name, c in (("ref", cr), ("gen", cg)):
                if len(c) == 0:
                    raise ValueError(f"{name} has no frames above power_threshold_db={power_threshold_db}")
        k = 1 if (dtw_skip_c0 and include_c0) else 0
        ig, ir = _align(cg[:, k:], cr[:, k:], dtw)
        a, b = cg[ig], cr[ir]
    per_frame = _LOG_SPEC_DB * np.sqrt(2.0 * np.sum((a - b) ** 2, axis=1))  # [N]
    return McdResult(mcd=float(per_frame.mean()), n_frames=int(len(per_frame)), params=params)


# ----------------------------------------------------------------------------- log-F0 RMSE


def log_f0_rmse(
    ref: Any,
    gen: Any,
    sr: int,
    *,
    sample_rate: int | None = 24000,
    int16_scale: bool = True,
    lowcut_hz: float | None = 70.0,
    f0_method: str = "harvest",
    f0_floor: float = 40.0,
    f0_ceil: float = 800.0,
    frame_period_ms: float = 5.0,
    fft_size: int = 1024,
    order: int = 39,
    alpha: float = 0.466,
    mcep_method: str = "sp2mc",
    dtw: str | None = "fastdtw",
    seq_mismatch_tolerance: float = 0.1,
) -> F0Result:
    """RMSE of ln F0 over frames voiced in both, after DTW on the full mel-cepstra.

    The analysis parameters default to mcd()'s, so both metrics on one pair share one WORLD
    analysis per signal. dtw=None compares frame by frame, truncated to the shorter.
    """
    params = _params(log_f0_rmse, locals())
    ref_x, gen_x, sr = _as_wave(ref, "ref"), _as_wave(gen, "gen"), _check_sr(sr)
    analysis = _analysis(params)
    _check_choice(dtw, "dtw", DTW_METHODS)
    fr, fg = _features(ref_x, sr, analysis), _features(gen_x, sr, analysis)
    if dtw is None:
        n = _truncate(len(fr.f0), len(fg.f0), seq_mismatch_tolerance)
        f0g, f0r = fg.f0[:n], fr.f0[:n]
    else:
        ig, ir = _align(fg.mcep, fr.mcep, dtw)
        f0g, f0r = fg.f0[ig], fr.f0[ir]
    voiced_g, voiced_r = f0g > 0, f0r > 0
    both = voiced_g & voiced_r
    if both.any():
        rmse = float(np.sqrt(np.mean((np.log(f0g[both]) - np.log(f0r[both])) ** 2)))
    else:
        rmse = float("nan")
    return F0Result(
        rmse=rmse,
        rmse_cents=rmse * 1200.0 / math.log(2.0),
        vuv_error=float(np.mean(voiced_g != voiced_r)),
        n_frames=int(both.sum()),
        n_aligned=int(len(f0g)),
        params=params,
    )


def _params(fn, local_vars: dict) -> dict:
    names = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    return {k: local_vars[k] for k in names}


def _analysis(params: dict) -> _Analysis:
    a = _Analysis(**{k: params[k] for k in _Analysis.__dataclass_fields__})
    a.check()
    return a


def _defaults(fn) -> dict:
    return {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}


MCD_PARAMS: dict = _defaults(mcd)  # the definition used when no override is given
F0_PARAMS: dict = _defaults(log_f0_rmse)
