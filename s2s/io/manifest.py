"""The corpus manifest: the one reader and writer of the spoken-dialogue pair format.

    rows = read_manifest("data/corpus/manifest.jsonl")      # ManifestError (a ValueError) if bad
    wav = audio_path("data/corpus/manifest.jsonl", rows[0]["prompt_audio"])

manifest.jsonl holds one JSON object per line (blank lines are skipped), one pair each:
- required: id (unique), prompt_audio, response_audio (paths), response_text;
- optional: prompt_text, intent (default: the response_text), voice, accent, split (default "");
  other fields (engine, augment, prompt_seconds, ...) are kept as they are.
Audio paths are relative to the manifest's folder (audio_path is that rule); rows keep them as
written, so caches keyed by them do not depend on where the corpus lies. The corpus builder
(s2s/data/corpus.py) writes its SPLITS; "train" is what training learns from, every other split is
held out.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

REQUIRED = ("id", "prompt_audio", "response_audio", "response_text")
OPTIONAL = ("prompt_text", "intent", "voice", "accent", "split")
AUDIO_KEYS = ("prompt_audio", "response_audio")


class ManifestError(ValueError):
    """A bad manifest: the message names the file, the line and the problem."""


def audio_path(manifest: str | os.PathLike, path: str) -> Path:
    """Where a row's audio lies: relative to the manifest's folder."""
    return Path(manifest).parent / path


def read_manifest(path: str | os.PathLike, *, check_audio: bool = True) -> list[dict]:
    """manifest.jsonl -> rows (dicts) with the required fields checked and the optional ones
    filled in; check_audio: every prompt and response file must exist. An empty file gives []."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {str(path)!r} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read manifest {str(path)!r}: {e}") from None
    rows, seen = [], set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{n}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ManifestError(f"{path}:{n}: missing fields {missing} (required: {list(REQUIRED)})")
        if row["id"] in seen:
            raise ManifestError(f"{path}:{n}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        for key in AUDIO_KEYS:
            if not isinstance(row[key], str) or not row[key]:
                raise ManifestError(f"{path}:{n}: {key} must be a path relative to the manifest, got {row[key]!r}")
            if check_audio and not audio_path(path, row[key]).is_file():
                raise ManifestError(f"{path}:{n}: {key} {row[key]!r} does not exist")
        row.setdefault("intent", row["response_text"])
        for key in OPTIONAL:
            row.setdefault(key, "")
        rows.append(row)
    return rows


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> None:
    """Rows -> manifest.jsonl, written atomically (a reader never sees half a file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    os.replace(tmp, path)
