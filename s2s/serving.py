"""What the app serves, without any UI: checkpoints confined to configured folders, models cached
per process behind a lock, example prompts and training-log curves.

    guard = FolderGuard(["assets", "ckpts"])
    path = guard.resolve("ckpts/run1")            # ValueError if it lies outside the roots
    models = ModelCache(device="cpu")
    pipe = models.pipeline(path)                  # loaded once per (checkpoint, device)
    codec = models.codec("encodec_24khz", 1.5)    # CodecUnavailable is remembered, not retried

A public Space must not let a visitor read arbitrary files: every folder a visitor names goes
through FolderGuard.resolve, which follows symlinks and `..` first, then checks the real path
against the real roots. Nothing a visitor types is passed to a shell.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import socket
import threading
import wave
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from s2s.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_config
from s2s.codec import Codec, CodecUnavailable, load_codec
from s2s.manifest import ManifestError, audio_path, read_manifest
from s2s.pipeline import Pipeline, load_pipeline, pick_device

log = logging.getLogger(__name__)

SCAN_DEPTH = 3  # how deep under a root to look for checkpoint folders
CODEC_NAMES = {"encodec_24khz": "EnCodec 24 kHz", "world_vq": "WORLD-VQ"}
TIMING_ROWS = (("load", "read + resample"), ("frontend", "front-end (features)"), ("encode", "encode (codec)"),
               ("prefill", "prefill"), ("first_frame", "first reply frame"),
               ("time_to_first_audio", "time to first audio"),
               ("generate", "generate (all frames)"), ("decode", "decode (all audio)"),
               ("prompt_codes", "prompt codes (after the reply, for the grid)"), ("total", "total"))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it): for servers started by tests and scripts."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class FolderGuard:
    """Resolves visitor-supplied folder names, refusing anything outside the configured roots."""

    def __init__(self, roots, base: str | Path = ".") -> None:
        self.base = Path(base).resolve()
        self.roots = []
        for r in roots:
            p = Path(r)
            self.roots.append((p if p.is_absolute() else self.base / p).resolve())
        if not self.roots:
            raise ValueError("FolderGuard needs at least one root folder")

    def allows(self, path: Path) -> bool:
        real = path.resolve()
        return any(real == r or real.is_relative_to(r) for r in self.roots)

    def label(self, path: Path) -> str:
        """How a folder is shown and passed around: relative to base when inside it."""
        path = Path(path)
        return str(path.relative_to(self.base)) if path.is_relative_to(self.base) else str(path)

    def resolve(self, text, what: str = "folder") -> Path:
        """A visitor's folder name (relative to base, or absolute) -> its real path inside a root."""
        if text is None or not str(text).strip():
            raise ValueError(f"no {what} chosen")
        text = str(text).strip()
        try:
            p = Path(text)  # no expanduser: "~" is just a folder name here
            real = (p if p.is_absolute() else self.base / p).resolve()
        except (OSError, ValueError, RuntimeError) as e:  # null bytes, symlink loops
            raise ValueError(f"{what} {text!r} is not a usable path ({e})") from None
        if not any(real == r or real.is_relative_to(r) for r in self.roots):
            raise ValueError(
                f"{what} {text!r} is outside the folders this app may read "
                f"({', '.join(self.label(r) for r in self.roots)})"
            )
        if not real.is_dir():
            raise ValueError(f"{what} {text!r} is not a folder")
        return real

    def _walk(self):
        for root in self.roots:
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: no escaping
                depth = len(Path(dirpath).relative_to(root).parts)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and depth < SCAN_DEPTH)
                yield Path(dirpath), filenames

    def checkpoints(self) -> list[str]:
        """Labels of the folders under the roots that hold config.json + model.safetensors."""
        found = [self.label(d) for d, files in self._walk() if CONFIG_FILE in files and WEIGHTS_FILE in files]
        return sorted(dict.fromkeys(found))

    def checkpoint_folders(self) -> list[str]:
        """Checkpoints and the folders directly holding checkpoints (what eval.run accepts)."""
        ckpts = self.checkpoints()
        parents = [str(Path(c).parent) for c in ckpts if Path(c).parent != Path(".")]
        return sorted(set(ckpts) | set(parents))


