"""WORLD-VQ: an offline speech codec (WORLD vocoder + k-means tables), 24 kHz, 75 frames/s, 4 x 1024.

    from s2s.codecs.world_vq import WorldVQCodec
    codec = WorldVQCodec()                 # tables from assets/world_vq/tables.npz
    codes = codec.encode(wav, sr)          # LongTensor [4, F], F = ceil(T' / 320), T' = samples at 24 kHz
    audio = codec.decode(codes)            # FloatTensor [F * 320] at 24 kHz (WORLD synthesis)

Analysis and synthesis: WORLD at the codec's frame grid (s2s/codecs/world.py); this module quantises
its features (mel-cepstrum, F0, band aperiodicity) with tables trained by k-means
(s2s/codecs/world_vq_tools.py) and shipped in assets/world_vq/.

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
of dio changes nothing measurable (45.5 vs 46.3 %) at 10x the cost. F0 (2026-12-06): dio read the
assistant's low voice ~11 semitones high; encode now takes F0 values from YIN inside dio's voicing
(s2s/codecs/world.py). Decoding is unchanged and the tables were kept, so checkpoints trained on
dio's codes still pair (they speak at the pitch they learnt); the codes cache is keyed by `analysis`.
Training copies with 16 kHz band limits, a noise floor and warped formants keep real 16 kHz speech (ARCTIC) intact.

Commands:
    python -m s2s.codecs.world_vq train --data data/corpus/manifest.jsonl --out assets/world_vq/tables.npz
    python -m s2s.codecs.world_vq speed                                        # encode/decode x real time
    python -m eval.codec_quality [--data assets/eval/manifest.jsonl]           # WER / MCD / log-F0 RMSE
(table training and speed: s2s/codecs/world_vq_tools.py; quality scores with eval: eval/codec_quality.py)
Tests: python -m pytest -q tests/test_world_vq.py
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from s2s.codecs.base import Codec, CodecUnavailable, StreamDecoder
from s2s.codecs.world import (
    ALPHA,
    F0_MAX,
    F0_MIN,
    FFT_SIZE,
    FLOOR_DB,
    HOP,
    N_BAP,
    ORDER,
    SAMPLE_RATE,
    Features,
    analyse,
    synthesise,
)

N_CODES = 1024
F0_STEP = math.log(F0_MAX / F0_MIN) / (N_CODES - 2)  # ln-F0 width of one bin (~4.7 cents)
W_BAP = 0.163  # 1 dB of band aperiodicity weighs like 1 dB of mel-cepstral distortion
LAYOUT = "shape2+f0+gain_bap_shape3"
VERSION = 1
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TABLES = ROOT / "assets" / "world_vq" / "tables.npz"
TRAIN_COMMAND = "python -m s2s.codecs.world_vq train --data data/corpus/manifest.jsonl --out assets/world_vq/tables.npz"
# Keys of a tables file and their shapes; "config" is a JSON string of the analysis settings.
TABLE_SHAPES = {"mc0": (N_CODES, ORDER), "mc1": (N_CODES, ORDER), "cb3": (N_CODES, 1 + N_BAP + ORDER)}


def analysis_config() -> dict:
    """Settings the tables depend on; stored in the tables file and checked on load."""
    return {"layout": LAYOUT, "sample_rate": SAMPLE_RATE, "hop": HOP, "fft_size": FFT_SIZE,
            "order": ORDER, "alpha": ALPHA, "floor_db": FLOOR_DB, "w_bap": W_BAP,
            "f0_range": [F0_MIN, F0_MAX]}



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

    analysis = "dio-voicing+yin-f0-under-dio"  # encode's F0 analysis (s2s/codecs/world.py); decode does not depend on it

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


if __name__ == "__main__":
    from s2s.codecs.world_vq_tools import main  # the commands live there (train, speed)

    main()
