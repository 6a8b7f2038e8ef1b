"""Audio in and out: read, validate, mix to mono, resample, loudness-normalise, save.

This is the only module that touches sound files. Everything downstream (codecs, the
pipeline, eval) receives a validated mono float32 tensor [T] at the rate it asked for.

    >>> from s2s.io.audio import load_audio, save_audio
    >>> wav = load_audio("question.mp3", 24000)          # torch.float32 [T], mono, 24 kHz
    >>> wav = load_audio((array, 44100), 24000)          # array [T], [T, C] or [C, T]
    >>> save_audio("reply.wav", wav, 24000)              # 16-bit PCM, written atomically

Reading goes through soundfile (libsndfile 1.2 reads wav, flac, ogg/vorbis, ogg/opus and
mp3); resampling through soxr at "HQ" quality.

Rules (each failure raises AudioError, a ValueError, naming the problem and the value):
- 2-D arrays: the smaller dimension is the channel axis ([T, C] if rows > cols, else
  [C, T]); a square array is ambiguous and rejected. Integer arrays are PCM and scaled
  by their type's full scale (int16 / 32768, ...).
- Mono is the mean of the channels.
- Silent: peak |x| < SILENCE_PEAK (1e-4, -80 dBFS: below a 16-bit LSB of dither).
- Duration at least MIN_SECONDS (0.2 s) and at most max_seconds (default 60 s).
- Loudness (normalise=True): the RMS of the active frames (20 ms frames within 40 dB of
  the loudest frame, so pauses do not count) is set to TARGET_DBFS (-20 dBFS), then the
  gain is lowered if needed so the peak stays at or below PEAK_LIMIT (0.95, -0.45 dBFS):
  one gain for the whole clip, no compression, never clips.

Run `python -m s2s.io.audio FILE` to print what load_audio makes of a file.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Union

import numpy as np
import soundfile as sf
import soxr
import torch

MIN_SECONDS = 0.2
SILENCE_PEAK = 1e-4
TARGET_DBFS = -20.0
PEAK_LIMIT = 0.95
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384_000
WHISPER_SAMPLE_RATE = 16000  # what Whisper's encoder hears (ASR and the prompt front-end)

AudioSource = Union[str, os.PathLike, tuple]


class AudioError(ValueError):
    """Audio input that cannot be used: the message names the problem and the value."""


def check_sample_rate(sample_rate, what: str = "sample_rate") -> int:
    """Return sample_rate as an int, or raise AudioError if it is not an integer in range."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral):
        if isinstance(sample_rate, float) and sample_rate.is_integer():
            sample_rate = int(sample_rate)
        else:
            raise AudioError(
                f"{what} must be an integer number of Hz, got {sample_rate!r} "
                f"({type(sample_rate).__name__})"
            )
    sample_rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{what} must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {sample_rate}"
        )
    return sample_rate


def to_mono(x: np.ndarray, channels_first: bool = True) -> np.ndarray:
    """[C, T] (or [T, C] with channels_first=False) or [T] -> float32 [T], mean of channels."""
    x = np.asarray(x)
    if x.ndim == 1:
        return x.astype(np.float32, copy=False)
    if x.ndim != 2:
        raise AudioError(f"audio must be 1-D [T] or 2-D, got shape {tuple(x.shape)}")
    return x.mean(axis=0 if channels_first else 1, dtype=np.float64).astype(np.float32)


