"""One conversational turn: speech in -> codec codes -> model -> reply codes -> speech out.

    pipe = s2s.load_pipeline("ckpts/run1")          # None = the bundled prototype
    reply = pipe.respond("question.wav", seed=0)     # audio, codes and per-stage timings
    for chunk in pipe.stream("question.wav"):        # <= 200 ms chunks as frames complete
        play(chunk.audio); reply = chunk.reply       # the last chunk carries the Reply

    python -m s2s.pipeline IN.wav --checkpoint DIR --out reply.wav   # prints the timings

The codec always runs on the CPU; the model on CUDA when available (or as forced). Timings
are milliseconds: load, encode, prefill, first_frame (prompt encoded -> first complete reply
frame), generate (all model time), decode (all codec decode time), time_to_first_audio (prompt
encoded -> first audio chunk ready), total; realtime_factor = reply seconds per second of
generate + decode (> 1 is faster than real time).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from s2s import generate as gen
from s2s.audio import load_audio, save_audio
from s2s.checkpoint import check_codec, load_checkpoint, read_config
from s2s.codec import Codec, load_codec

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PROTOTYPE = ASSETS / "prototype"
CHUNK_MS = 200.0  # longest streamed chunk
FIRST_AUDIO_FRAMES = 3  # the first chunk: 40 ms of audio, out as soon as its frames are final


@dataclass
class Reply:
    audio: np.ndarray  # [T] float32 at sample_rate
    sample_rate: int
    prompt_codes: torch.Tensor  # [K, F_prompt]
    reply_codes: torch.Tensor  # [K, F_reply]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass
class Chunk:
    audio: np.ndarray  # [t] float32, at most CHUNK_MS long
    sample_rate: int
    frames: int  # reply frames generated so far
    reply: Reply | None = None  # set on the last chunk only


def pick_device(device: str | torch.device | None) -> torch.device:
    """None = CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'cpu'")
    return device


def codec_for(config: dict) -> Codec:
    """The codec a checkpoint was trained with, built from what its config.json records."""
    spec = config["codec"]
    options = {"bandwidth": spec["params"]["bandwidth"]} if spec["name"] == "encodec_24khz" else {}
    return load_codec(spec["name"], **options)


