"""What a visitor may reach: checkpoint folders confined to configured roots, and uploads made
readable without trusting them.

    guard = FolderGuard(["assets", "ckpts"])
    path = guard.resolve("ckpts/run1")            # ValueError if it lies outside the roots
    guard.checkpoints()                            # checkpoint folders a visitor may pick

A public Space must not let a visitor read arbitrary files: every folder a visitor names goes
through FolderGuard.resolve, which follows symlinks and `..` first, then checks the real path
against the real roots. Nothing a visitor types is passed to a shell.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

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
