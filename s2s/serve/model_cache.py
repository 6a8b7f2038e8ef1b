"""Models cached per process behind a lock: pipelines per (checkpoint, device), least recently used
dropped first; codecs per (name, bandwidth), one EnCodec model shared by every bandwidth; the
speech recogniser. A load error is remembered, not retried on every request.

    models = ModelCache(device="cpu")
    pipe = models.pipeline(path)                  # loaded once per (checkpoint, device)
    codec = models.codec("encodec_24khz", 1.5)    # CodecUnavailable is remembered, not retried
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from s2s.codecs.codec import Codec, CodecUnavailable, load_codec
from s2s.models.checkpoint import read_config
from s2s.models.device import pick_device
from s2s.serve.pipeline import Pipeline, load_pipeline


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
            from s2s.asr.whisper import load_asr as asr_loader
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
        """The Whisper model (s2s.asr.whisper.load_asr()), loaded once; its error is remembered too."""
        with self._key_lock("asr"):
            if self._asr is None:
                try:
                    self._asr = self.asr_loader()
                except (ValueError, ImportError, OSError) as e:
                    self._asr = e
        if isinstance(self._asr, Exception):
            raise ValueError(f"no speech recogniser: {self._asr}")
        return self._asr
