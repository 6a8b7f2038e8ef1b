"""What a visitor may reach: checkpoint folders confined to configured roots, and uploads made
readable without trusting them.

    guard = FolderGuard(["assets", "ckpts"])
    path = guard.resolve("ckpts/run1")            # ValueError if it lies outside the roots
    guard.checkpoints()                            # checkpoint folders a visitor may pick
    source = readable(upload, max_seconds=60)     # AudioError if longer, before decoding it

A public Space must not let a visitor read arbitrary files: every folder a visitor names goes
through FolderGuard.resolve, which follows symlinks and `..` first, then checks the real path
against the real roots. Nothing a visitor types is passed to a shell.

An upload's length is learnt before it is decoded (25 MB of low-bitrate AAC is hours: gigabytes
of PCM): readable() reads the container's duration (ffprobe, or libsndfile's header) and refuses
a file past the limit, then decodes at most the limit + 1 s of it, so a container that lies or
says nothing costs no more. ffmpeg runs with no shell, local files only and audio demuxers only
(a playlist cannot point it at other files).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from s2s.io.audio import AudioError, to_mono
from s2s.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE

SCAN_DEPTH = 3  # how deep under a root to look for checkpoint folders


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


# ----------------------------------------------------------------------------- uploads

# Demuxers ffmpeg may use on an upload: what browsers, phones and audio tools write. No
# playlists (hls, concat), no images, no network: a visitor's file never names another file.
AUDIO_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,ogg,mp3,aac,wav,w64,flac,amr,caf,aiff"
FFMPEG_SAFETY = ["-v", "error", "-protocol_whitelist", "file", "-format_whitelist", AUDIO_DEMUXERS]
# Sample formats whose frame count is the data's size (so at most the upload's size): load_audio
# reads them itself. Everything compressed goes through a decode capped at the limit.
PCM_SUBTYPES = ("PCM_", "FLOAT", "DOUBLE", "ULAW", "ALAW")
HEADER_SLACK_S = 1.0  # a container's duration counts encoder delay and padding: refuse past limit + 1 s
MAX_DECODE_RATE = 48000  # decoded uploads are mono at most 48 kHz: at most 11.7 MB for a 61 s cap
PROBE_TIMEOUT_S, DECODE_TIMEOUT_S = 10, 30
SUPPORTED = "wav, flac, ogg/opus/vorbis, mp3, m4a/aac, webm"


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _too_long(path: str, seconds: float, max_seconds: float, at_least: bool = False) -> AudioError:
    return AudioError(f"audio is too long: {path!r} lasts {'at least ' if at_least else ''}{seconds:.1f} s "
                      f"({_clock(seconds)}); uploads may last at most {max_seconds:g} s")


def _probe(path: str) -> tuple[float | None, int | None] | None:
    """ffprobe: (container duration in s or None when it does not say, first audio stream's rate);
    None when ffprobe finds no audio stream (not audio: load_audio names the problem)."""
    out = subprocess.run(["ffprobe", *FFMPEG_SAFETY, "-select_streams", "a:0", "-show_entries",
                          "stream=sample_rate:format=duration", "-of", "json", f"file:{path}"],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    if out.returncode != 0:
        return None
    info = json.loads(out.stdout or b"{}")
    if not info.get("streams"):
        return None
    try:
        duration = float(info.get("format", {}).get("duration"))
    except (TypeError, ValueError):  # "N/A" or absent: a live recording (MediaRecorder's WebM)
        duration = None
    try:
        rate = int(info["streams"][0].get("sample_rate"))
    except (TypeError, ValueError):
        rate = None
    return (duration if duration is not None and math.isfinite(duration) else None), rate


def _decode_capped(path: str, rate: int | None, seconds: float) -> tuple[np.ndarray, int]:
    """ffmpeg: the first `seconds` of the first audio stream, mono float32 [T] at <= 48 kHz."""
    sr = min(rate or MAX_DECODE_RATE, MAX_DECODE_RATE)
    out = subprocess.run(["ffmpeg", *FFMPEG_SAFETY, "-i", f"file:{path}", "-map", "0:a:0", "-t", f"{seconds:.3f}",
                          "-ac", "1", "-ar", str(sr), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=DECODE_TIMEOUT_S, check=False)
    if out.returncode != 0:
        why = (out.stderr.decode(errors="replace").strip().splitlines() or ["ffmpeg failed"])[-1]
        raise AudioError(f"could not read {path!r} as audio ({SUPPORTED} are supported): {why}")
    return np.frombuffer(out.stdout, dtype="<f4")[: int(seconds * sr)], sr


def _soundfile_capped(path: str, seconds: float) -> tuple[np.ndarray, int]:
    """Without ffmpeg: libsndfile's decode of the first `seconds`, mono float32 [T]."""
    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            data = f.read(frames=int(seconds * sr), dtype="float32", always_2d=True)  # [T, C]
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioError(f"could not read {path!r} as audio ({SUPPORTED} are supported): {e}") from None
    return to_mono(data, channels_first=False), sr


def readable(audio, max_seconds: float) -> str | tuple:
    """An uploaded file as load_audio takes it, its length known before it is decoded.

    Uncompressed files libsndfile reads (wav, aiff...: at most the upload's size) stay a path.
    Anything else is probed first (its container's duration: ffprobe, or libsndfile's header)
    and refused with an AudioError naming its duration and the limit when it is longer than
    max_seconds; then at most max_seconds + 1 s of it is decoded (ffmpeg; m4a, webm, opus, mp3...)
    and returned as (mono float32 [T], sr), so a container that lies or does not say (a live
    WebM recording) costs at most that. A file that is not audio stays a path, so load_audio
    names the problem.
    """
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or not (
            math.isfinite(max_seconds) and max_seconds > 0):
        raise ValueError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
    path = str(audio)
    try:
        info = sf.info(path)
    except Exception:  # noqa: BLE001 - any libsndfile failure: ffmpeg next
        info = None
    if info is not None:
        if info.frames > 0 and info.samplerate > 0 and info.duration > max_seconds + HEADER_SLACK_S:
            raise _too_long(path, info.duration, max_seconds)
        if info.subtype.startswith(PCM_SUBTYPES):
            return audio
    cap = max_seconds + HEADER_SLACK_S
    try:
        probe = _probe(path)
        if probe is None and info is None:
            return audio  # neither libsndfile nor ffmpeg finds audio in it: load_audio says so
        if probe is None:  # a format only libsndfile knows: its own decode, capped
            data, sr = _soundfile_capped(path, cap)
        else:
            duration, rate = probe
            if duration is not None and duration > cap:
                raise _too_long(path, duration, max_seconds)
            data, sr = _decode_capped(path, rate, cap)
    except FileNotFoundError:  # no ffmpeg here: libsndfile's own formats still work, capped
        if info is None:
            raise AudioError(f"could not read {path!r}: libsndfile cannot, and ffmpeg, which reads m4a, webm "
                             "and aac, is not installed here (apt-get install ffmpeg)") from None
        data, sr = _soundfile_capped(path, cap)
    except subprocess.TimeoutExpired as e:
        raise AudioError(f"could not read {path!r}: {e.cmd[0]} took over {e.timeout:g} s") from None
    if data.size / sr > max_seconds:
        raise _too_long(path, data.size / sr, max_seconds, at_least=data.size >= int(cap * sr) - 1)
    return (data, int(sr)) if data.size else audio
