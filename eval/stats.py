"""Bootstrap confidence intervals, paired differences and Bradley-Terry strengths: pure functions
over numpy arrays (no files, no models), used by eval/compare.py and eval/votes.py.

    from eval.stats import bootstrap_indices, ratio_interval, paired_ratio_interval
    idx = bootstrap_indices(n=100)                      # [2000, 100] resampled utterance indices
    acc, lo, hi = ratio_interval(correct, np.ones(100), idx)      # accuracy and its 95% interval
    wer, lo, hi = ratio_interval(word_errors, ref_words, idx)     # corpus WER: resampled sums
    d, lo, hi = paired_ratio_interval(errors_b, errors_a, ref_words, idx)   # WER(b) - WER(a)

Every statistic here is a ratio of sums over utterances, sum(num) / sum(den): a mean is
sum(value * valid) / sum(valid), an accuracy sum(correct) / n, a corpus WER sum(word errors) /
sum(reference words). The bootstrap resamples utterances (not words), recomputes the ratio on
each resample and takes the 2.5 and 97.5 percentiles (the percentile method). A fixed seed makes
a report reproducible. Paired differences use the same resample indices for both sides, so the
utterance-to-utterance variation they share cancels out.

Bradley-Terry (preference votes): strengths are comparable only between models joined by
games, directly or through others; components() finds the separate pieces and
bradley_terry() fits and centres each piece on its own (nan for a model with no games).
"""

from __future__ import annotations

import math

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """[resamples, n] indices drawn with replacement from range(n); [resamples, 0] when n == 0."""
    if n < 0 or resamples < 1:
        raise ValueError(f"need n >= 0 and resamples >= 1, got n={n}, resamples={resamples}")
    return np.random.default_rng(seed).integers(0, max(n, 1), size=(resamples, n))


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` percentile interval of the finite samples; (nan, nan) when none is."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    if not samples.size:
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def _ratios(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """sum(num[i]) / sum(den[i]) for each row i of idx; nan where a resample's denominator is 0."""
    n_sum, d_sum = num[idx].sum(axis=1), den[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d_sum > 0, n_sum / np.where(d_sum > 0, d_sum, 1), np.nan)


def _check(num, den, idx) -> tuple[np.ndarray, np.ndarray]:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"num and den must be 1-D and of one length, got {num.shape} and {den.shape}")
    if idx.ndim != 2 or idx.shape[1] != num.size:
        raise ValueError(f"idx must be [resamples, {num.size}], got {list(idx.shape)}")
    return num, den


def ratio_interval(num, den, idx: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(sum(num) / sum(den), lo, hi): the point estimate and its bootstrap percentile interval.
    nan everywhere when the denominator sums to 0 (nothing was measured, e.g. an empty split)."""
    num, den = _check(num, den, idx)
    if not den.sum() > 0:
        return math.nan, math.nan, math.nan
    return (float(num.sum() / den.sum()),) + percentile_interval(_ratios(num, den, idx), level)


def paired_ratio_interval(num_b, num_a, den, idx: np.ndarray, level: float = LEVEL,
                          den_a=None) -> tuple[float, float, float]:
    """(ratio(b) - ratio(a), lo, hi) over the same utterances, each resample's indices used for
    both sides. den: the common denominator (reference words, or the utterances where both were
    measured); den_a: a's own, when it differs. Identical inputs give exactly (0, 0, 0)."""
    num_b, den_b = _check(num_b, den, idx)
    num_a, den_a = _check(num_a, den if den_a is None else den_a, idx)
    if not (den_b.sum() > 0 and den_a.sum() > 0):
        return math.nan, math.nan, math.nan
    point = float(num_b.sum() / den_b.sum() - num_a.sum() / den_a.sum())
    return (point,) + percentile_interval(_ratios(num_b, den_b, idx) - _ratios(num_a, den_a, idx), level)


def mean_inputs(values) -> tuple[np.ndarray, np.ndarray]:
    """values (nan = not measured) -> (num, den) for ratio_interval: the mean of the finite ones."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    return np.where(ok, v, 0.0), ok.astype(float)


# ----------------------------------------------------------------------------- preference votes


def components(wins: np.ndarray) -> list[np.ndarray]:
    """The separate pieces of the comparison graph of a [M, M] wins matrix (i and j joined when
    they met, in either order): index arrays, ordered by their first model; a model that never
    played is a piece of its own."""
    met = (np.asarray(wins) + np.asarray(wins).T) > 0
    piece = -np.ones(len(met), dtype=int)
    for start in range(len(met)):
        if piece[start] >= 0:
            continue
        piece[start], stack = start, [start]
        while stack:  # depth-first over the models that met
            for j in np.flatnonzero(met[stack.pop()] & (piece < 0)):
                piece[j] = start
                stack.append(j)
    return [np.flatnonzero(piece == p) for p in dict.fromkeys(piece)]


def _bt_mm(w: np.ndarray, iters: int, tol: float) -> np.ndarray:
    """Hunter's MM on a connected, prior-smoothed wins matrix -> log-strengths, mean 0."""
    games = w + w.T
    won = w.sum(axis=1)
    p = np.ones(len(w))
    for _ in range(iters):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = won / denom
        new = new / np.exp(np.mean(np.log(new)))  # fix the scale: geometric mean 1
        if np.max(np.abs(new - p)) < tol:
            p = new
            break
        p = new
    s = np.log(p)
    return s - s.mean()


def bradley_terry(wins: np.ndarray, prior: float = 0.5, iters: int = 1000, tol: float = 1e-10) -> np.ndarray:
    """Bradley-Terry strengths from a [M, M] matrix of wins (wins[i, j]: games i won against j;
    a tie counts half to each) by Hunter's MM algorithm; returns log-strengths
    (P(i beats j) = 1 / (1 + exp(s_j - s_i))).

    prior: a virtual tie of this many games added between every two models that met, so a model
    that never won still gets a finite strength (the plain maximum likelihood would be -inf).
    Strengths compare only within a piece of the comparison graph (components()): each piece
    is fitted on its own and centred on mean 0; a model with no games gets nan, not a number
    it never earned.
    """
    w = np.asarray(wins, dtype=float)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"wins must be a square [M, M] matrix, got shape {list(w.shape)}")
    met = (w + w.T) > 0
    w = w + prior / 2 * met
    s = np.full(len(w), np.nan)
    for piece in components(met):
        if len(piece) > 1:
            s[piece] = _bt_mm(w[np.ix_(piece, piece)], iters, tol)
    return s