class Pipeline:
    def __init__(self, model, codec: Codec, config: dict, device: torch.device, checkpoint: str = ""):
        check_codec(config, codec.describe(), where=f"checkpoint {checkpoint!r}")
        if (codec.n_codebooks, codec.cardinality) != (model.cfg.n_codebooks, model.cfg.cardinality):
            raise ValueError(
                f"codec {codec.name} gives {codec.n_codebooks} x {codec.cardinality} codes, the model "
                f"expects {model.cfg.n_codebooks} x {model.cfg.cardinality}"
            )
        self.model, self.codec, self.config, self.device = model, codec, config, device
        self.checkpoint = checkpoint

    def info(self) -> dict:
        """What is live: checkpoint, codec, preset, parameters, device, training summary."""
        return {
            "checkpoint": self.checkpoint,
            "codec": self.codec.describe(),
            "preset": self.model.cfg.preset,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device),
            "training": self.config.get("training", {}),
        }

    def encode(self, source, max_seconds: float = 60.0) -> tuple[torch.Tensor, dict]:
        """Audio source (path or (array, sr)) -> prompt codes [K, F] and {load, encode} ms."""
        t0 = time.perf_counter()
        wav = load_audio(source, self.codec.sample_rate, max_seconds=max_seconds)
        t1 = time.perf_counter()
        codes = self.codec.encode(wav, self.codec.sample_rate)
        t2 = time.perf_counter()
        frames = self.model.cfg.max_prompt_frames
        if codes.shape[1] > frames:
            raise ValueError(
                f"prompt is {codes.shape[1] / self.codec.frame_rate:.1f} s; this model takes at most "
                f"{frames / self.codec.frame_rate:.1f} s"
            )
        return codes, {"load": (t1 - t0) * 1e3, "encode": (t2 - t1) * 1e3}

    def stream(
        self,
        source,
        *,
        temperature: float = 0.7,
        top_k: int = 50,
        top_p: float = 1.0,
        seed: int | None = None,
        max_seconds: float | None = None,
        prompt_max_seconds: float = 60.0,
        compile: bool = False,
    ) -> Iterator[Chunk]:
        """Yield reply audio chunks (<= 200 ms) as frames complete; the last carries the Reply."""
        start = time.perf_counter()
        prompt, timings = self.encode(source, prompt_max_seconds)
        max_frames = self.reply_frames(max_seconds)
        hop, sr = self.codec.hop_length, self.codec.sample_rate
        max_chunk = int(CHUNK_MS / 1000 * sr)
        decoder = self.codec.stream_decoder()
        encoded = time.perf_counter()
        frames: list[torch.Tensor] = []
        pending: list[torch.Tensor] = []
        audio: list[np.ndarray] = []
        model_s = decode_s = 0.0
        first_audio = None

        def decode(chunk: list[torch.Tensor] | None) -> torch.Tensor:
            """Push frames (None = flush) through the stream decoder, timing only the decode."""
            nonlocal decode_s
            t = time.perf_counter()
            wave = decoder.flush() if chunk is None else decoder.push(torch.stack(chunk, dim=1))
            decode_s += time.perf_counter() - t
            return wave

        def emit(wave: torch.Tensor) -> Iterator[Chunk]:
            nonlocal first_audio
            wave = wave.numpy().astype(np.float32, copy=False)
            for i in range(0, len(wave), max_chunk):
                if first_audio is None:
                    first_audio = time.perf_counter()
                audio.append(wave[i : i + max_chunk])
                yield Chunk(audio=audio[-1], sample_rate=sr, frames=len(frames))

        frame_iter = gen.generate(
            self.model, prompt, max_frames=max_frames, temperature=temperature,
            top_k=top_k, top_p=top_p, seed=seed, compile=compile, timings=timings,
        )
        t = time.perf_counter()
        for frame in frame_iter:
            now = time.perf_counter()
            model_s += now - t
            if not frames:
                timings["first_frame"] = (now - encoded) * 1e3
            frames.append(frame)
            pending.append(frame)
            # The decoder holds back `lookahead` frames, so the first push waits for that many more.
            first = len(frames) == len(pending)
            push_at = FIRST_AUDIO_FRAMES + decoder.lookahead if first else max_chunk // hop - 1
            if len(pending) >= push_at:
                wave = decode(pending)
                pending = []
                yield from emit(wave)
            t = time.perf_counter()
        model_s += time.perf_counter() - t
        if pending:  # the time a consumer spends between chunks is not decode time
            yield from emit(decode(pending))
        yield from emit(decode(None))
        end = time.perf_counter()

        n_codebooks = self.model.cfg.n_codebooks
        reply_codes = torch.stack(frames, dim=1) if frames else torch.zeros(n_codebooks, 0, dtype=torch.long)
        wave = np.concatenate(audio) if audio else np.zeros(0, np.float32)
        seconds = len(wave) / sr
        timings.update(
            generate=model_s * 1e3,
            decode=decode_s * 1e3,
            time_to_first_audio=((first_audio or end) - encoded) * 1e3,
            total=(end - start) * 1e3,
            realtime_factor=seconds / max(model_s + decode_s, 1e-9),
        )
        timings.setdefault("first_frame", timings["generate"])
        reply = Reply(wave, sr, prompt, reply_codes, timings)
        yield Chunk(audio=np.zeros(0, np.float32), sample_rate=sr, frames=len(frames), reply=reply)

    def respond(self, source, **options) -> Reply:
        """The whole reply at once (the streamed chunks joined); options as for stream()."""
        for chunk in self.stream(source, **options):
            if chunk.reply is not None:
                return chunk.reply
        raise RuntimeError("stream() ended without a reply")  # unreachable: stream always ends with one

    def reply_frames(self, max_seconds: float | None) -> int:
        limit = self.model.cfg.max_reply_frames
        if max_seconds is None:
            return limit
        if not isinstance(max_seconds, (int, float)) or not max_seconds > 0:
            raise ValueError(f"max_seconds must be a positive number, got {max_seconds!r}")
        frames = int(round(max_seconds * self.codec.frame_rate))
        if frames > limit:
            raise ValueError(
                f"max_seconds {max_seconds} exceeds this model's longest reply, "
                f"{limit / self.codec.frame_rate:.1f} s"
            )
        return max(frames, 1)


def load_pipeline(
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    codec: Codec | None = None,
) -> Pipeline:
    """A ready pipeline. checkpoint None = the bundled prototype in assets/prototype.

    codec: an already-built codec (it must be the checkpoint's); by default the one the
    checkpoint records is loaded.
    """
    if checkpoint is None:
        if not (PROTOTYPE / "config.json").is_file():
            raise FileNotFoundError(
                f"no bundled prototype at {PROTOTYPE}; pass a checkpoint directory "
                "(python -m s2s.train writes one)"
            )
        checkpoint = PROTOTYPE
    device = pick_device(device)
    config = read_config(checkpoint)
    codec = codec or codec_for(config)
    model, config = load_checkpoint(checkpoint, device=device, codec=codec.describe())
    return Pipeline(model, codec, config, device, checkpoint=str(checkpoint))


def format_timings(timings: dict[str, float]) -> str:
    rows = [f"{k:>20}: {v:9.1f} ms" for k, v in timings.items() if k != "realtime_factor"]
    rows.append(f"{'realtime_factor':>20}: {timings['realtime_factor']:9.2f} x")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="One speech-to-speech turn: IN.wav -> reply.wav")
    p.add_argument("input", help="the spoken prompt (wav, flac, ogg or mp3)")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: bundled prototype)")
    p.add_argument("--out", default="reply.wav", help="where to write the reply (wav)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None, help="longest reply")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        pipe = load_pipeline(args.checkpoint, device=args.device)
        reply = pipe.respond(
            args.input, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            seed=args.seed, max_seconds=args.max_seconds,
        )
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    save_audio(args.out, reply.audio, reply.sample_rate)
    info = pipe.info()
    print(f"checkpoint {info['checkpoint']} ({info['preset']}, {info['parameters'] / 1e6:.1f}M) "
          f"codec {info['codec']['name']} device {info['device']}")
    print(f"prompt {reply.prompt_codes.shape[1]} frames -> reply {reply.reply_codes.shape[1]} frames "
          f"({reply.seconds:.2f} s) -> {args.out}")
    print(format_timings(reply.timings))


if __name__ == "__main__":
    main()
