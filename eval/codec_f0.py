"""Does the codec keep the assistant's pitch? `python -m eval.codec_f0`.

    python -m eval.codec_f0 [--answers assets/eval/answers] [--json]

For every reference answer (the assistant's voice, Piper joe) it compares the median F0 the
codec decodes (its F0 codes, the pitch WORLD synthesis renders) with librosa pyin's median F0
of the original (50-400 Hz, voiced frames only; pyin is slow but agrees with autocorrelation
and harvest on this voice where they agree at all), in semitones. Answers where pyin finds no
voiced frame are listed and left out of the summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from s2s.codecs.world_vq import ROOT, WorldVQCodec, codes_to_features
from s2s.io.audio import load_audio

DEFAULT_ANSWERS = ROOT / "assets" / "eval" / "answers"


def pyin_median(x: np.ndarray, sr: int) -> float:
    """Median pyin F0 (Hz) over its voiced frames; nan if none."""
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f0, voiced, _ = librosa.pyin(x, fmin=50.0, fmax=400.0, sr=sr, frame_length=2048)
    f0 = f0[voiced & np.isfinite(f0)]
    return float(np.median(f0)) if len(f0) else float("nan")


def pitch_offsets(answers: str | Path = DEFAULT_ANSWERS, codec: WorldVQCodec | None = None) -> list[dict]:
    """Per answer file: name, pyin_hz (original), codec_hz (decoded F0 codes), semitones (codec - pyin)."""
    paths = sorted(p for p in Path(answers).iterdir() if p.suffix.lower() in (".flac", ".wav"))
    if not paths:
        raise ValueError(f"no .flac or .wav answers in {answers}")
    codec = codec or WorldVQCodec()
    rows = []
    for p in paths:
        x = load_audio(str(p), codec.sample_rate).numpy().astype(np.float64)
        f0 = codes_to_features(codec.encode(x, codec.sample_rate).numpy(), codec.tables).f0
        codec_hz = float(np.median(f0[f0 > 0])) if (f0 > 0).any() else float("nan")
        ref = pyin_median(x, codec.sample_rate)
        st = 12.0 * math.log2(codec_hz / ref) if math.isfinite(ref) and math.isfinite(codec_hz) else float("nan")
        rows.append({"name": p.stem, "pyin_hz": ref, "codec_hz": codec_hz, "semitones": st})
    return rows


def summary(rows: list[dict]) -> dict:
    st = np.array([r["semitones"] for r in rows if math.isfinite(r["semitones"])])
    if not len(st):
        raise ValueError("no answer has a pyin F0 to compare with")
    return {"answers": len(rows), "compared": int(len(st)), "median_semitones": float(np.median(st)),
            "within_1": float(np.mean(np.abs(st) <= 1.0)), "within_2": float(np.mean(np.abs(st) <= 2.0)),
            "max_abs_semitones": float(np.abs(st).max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", default=str(DEFAULT_ANSWERS), help="folder of reference answers")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    try:
        rows = pitch_offsets(args.answers)
        s = summary(rows)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"rows": rows, "summary": s}, indent=1))
        return 0
    print(f"{'answer':24s} {'pyin Hz':>8s} {'codec Hz':>9s} {'semitones':>10s}")
    for r in rows:
        print(f"{r['name']:24s} {r['pyin_hz']:8.0f} {r['codec_hz']:9.0f} {r['semitones']:+10.1f}")
    print(f"\n{s['compared']} of {s['answers']} answers compared: median {s['median_semitones']:+.2f} semitones, "
          f"{s['within_1']:.0%} within 1, {s['within_2']:.0%} within 2, worst {s['max_abs_semitones']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
