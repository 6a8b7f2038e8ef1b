"""How the tabs show things: the checkpoint card, the stage timings, codec labels, result tables,
streamed WAV chunks, and the loss curves read from a checkpoint's training log."""

from __future__ import annotations

import csv
import io
import json
import math
import wave
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from s2s.serve.pipeline import Pipeline

CODEC_NAMES = {"encodec_24khz": "EnCodec 24 kHz", "world_vq": "WORLD-VQ"}
TIMING_ROWS = (("load", "read + resample"), ("frontend", "front-end (features)"), ("encode", "encode (codec)"),
               ("prefill", "prefill"), ("first_frame", "first reply frame"),
               ("time_to_first_audio", "time to first audio"),
               ("generate", "generate (all frames)"), ("decode", "decode (all audio)"),
               ("prompt_codes", "prompt codes (after the reply, for the grid)"), ("total", "total"))


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
