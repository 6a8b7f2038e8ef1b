"""Codecs: waveform <-> discrete codes [K, F], and a streaming decoder shared by every backend.

Backends (both 24 kHz, 75 frames/s, 1024 entries per codebook):
- "encodec_24khz": EnCodec through transformers (`facebook/encodec_24khz`); bandwidth
  1.5 / 3.0 / 6.0 kbps = 2 / 4 / 8 codebooks (3.0 default). Runs on the CPU.
- "world_vq": offline WORLD vocoder + vector quantiser tables (s2s/world_vq.py, imported
  lazily so this module works without pyworld).

    >>> codec = load_codec("encodec_24khz", bandwidth=3.0)
    >>> codes = codec.encode(wav, sr)            # LongTensor [4, F], F = ceil(T * 75 / 24000)
    >>> audio = codec.decode(codes)              # FloatTensor [F * 320] at 24 kHz
    >>> dec = codec.stream_decoder()
    >>> chunks = [dec.push(codes[:, i:i + 15]) for i in range(0, F, 15)] + [dec.flush()]

EnCodec weights resolve in this order: an explicit local folder (`weights=` or the
environment variable S2S_ENCODEC_PATH; if given it must work, nothing else is tried),
the local Hugging Face cache, a download. With none, CodecUnavailable says what was tried
and how to fix it. Random weights are never used silently: a model whose codebooks are all
zero (random init, or a checkpoint with missing tensors) is refused.

Run `python -m s2s.codec` to print which codec default_codec() picks here and why.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from s2s.audio import check_sample_rate, resample, to_mono

log = logging.getLogger(__name__)

ENCODEC_REPO = "facebook/encodec_24khz"
ENCODEC_BANDWIDTHS = {1.5: 2, 3.0: 4, 6.0: 8}  # kbps -> codebooks (75 frames/s x 10 bits each)
CODECS = ("encodec_24khz", "world_vq")


class CodecUnavailable(RuntimeError):
    """A codec's weights or tables could not be found; the message says what was tried."""


class Codec:
    """What every backend provides: attributes, encode/decode, and a streaming decoder.

    Backends set name, sample_rate, frame_rate, n_codebooks, cardinality and params
    (what a checkpoint records to pin the codec), and may tune the streaming sizes below.
    """

    name: str = ""
    sample_rate: int = 24000
    frame_rate: float = 75.0
    n_codebooks: int = 4
    cardinality: int = 1024
    params: dict = {}
    # Streaming defaults; a backend overrides them with numbers measured for it.
    stream_context_frames: int = 16
    stream_lookahead_frames: int = 2
    stream_crossfade_ms: float = 5.0

    @property
    def hop_length(self) -> int:
        """Samples per frame (320 at 24 kHz / 75 frames/s)."""
        return int(round(self.sample_rate / self.frame_rate))

    def encode(self, wav: torch.Tensor, sr: int) -> torch.Tensor:
        """wav [C, T] or [T] at sr -> LongTensor [K, F]."""
        raise NotImplementedError(f"{type(self).__name__} does not implement encode")

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """LongTensor [K, F] -> FloatTensor [F * hop_length] at self.sample_rate."""
        raise NotImplementedError(f"{type(self).__name__} does not implement decode")

    def stream_decoder(self) -> "StreamDecoder":
        return StreamDecoder(self)

    def describe(self) -> dict:
        """What a checkpoint records: {"name": ..., "params": {...}}."""
        return {"name": self.name, "params": dict(self.params)}

    def check_codes(self, codes) -> torch.Tensor:
        """Validate codes -> LongTensor [K, F] on the CPU, or raise ValueError naming the problem."""
        if not isinstance(codes, torch.Tensor):
            codes = torch.as_tensor(np.asarray(codes))
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor, got dtype {codes.dtype}")
        if codes.dim() != 2 or codes.shape[0] != self.n_codebooks:
            raise ValueError(
                f"codes must have shape [K={self.n_codebooks}, F] for {self.name} "
                f"{self.params}, got {tuple(codes.shape)}"
            )
        codes = codes.to("cpu", torch.long)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cardinality):
            raise ValueError(
                f"codes must lie in [0, {self.cardinality}), got values in "
                f"[{int(codes.min())}, {int(codes.max())}] (special tokens must be removed first)"
            )
        return codes

    def _mono_at_rate(self, wav, sr: int) -> np.ndarray:
        """wav [C, T] or [T] (tensor or array) at sr -> float32 mono [T] at self.sample_rate."""
        sr = check_sample_rate(sr, "sr")
        if isinstance(wav, torch.Tensor):
            wav = wav.detach().cpu().float().numpy()
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim not in (1, 2) or wav.shape[-1] == 0:
            raise ValueError(f"wav must be [T] or [C, T] with T > 0, got shape {tuple(wav.shape)}")
        if not np.all(np.isfinite(wav)):
            raise ValueError("wav contains NaN or inf samples")
        return resample(to_mono(wav, channels_first=True), sr, self.sample_rate)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, params={self.params})"