def resample(x: np.ndarray | torch.Tensor, sr_in: int, sr_out: int) -> np.ndarray:
    """Mono [T] at sr_in -> float32 [round(T * sr_out / sr_in)] at sr_out (soxr HQ)."""
    sr_in = check_sample_rate(sr_in, "source sample rate")
    sr_out = check_sample_rate(sr_out, "target sample rate")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"resample expects mono audio [T], got shape {tuple(x.shape)}")
    if sr_in == sr_out or x.size == 0:
        return x
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def normalise_loudness(
    x: np.ndarray, sample_rate: int, target_dbfs: float = TARGET_DBFS, peak_limit: float = PEAK_LIMIT
) -> np.ndarray:
    """Scale mono [T] so active-speech RMS is target_dbfs, peak at most peak_limit (one gain)."""
    x = np.asarray(x, dtype=np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x
    frame = max(1, int(round(0.02 * sample_rate)))
    n = x.size // frame
    if n >= 1:
        frames = x[: n * frame].astype(np.float64).reshape(n, frame)
        frame_ms = np.mean(frames**2, axis=1)
        # Active = within 40 dB of the loudest frame: pauses and breaths do not pull the gain up.
        active = frame_ms[frame_ms >= frame_ms.max() * 1e-4]
        rms = math.sqrt(float(np.mean(active)))
    else:
        rms = math.sqrt(float(np.mean(x.astype(np.float64) ** 2)))
    gain = 10.0 ** (target_dbfs / 20.0) / max(rms, 1e-12)
    gain = min(gain, peak_limit / peak)
    return (x * gain).astype(np.float32)


def _from_array(array, sr) -> tuple[np.ndarray, int]:
    """(array, sr) tuple -> (float32 [T] mono, sr)."""
    sr = check_sample_rate(sr, "sample rate in the (array, sr) tuple")
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray):
        raise AudioError(
            f"the (array, sr) tuple needs a numpy array or torch tensor, got {type(array).__name__}"
        )
    if array.dtype.kind == "b" or array.dtype.kind not in "iuf":
        raise AudioError(f"audio array must be integer PCM or float, got dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise AudioError(f"audio array must be [T], [T, C] or [C, T], got shape {tuple(array.shape)}")
    if array.size == 0:
        raise AudioError(f"audio is empty: array of shape {tuple(array.shape)}")
    if array.dtype.kind == "i":
        array = array.astype(np.float64) / float(2 ** (8 * array.dtype.itemsize - 1))
    elif array.dtype.kind == "u":
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        array = (array.astype(np.float64) - half) / half
    if array.ndim == 2:
        rows, cols = array.shape
        if rows == cols:
            raise AudioError(
                f"cannot tell channels from time in a square array of shape {tuple(array.shape)}; "
                "pass [T], [T, C] or [C, T] with fewer channels than samples"
            )
        _check_finite(array, "array")
        array = to_mono(array, channels_first=rows < cols)
    return np.asarray(array, dtype=np.float32), sr


def _from_file(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    """Path -> (float32 [T] mono, sr). Checks the duration from the header before decoding."""
    if not path.exists():
        raise AudioError(f"audio file not found: {str(path)!r}")
    if not path.is_file():
        raise AudioError(f"audio path is not a file: {str(path)!r}")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {str(path)!r}")
    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            frames = f.frames
            # mp3 headers may not know the exact length; only trust a positive count.
            if frames > 0 and sr > 0 and frames / sr > max_seconds + 1.0:
                raise AudioError(
                    f"audio is too long: {frames / sr:.2f} s in {str(path)!r}, "
                    f"max_seconds is {max_seconds:g}"
                )
            data = f.read(dtype="float32", always_2d=True)  # [T, C]
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(
            f"could not read {str(path)!r} as audio (wav, flac, ogg, mp3 and the other "
            f"libsndfile formats are supported): {e}"
        ) from None
    sr = check_sample_rate(sr, f"sample rate of {str(path)!r}")
    if data.size == 0:
        raise AudioError(f"audio is empty: {str(path)!r} holds 0 samples")
    _check_finite(data, repr(str(path)))
    return to_mono(data, channels_first=False), sr


def _check_finite(x: np.ndarray, what: str) -> None:
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise AudioError(f"audio {what} contains {bad} NaN/inf samples out of {np.size(x)}")


def load_audio(
    source: AudioSource, sample_rate: int, *, max_seconds: float = 60.0, normalise: bool = True
) -> torch.Tensor:
    """Read and validate audio -> torch.float32 [T], mono, at sample_rate.

    source: a path (str or Path) to a sound file, or an (array, sr) tuple with array
    [T], [T, C] or [C, T] (smaller dimension = channels). Raises AudioError on any problem.
    """
    sample_rate = check_sample_rate(sample_rate)
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, numbers.Real) or not (
        math.isfinite(max_seconds) and max_seconds > MIN_SECONDS
    ):
        raise AudioError(f"max_seconds must be a number above {MIN_SECONDS}, got {max_seconds!r}")

    if isinstance(source, (str, os.PathLike)):
        name = repr(str(source))
        x, sr = _from_file(Path(source), float(max_seconds))
    elif isinstance(source, tuple) and len(source) == 2:
        name = "array"
        x, sr = _from_array(*source)
    else:
        raise AudioError(
            f"audio source must be a path or an (array, sample_rate) tuple, got {type(source).__name__}"
        )

    if x.size == 0:
        raise AudioError(f"audio is empty: {name} holds 0 samples")
    _check_finite(x, name)
    seconds = x.size / sr
    if seconds < MIN_SECONDS:
        raise AudioError(
            f"audio is too short: {seconds:.3f} s ({x.size} samples at {sr} Hz) in {name}, "
            f"need at least {MIN_SECONDS} s"
        )
    if seconds > max_seconds:
        raise AudioError(
            f"audio is too long: {seconds:.2f} s in {name}, max_seconds is {max_seconds:g}"
        )
    peak = float(np.max(np.abs(x)))
    if peak < SILENCE_PEAK:
        raise AudioError(
            f"audio is silent: peak {peak:.2e} in {name} is below {SILENCE_PEAK:g} (-80 dBFS)"
        )

    x = resample(x, sr, sample_rate)
    if normalise:
        x = normalise_loudness(x, sample_rate)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def save_audio(path: str | os.PathLike, wav, sample_rate: int) -> Path:
    """Write mono [T] (or [C, T]) float audio as 16-bit PCM wav, atomically; returns the path.

    Values are clipped to [-1, 1]. The file appears complete or not at all: it is written
    to a temporary file in the same folder, then moved into place with os.replace.
    """
    sample_rate = check_sample_rate(sample_rate)
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().float().numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim not in (1, 2) or wav.size == 0:
        raise AudioError(f"save_audio needs a non-empty [T] or [C, T] array, got shape {wav.shape}")
    _check_finite(wav, "to save")
    data = np.clip(wav, -1.0, 1.0)
    if data.ndim == 2:
        data = data.T  # soundfile wants [T, C]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, data, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path



def to_16k(wav: Any, sr: int) -> np.ndarray:
    """1-D float waveform (numpy or torch) at sr -> float32 numpy [T'] at 16 kHz."""
    if hasattr(wav, "detach"):
        wav = wav.detach().cpu().numpy()
    x = np.asarray(wav)
    if x.ndim != 1:
        raise ValueError(f"wav must be a 1-D waveform [T], got shape {tuple(x.shape)}")
    if x.size == 0:
        raise ValueError("wav is empty (0 samples)")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"wav must be a float waveform in [-1, 1], got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError("wav contains NaN or inf samples")
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"sr must be a positive int (Hz), got {sr!r}")
    x = x.astype(np.float32)
    if sr != WHISPER_SAMPLE_RATE:
        x = soxr.resample(x, int(sr), WHISPER_SAMPLE_RATE, quality="HQ").astype(np.float32)
    return x


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m s2s.io.audio FILE")
    w = load_audio(sys.argv[1], 24000)
    print(f"{sys.argv[1]}: {w.numel() / 24000:.2f} s at 24000 Hz, peak {w.abs().max():.3f}, "
          f"rms {20 * math.log10(float(w.pow(2).mean().sqrt()) + 1e-12):.1f} dBFS")
