"""The codec interface every backend implements, and the streaming decoder they share.

    class MyCodec(Codec):                        # name, sample_rate, frame_rate, n_codebooks, cardinality
        def encode(self, wav, sr): ...           # wav [C, T] or [T] at sr -> LongTensor [K, F]
        def decode(self, codes): ...             # LongTensor [K, F] -> FloatTensor [F * hop_length]
    dec = codec.stream_decoder()
    chunks = [dec.push(codes[:, i:i + 15]) for i in range(0, F, 15)] + [dec.flush()]

The backends (s2s/codecs/encodec_24khz.py, s2s/codecs/world_vq.py) import this module; s2s/codecs/codec.py, the
front door that builds them by name, imports the backends. Nothing here imports a backend.
"""

from __future__ import annotations

import numpy as np
import torch

from s2s.io.audio import check_sample_rate, resample, to_mono


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