class ModelCache:
    """Pipelines per (checkpoint, device), codecs per (name, bandwidth) and one ASR, loaded on
    first use. One lock guards the tables; each key has its own loading lock, so a slow load
    does not block requests for what is already loaded. At most `max_pipelines` are kept
    (least recently used dropped first)."""

    def __init__(
        self,
        device: str | None = None,
        *,
        pipeline_loader: Callable[..., Pipeline] = load_pipeline,
        codec_loader: Callable[..., Codec] = load_codec,
        asr_loader: Callable | None = None,
        max_pipelines: int = 2,
    ) -> None:
        self.device = pick_device(device)
        self.pipeline_loader, self.codec_loader = pipeline_loader, codec_loader
        if asr_loader is None:
            from s2s.asr import load_asr as asr_loader
        self.asr_loader = asr_loader
        self.max_pipelines = max_pipelines
        self._lock = threading.Lock()
        self._key_locks: dict = {}
        self._pipes: OrderedDict = OrderedDict()
        self._codecs: dict = {}  # key -> Codec or the exception it raised
        self._asr = None

    def _key_lock(self, key) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def loaded(self, path: Path) -> Pipeline | None:
        with self._lock:
            return self._pipes.get((str(path), str(self.device)))

    def pipeline(self, path: Path) -> Pipeline:
        """The pipeline for a checkpoint folder (already checked by FolderGuard)."""
        key = (str(path), str(self.device))
        with self._key_lock(key):
            with self._lock:
                if key in self._pipes:
                    self._pipes.move_to_end(key)
                    return self._pipes[key]
            spec = read_config(path)["codec"]
            codec = self.codec(spec["name"], spec.get("params", {}).get("bandwidth"))
            pipe = self.pipeline_loader(path, device=self.device, codec=codec)
            with self._lock:
                self._pipes[key] = pipe
                while len(self._pipes) > self.max_pipelines:
                    self._pipes.popitem(last=False)
            return pipe

    def codec(self, name: str, bandwidth: float | None = None) -> Codec:
        """A codec by name (EnCodec at `bandwidth` kbps); a failure is remembered and re-raised."""
        key = (name, bandwidth if name == "encodec_24khz" else None)
        with self._key_lock(("codec", name)):
            hit = self._codecs.get(key)
            if hit is None:
                try:
                    if name != "encodec_24khz":
                        hit = self.codec_loader(name)
                    else:  # every bandwidth shares one EnCodec model
                        other = next((c for k, c in self._codecs.items() if k[0] == name), None)
                        if isinstance(other, Exception):
                            hit = other
                        elif other is not None:
                            hit = self.codec_loader(name, bandwidth=bandwidth or 3.0, model=other.model)
                        else:
                            hit = self.codec_loader(name, bandwidth=bandwidth or 3.0)
                except (CodecUnavailable, ImportError, OSError) as e:
                    hit = e
                self._codecs[key] = hit
        if isinstance(hit, Exception):
            raise hit
        return hit

    def encodec_status(self) -> str | None:
        """None when EnCodec loads here, else why not (the first line of its error)."""
        try:
            self.codec("encodec_24khz", 3.0)
            return None
        except (CodecUnavailable, ImportError, OSError, ValueError) as e:
            return str(e).splitlines()[0]

    def asr(self):
        """The Whisper model (s2s.asr.load_asr()), loaded once; its error is remembered too."""
        with self._key_lock("asr"):
            if self._asr is None:
                try:
                    self._asr = self.asr_loader()
                except (ValueError, ImportError, OSError) as e:
                    self._asr = e
        if isinstance(self._asr, Exception):
            raise ValueError(f"no speech recogniser: {self._asr}")
        return self._asr


def example_prompts(eval_dir: str | Path, n: int = 4) -> list[tuple[Path, str]]:
    """A few (prompt clip, label) pairs from the bundled eval set: one per intent from its
    manifest.jsonl (labelled with the prompt's text), else *prompt* audio files; [] when the
    folder is missing or its manifest is bad. Clips outside the folder are skipped."""
    eval_dir = Path(eval_dir).resolve()
    manifest = eval_dir / "manifest.jsonl"
    picked: list[tuple[Path, str]] = []
    if manifest.is_file():
        try:
            rows = read_manifest(manifest, check_audio=False)
        except ManifestError as e:
            log.warning("no example prompts: %s", e)
            return []
        seen = set()
        for r in rows:
            path = audio_path(manifest, r["prompt_audio"]).resolve()
            if r["intent"] not in seen and path.is_file() and path.is_relative_to(eval_dir):
                seen.add(r["intent"])
                picked.append((path, str(r["prompt_text"] or path.stem)))
            if len(picked) >= n:
                break
    elif eval_dir.is_dir():
        audio = sorted(p for p in eval_dir.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))
        named = [p for p in audio if "prompt" in str(p.relative_to(eval_dir)).lower()] or audio
        picked = [(p, p.stem.replace("_", " ")) for p in named[:n]]
    return picked


