"""One conversational turn: speech in -> prompt front-end -> model -> reply codes -> speech out.

    pipe = s2s.load_pipeline("ckpts/run1")          # None = the bundled prototype
    reply = pipe.respond("question.wav", seed=0)     # audio, codes and per-stage timings
    for chunk in pipe.stream("question.wav"):        # <= 200 ms chunks as frames complete
        play(chunk.audio); reply = chunk.reply       # the last chunk carries the Reply

    python -m s2s.serve.pipeline IN.wav --checkpoint DIR --out reply.wav   # prints the timings

The codec always runs on the CPU; the model on CUDA when available (or as forced). What the
model hears comes from the checkpoint's front-end (s2s/models/frontend.py): Whisper features are on
the critical path; the codec encoding of the prompt is on it only for a model that hears codes,
otherwise it runs after the last audio chunk (for the token grids; prompt_codes=False skips it).
Timings are milliseconds: load, frontend (features), encode (prompt codes, when on the path),
prefill, first_frame (prompt heard -> first complete reply frame), generate (all model time),
decode (all codec decode time), time_to_first_audio (audio loaded -> first audio chunk ready:
front-end + prefill + first frames + decode, what a person waits after speaking), total,
prompt_codes (off the path); realtime_factor = reply seconds per second of generate + decode
(> 1 is faster than real time).
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

from s2s.codecs.codec import Codec, codec_for
from s2s.io.audio import load_audio, save_audio
from s2s.models import generate as gen
from s2s.models.checkpoint import check_codec, load_checkpoint, read_config
from s2s.models.device import pick_device
from s2s.models.frontend import check_frontend, check_prompt_audio, model_frontend

ASSETS = Path(__file__).resolve().parents[2] / "assets"
PROTOTYPE = ASSETS / "prototype"
CHUNK_MS = 200.0  # longest streamed chunk
FIRST_AUDIO_FRAMES = 3  # the first chunk: 40 ms of audio, out as soon as its frames are final


@dataclass
class Reply:
    audio: np.ndarray  # [T] float32 at sample_rate
    sample_rate: int
    prompt_codes: torch.Tensor | None  # [K, F_prompt] (None when not asked for)
    reply_codes: torch.Tensor  # [K, F_reply]
    timings: dict[str, float] = field(default_factory=dict)
    prompt_features: torch.Tensor | None = None  # [S, D] what a features model heard
    prompt_audio: np.ndarray | None = None  # [T] the prompt at sample_rate

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass
class Chunk:
    audio: np.ndarray  # [t] float32, at most CHUNK_MS long
    sample_rate: int
    frames: int  # reply frames generated so far
    reply: Reply | None = None  # set on the last chunk only


class Pipeline:
    def __init__(self, model, codec: Codec, config: dict, device: torch.device, checkpoint: str = "",
                 frontend=None):
        check_codec(config, codec.describe(), where=f"checkpoint {checkpoint!r}")
        if frontend is None:
            frontend, _ = model_frontend(model.cfg.frontend, "cuda" if torch.device(device).type == "cuda" else "cpu")
        desc = {"name": model.cfg.frontend, "params": frontend.describe()["params"]}
        check_frontend(config if "frontend" in config else {**config, "frontend": desc}, desc,
                       where=f"checkpoint {checkpoint!r}")
        self.frontend, self.frontend_desc = frontend, desc
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
            "frontend": self.frontend_desc,
            "preset": self.model.cfg.preset,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device),
            "training": self.config.get("training", {}),
        }

    def load(self, source, max_seconds: float = 60.0) -> tuple[torch.Tensor, float]:
        """Audio source (path or (array, sr)) -> validated mono prompt [T] at the codec's rate
        (refused when silent, shorter than 0.2 s or longer than the model takes) and load ms."""
        t0 = time.perf_counter()
        sr = self.codec.sample_rate
        wav = load_audio(source, sr, max_seconds=max_seconds)
        check_prompt_audio(wav.numpy(), sr)
        cfg = self.model.cfg
        limits = []
        if cfg.uses_codes:
            limits.append(cfg.max_prompt_frames / self.codec.frame_rate)
        if cfg.uses_features:
            limits.append(cfg.max_feature_frames / self.frontend.frame_rate)
        if len(wav) / sr > min(limits):
            raise ValueError(f"prompt is {len(wav) / sr:.1f} s; this model takes at most {min(limits):.1f} s")
        return wav, (time.perf_counter() - t0) * 1e3

    def hear(self, wav: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, dict]:
        """Prompt [T] at the codec's rate -> (codes [K, F] or None, features [S, D] or None, ms):
        what the model needs, and nothing else, on the critical path."""
        cfg, sr, timings = self.model.cfg, self.codec.sample_rate, {}
        codes = features = None
        if cfg.uses_features:
            t = time.perf_counter()
            features = self.frontend.features(wav, sr)
            timings["frontend"] = (time.perf_counter() - t) * 1e3
        if cfg.uses_codes:
            t = time.perf_counter()
            codes = self.codec.encode(wav, sr)
            timings["encode"] = (time.perf_counter() - t) * 1e3
        return codes, features, timings

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
        prompt_codes: bool = True,
    ) -> Iterator[Chunk]:
        """Yield reply audio chunks (<= 200 ms) as frames complete; the last carries the Reply.

        prompt_codes: also encode the prompt with the codec (after the audio is out) for the
        token grids, when the model did not need them."""
        start = time.perf_counter()
        max_frames = self.reply_frames(max_seconds)
        wav, load_ms = self.load(source, prompt_max_seconds)
        heard_from = time.perf_counter()
        prompt, features, timings = self.hear(wav)
        timings = {"load": load_ms, **timings}
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
            self.model, prompt, features=features, max_frames=max_frames, temperature=temperature,
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
        if prompt is None and prompt_codes:
            prompt = self.codec.encode(wav, self.codec.sample_rate)
            timings["prompt_codes"] = (time.perf_counter() - end) * 1e3

        n_codebooks = self.model.cfg.n_codebooks
        reply_codes = torch.stack(frames, dim=1) if frames else torch.zeros(n_codebooks, 0, dtype=torch.long)
        wave = np.concatenate(audio) if audio else np.zeros(0, np.float32)
        seconds = len(wave) / sr
        timings.update(
            generate=model_s * 1e3,
            decode=decode_s * 1e3,
            time_to_first_audio=((first_audio or end) - heard_from) * 1e3,
            total=(end - start) * 1e3,
            realtime_factor=seconds / max(model_s + decode_s, 1e-9),
        )
        timings.setdefault("first_frame", timings["generate"])
        reply = Reply(wave, sr, prompt, reply_codes, timings, features, wav.numpy())
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
                "(python -m s2s.training.train writes one)"
            )
        checkpoint = PROTOTYPE
    device = pick_device(device)
    config = read_config(checkpoint)
    codec = codec or codec_for(config)
    name = config["model"].get("frontend", "codes")
    frontend, desc = model_frontend(name, "cuda" if device.type == "cuda" else "cpu")
    model, config = load_checkpoint(checkpoint, device=device, codec=codec.describe(), frontend=desc)
    return Pipeline(model, codec, config, device, checkpoint=str(checkpoint), frontend=frontend)


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