class StreamDecoder:
    """Turns a growing code sequence into audio chunks, for any Codec with a decode().

    Each push decodes a window = `context` frames already emitted (so the decoder's
    convolutions/LSTM are warmed up as in a one-shot decode) + the new frames, and emits
    the audio of all but the last `lookahead` frames, which wait for the next push (their
    audio would be decoded without its right context). The last `crossfade` samples of
    each chunk are held back and blended (linear ramp) with the next window's decode of
    the same samples, so the windows meet without a click. flush() decodes the rest.

    Concatenated pushes + flush has exactly len == F * hop_length, and matches
    codec.decode(all codes) up to the small differences from the limited context.
    After flush() the decoder is empty and can start a new stream.
    """

    def __init__(
        self,
        codec: Codec,
        context_frames: int | None = None,
        lookahead_frames: int | None = None,
        crossfade_ms: float | None = None,
    ) -> None:
        self.codec = codec
        self.hop = codec.hop_length
        self.context = int(codec.stream_context_frames if context_frames is None else context_frames)
        self.lookahead = int(codec.stream_lookahead_frames if lookahead_frames is None else lookahead_frames)
        ms = codec.stream_crossfade_ms if crossfade_ms is None else crossfade_ms
        self.crossfade = int(round(ms * codec.sample_rate / 1000.0))
        if self.context < 0 or self.lookahead < 0 or self.crossfade < 0:
            raise ValueError(
                f"context_frames, lookahead_frames and crossfade_ms must be >= 0, got "
                f"{self.context}, {self.lookahead}, {ms}"
            )
        # The blended samples lie just before a chunk edge: both windows must cover them.
        if self.crossfade > min(self.hop, self.context * self.hop):
            raise ValueError(
                f"crossfade_ms={ms} ({self.crossfade} samples) must fit in one frame "
                f"({self.hop} samples) and in the left context ({self.context} frames)"
            )
        self._fade_in = torch.linspace(0.0, 1.0, self.crossfade + 2)[1:-1]
        self.reset()

    def reset(self) -> None:
        self._codes = torch.zeros(self.codec.n_codebooks, 0, dtype=torch.long)  # [K, kept]
        self._first = 0  # absolute index of self._codes[:, 0]
        self._total = 0  # frames pushed so far
        self._done = 0  # frames whose audio is out (except the held tail)
        self._tail = torch.zeros(0)  # previous window's decode of the last held samples

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [K, n] -> FloatTensor [t]: the audio that is final now (may be empty)."""
        codes = self.codec.check_codes(codes)
        self._codes = torch.cat([self._codes, codes], dim=1)
        self._total += codes.shape[1]
        ready = self._total - self.lookahead
        if ready <= self._done:
            return torch.zeros(0)
        return self._render(ready, final=False)

    def flush(self) -> torch.Tensor:
        """FloatTensor [t]: everything not yet emitted; then the decoder is reset."""
        if self._total > self._done:
            out = self._render(self._total, final=True)
        else:
            out = self._tail.clone()
        self.reset()
        return out

    def _start(self, done: int) -> int:
        """First frame of the window that renders from frame `done` on (subclasses may pick
        another; frames before the window start of the next render are dropped)."""
        return max(0, done - self.context)

    def _render(self, ready: int, final: bool) -> torch.Tensor:
        start = self._start(self._done)  # window: frames [start, total)
        window = self._codes[:, start - self._first:]
        audio = self.codec.decode(window).detach().to("cpu", torch.float32).reshape(-1)
        if audio.numel() != window.shape[1] * self.hop:
            raise RuntimeError(
                f"{self.codec.name}.decode gave {audio.numel()} samples for {window.shape[1]} "
                f"frames; streaming needs exactly {self.hop} per frame"
            )
        n_tail = self._tail.numel()
        lo = (self._done - start) * self.hop - n_tail
        hi = (ready - start) * self.hop
        new = audio[lo:hi].clone()
        if n_tail:
            new[:n_tail] = self._tail * (1.0 - self._fade_in[:n_tail]) + new[:n_tail] * self._fade_in[:n_tail]
        self._done = ready
        keep_from = self._start(ready)
        self._codes = self._codes[:, keep_from - self._first:]
        self._first = keep_from
        if final or self.crossfade == 0:
            self._tail = torch.zeros(0)
            return new
        self._tail = new[new.numel() - self.crossfade:].clone()
        return new[: new.numel() - self.crossfade]


# ----------------------------------------------------------------------------- EnCodec


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment now (not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached (None if it may be): avoids ~25 s of retries offline."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy may reach it even where DNS cannot: let the real download try
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        socket.create_connection((host, port), timeout=3.0).close()
        return None
    except OSError as e:
        return f"cannot reach {host}:{port} ({e})"


def _from_pretrained(source: str | Path, **kwargs):
    """EncodecModel.from_pretrained, refusing checkpoints with missing tensors (= random init)."""
    from transformers import EncodecModel

    model, info = EncodecModel.from_pretrained(str(source), output_loading_info=True, **kwargs)
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise CodecUnavailable(
            f"EnCodec weights at {source} lack {len(missing)} tensors (e.g. {missing[:3]}); "
            "they would be random, refusing to use them"
        )
    return model


def resolve_encodec(weights: str | os.PathLike | None = None, *, download: bool = True):
    """Find EnCodec 24 kHz weights -> (EncodecModel, where they came from).

    Order: `weights` or $S2S_ENCODEC_PATH (a folder from save_pretrained / a hub snapshot;
    when given, only it is tried), then the Hugging Face cache, then a download (skipped
    when HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set, download=False, or the hub is
    unreachable). Raises CodecUnavailable listing every attempt and how to fix it.
    """
    if weights:
        explicit, how = weights, "weights="
    else:
        explicit, how = os.environ.get("S2S_ENCODEC_PATH"), "S2S_ENCODEC_PATH="
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise CodecUnavailable(
                f"EnCodec weights not found: {how}{str(explicit)!r} is not a folder. Point it at a "
                f"folder holding config.json + model.safetensors (e.g. EncodecModel.from_pretrained("
                f"'{ENCODEC_REPO}').save_pretrained(FOLDER) on a machine with internet)."
            )
        try:
            return _from_pretrained(path, local_files_only=True), str(path)
        except CodecUnavailable:
            raise
        except Exception as e:  # transformers raises OSError/ValueError/... for bad folders
            raise CodecUnavailable(
                f"could not load EnCodec weights from {how}{str(path)!r}: {type(e).__name__}: {e}"
            ) from None

    tried = ["explicit path: none given (weights= option or S2S_ENCODEC_PATH)"]
    cache = _hf_hub_cache()
    try:
        return _from_pretrained(ENCODEC_REPO, cache_dir=str(cache), local_files_only=True), f"cache {cache}"
    except CodecUnavailable as e:
        tried.append(f"Hugging Face cache {cache}: {e}")
    except Exception as e:
        tried.append(f"Hugging Face cache {cache}: {ENCODEC_REPO} not there ({type(e).__name__})")

    offline = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if _env_flag(v)]
    if offline:
        tried.append(f"download: skipped, {offline[0]}={os.environ[offline[0]]}")
    elif not download:
        tried.append("download: skipped, download=False")
    elif (why := _hub_unreachable()) is not None:
        tried.append(f"download: skipped, {why}")
    else:
        try:
            return _from_pretrained(ENCODEC_REPO, cache_dir=str(cache)), f"download of {ENCODEC_REPO}"
        except Exception as e:
            tried.append(f"download of {ENCODEC_REPO}: {type(e).__name__}: {str(e)[:300]}")

    raise CodecUnavailable(
        "EnCodec 24 kHz weights not available. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nFix: set S2S_ENCODEC_PATH to a folder saved from '{ENCODEC_REPO}' "
        "(config.json + model.safetensors), or run once with internet access so the "
        "Hugging Face cache holds it, or use the offline codec: load_codec('world_vq')."
    )


def check_bandwidth(bandwidth) -> float:
    try:
        bw = float(bandwidth)
    except (TypeError, ValueError):
        bw = None
    if bw not in ENCODEC_BANDWIDTHS:
        raise ValueError(
            f"bandwidth must be one of {sorted(ENCODEC_BANDWIDTHS)} kbps, got {bandwidth!r}"
        )
    return bw


class EncodecCodec(Codec):
    """EnCodec 24 kHz (transformers.EncodecModel) on the CPU.

    model= takes an already-built EncodecModel (tests, custom loading); otherwise the
    weights resolve as described in resolve_encodec().
    """

    name = "encodec_24khz"
    sample_rate = 24000
    frame_rate = 75.0
    cardinality = 1024
    # Streaming sizes, measured against the one-shot decode (full-size architecture, random
    # weights with k-means-style codebooks, a 4 s human recording, pushes of 1/5/15 frames;
    # max error / peak of the one-shot audio, after the first 7 frames):
    #   left context  2: 8.5e-5   4: 4.3e-5   6: 1.9e-5   8: 8.7e-6   10: 3.9e-6   16: 7e-7   32: 5e-7
    # Look-ahead 1 gave the same numbers as 0: the decoder is causal (causal convs,
    # right-trimmed transposed convs, one-way LSTM), so no frame waits for the next push.
    # Context is what matters (frame-rate conv kernel 7 = 6 frames, then the LSTM state):
    # 16 frames (213 ms) reaches the float-noise floor, with margin for a trained LSTM's
    # longer memory; at 15-frame pushes it costs ~2.5x the one-shot decode work
    # (1 thread, 5 s clip: stream RTF 0.26 vs 0.10).
    # The first 7 frames differ by up to 6e-4 when the first push is shorter than 7 frames:
    # the one-shot decode reflect-pads its start with frames 1..6, which a stream cannot see.
    # A 2.5 ms crossfade cut the step error at chunk edges 4-25x when context was too short.
    stream_context_frames = 16
    stream_lookahead_frames = 0
    stream_crossfade_ms = 2.5

    def __init__(
        self,
        bandwidth: float = 3.0,
        weights: str | os.PathLike | None = None,
        model=None,
        download: bool = True,
    ) -> None:
        bandwidth = check_bandwidth(bandwidth)
        if model is None:
            model, self.weights_source = resolve_encodec(weights, download=download)
        else:
            self.weights_source = f"given {type(model).__name__}"
        cfg = model.config
        got = (cfg.sampling_rate, cfg.codebook_size, cfg.audio_channels, int(np.prod(cfg.upsampling_ratios)))
        if got != (24000, 1024, 1, 320):
            raise ValueError(
                "EnCodec model must be 24 kHz mono, 1024 codes, hop 320 "
                f"(got sampling_rate, codebook_size, audio_channels, hop = {got})"
            )
        if bandwidth not in cfg.target_bandwidths:
            raise ValueError(
                f"this EnCodec model supports bandwidths {cfg.target_bandwidths}, got {bandwidth}"
            )
        self.n_codebooks = ENCODEC_BANDWIDTHS[bandwidth]
        if model.quantizer.get_num_quantizers_for_bandwidth(bandwidth) != self.n_codebooks:
            raise ValueError(f"EnCodec model does not map {bandwidth} kbps to {self.n_codebooks} codebooks")
        for i in range(self.n_codebooks):
            if not torch.any(model.quantizer.layers[i].codebook.embed != 0):
                raise CodecUnavailable(
                    f"EnCodec codebook {i} is all zeros ({self.weights_source}): the model is "
                    "untrained (random init encodes everything to code 0); refusing to use it"
                )
        self.model = model.to("cpu").eval()
        self.bandwidth = bandwidth
        self.params = {"bandwidth": bandwidth}

    def encode(self, wav, sr: int) -> torch.Tensor:
        """wav [C, T] or [T] at sr -> LongTensor [K, ceil(T' / 320)], T' = length at 24 kHz."""
        x = torch.from_numpy(self._mono_at_rate(wav, sr))[None, None]  # [B=1, C=1, T']
        with torch.inference_mode():
            out = self.model.encode(x, bandwidth=self.bandwidth)
        return out.audio_codes[0, 0].clone().long()  # [chunks=1, B, K, F] -> [K, F]

    def decode(self, codes) -> torch.Tensor:
        """LongTensor [K, F] -> FloatTensor [F * 320] at 24 kHz."""
        codes = self.check_codes(codes)
        if codes.shape[1] == 0:
            return torch.zeros(0)
        with torch.inference_mode():
            audio = self.model.decode(codes[None, None], [None]).audio_values  # [B=1, C=1, T]
        return audio[0, 0].float().clone()


# ----------------------------------------------------------------------------- front door


def available_codecs() -> list[str]:
    return list(CODECS)


_ENCODEC_OPTIONS = ("bandwidth", "weights", "model", "download")


def load_codec(name: str, **options) -> Codec:
    """Build a codec by name: "encodec_24khz" (bandwidth, weights, model, download) or
    "world_vq" (tables). Unknown names/options/values raise ValueError listing valid ones."""
    if name == "encodec_24khz":
        bad = sorted(set(options) - set(_ENCODEC_OPTIONS))
        if bad:
            raise ValueError(f"unknown option(s) {bad} for encodec_24khz; valid: {list(_ENCODEC_OPTIONS)}")
        return EncodecCodec(**options)
    if name == "world_vq":
        from s2s.world_vq import WorldVQCodec

        bad = sorted(set(options) - {"tables"})
        if bad:
            raise ValueError(f"unknown option(s) {bad} for world_vq; valid: ['tables']")
        return WorldVQCodec(**options)
    raise ValueError(f"unknown codec {name!r}; available: {available_codecs()}")


def default_codec(**options) -> Codec:
    """EnCodec (options as for load_codec) when its weights resolve, else WORLD-VQ (default
    tables) with a logging warning; CodecUnavailable naming both problems if neither loads."""
    bad = sorted(set(options) - set(_ENCODEC_OPTIONS))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for default_codec; valid: {list(_ENCODEC_OPTIONS)}")
    try:
        return EncodecCodec(**options)
    except CodecUnavailable as e:
        from s2s.world_vq import WorldVQCodec

        try:
            codec = WorldVQCodec(tables=None)
        except CodecUnavailable as e2:
            raise CodecUnavailable(f"no codec is available.\n{e}\nWORLD-VQ fallback: {e2}") from None
        log.warning("EnCodec weights were not found, using the offline WORLD-VQ codec instead.\n%s", e)
        return codec


if __name__ == "__main__":
    # Import by name: under -m this file is __main__, and s2s.world_vq subclasses the error
    # types of s2s.codec, which must be the same classes that default_codec catches.
    from s2s.codec import CodecUnavailable as _Unavailable, default_codec as _default

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        c = _default()
    except _Unavailable as e:
        sys.exit(f"no codec available: {e}")
    print(f"default codec: {c!r} ({getattr(c, 'weights_source', 'tables')})")