def loss_curves(checkpoint: Path, training: dict) -> dict[str, tuple[list, list]]:
    """{name: (steps, values)} from a checkpoint's training summary: a "losses" list (numbers, or
    records with step and *loss keys) or a "log" file inside the checkpoint (JSONL records, or
    CSV with a header). Files outside the checkpoint folder are not read."""
    records: list[dict] = []
    losses = training.get("losses")
    if isinstance(losses, list):
        for i, v in enumerate(losses):
            records.append({"step": i, "loss": v} if isinstance(v, (int, float)) else v)
    log = training.get("log")
    if isinstance(log, str) and log:
        path = (checkpoint / log).resolve()
        if path.is_relative_to(checkpoint.resolve()) and path.is_file() and path.stat().st_size < 50_000_000:
            text = path.read_text(encoding="utf-8", errors="replace")
            if path.suffix == ".csv":
                records += list(csv.DictReader(io.StringIO(text)))
            else:
                for line in text.splitlines():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
    curves: dict[str, tuple[list, list]] = {}
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            continue
        try:
            step = float(r.get("step", i))
        except (TypeError, ValueError):
            continue
        for k, v in r.items():
            if not k.endswith("loss"):
                continue
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(v):
                steps, values = curves.setdefault(k, ([], []))
                steps.append(step)
                values.append(v)
    return curves


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono float [T] in [-1, 1] -> a 16-bit PCM WAV file in memory (one streamed chunk)."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def readable(audio) -> str | tuple:
    """An uploaded file as load_audio takes it: the path when libsndfile reads it, else decoded by
    ffmpeg (m4a, webm, aac...); a corrupt file stays a path so load_audio names the problem."""
    import soundfile as sf

    try:
        sf.info(str(audio))
        return audio
    except Exception:  # noqa: BLE001 - any libsndfile failure: try ffmpeg next
        pass
    try:
        from gradio.processing_utils import audio_from_file

        sr, data = audio_from_file(str(audio))
        return (np.asarray(data), int(sr)) if np.size(data) else audio
    except Exception:  # noqa: BLE001 - not decodable either: load_audio reports it clearly
        return audio


def codec_label(spec: dict) -> str:
    bandwidth = spec.get("params", {}).get("bandwidth")
    name = CODEC_NAMES.get(spec["name"], spec["name"])
    return f"{name} {bandwidth:g} kbps" if bandwidth else name


def timing_table(t: dict, seconds: float) -> list[list[str]]:
    """Pipeline timings (ms) -> [stage, value] rows for the page."""
    rows = [[label, f"{t[key]:.0f} ms"] for key, label in TIMING_ROWS if key in t]
    return rows + [["real-time factor", f"{t['realtime_factor']:.2f}× (reply s per compute s)"],
                   ["reply length", f"{seconds:.2f} s"]]


def card_markdown(pipe: Pipeline, label: str) -> str:
    """The checkpoint's card: preset, size, codec, limits and the training summary's scalars."""
    info, cfg, codec = pipe.info(), pipe.model.cfg, pipe.codec
    rows = [("checkpoint", f"`{label}`"), ("preset", info["preset"]), ("parameters", f"{info['parameters']:,}"),
            ("layers / width / heads", f"{cfg.n_layer} / {cfg.d_model} / {cfg.n_head} "
                                       f"(+{cfg.n_encoder_layer} prompt-encoder layers)"),
            ("codec", f"{codec_label(info['codec'])} · {codec.n_codebooks} codebooks × {codec.cardinality} · "
                      f"{codec.frame_rate:g} frames/s"),
            ("prompt front-end", f"{info['frontend']['name']}"
                                 + (f" · weights sha256 {info['frontend']['params']['sha256'][:12]}…"
                                    if info["frontend"]["params"].get("sha256") else "")),
            ("longest prompt / reply", f"{cfg.max_prompt_frames / codec.frame_rate:.0f} s / "
                                       f"{cfg.max_reply_frames / codec.frame_rate:.0f} s")]
    rows += [(f"training: {k}", f"{v:.4g}" if isinstance(v, float) else str(v)[:120])
             for k, v in (info["training"] or {}).items() if not isinstance(v, (dict, list)) and v not in (None, "")]
    return "| field | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def device_line(device) -> str:
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return f"**Device in use:** `{device}` ({name}); the codec always runs on the CPU."


def frame(rows: list[dict], columns: tuple[str, ...]):
    """Result rows -> a pandas DataFrame of the columns present, floats rounded for display."""
    import pandas as pd

    cols = [c for c in columns if any(c in r for r in rows)]
    return pd.DataFrame([{c: r.get(c, "") for c in cols} for r in rows], columns=cols).round(3)
