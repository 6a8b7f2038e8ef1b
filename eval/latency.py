"""Latency of the speech-to-speech turn, per model preset (random weights) and per checkpoint.

    python -m eval.latency                                     # every preset, a table
    python -m eval.latency --presets 10m 50m --frames 75 --repeats 2 --json
    python -m eval.latency --checkpoint ckpts/run1 --checkpoint ckpts/run2

One row per model (presets: random weights, hearing through the Whisper tiny.en front-end like
the prototype): encode ms (the prompt as the model hears it: its front-end's features
and/or the codec's codes, 3 s of real speech: the CMU ARCTIC clip that s2s.serve.bench uses), prefill
ms, decode ms per reply frame (median and p90, s2s.serve.bench's time_generation), time to first
audio (prompt heard -> first audio chunk ready, through Pipeline.stream; speech_end_to_audio_ms
adds the hearing: the whole prompt in hand -> first audio chunk ready), realtime factor
(reply seconds per second of generate + decode), peak memory, device and torch thread count. One warm-up run is excluded everywhere; figures are
medians over `repeats` timed runs.

Peak memory: each row normally runs in its own subprocess (memory_scope "subprocess": the
peak RSS of a process that loaded only that model and its codec; on CUDA the peak allocated).
Given an already-built codec object (tests; codecs built in code), rows run in this process
(memory_scope "in-process": the peak RSS while measuring, after resetting the kernel's
high-water mark, so it includes whatever else this process holds).

A row that cannot be measured (no codec available, a checkpoint that fails to load) comes
back with status "error: ..." and NaN figures instead of stopping the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from s2s.codecs.codec import Codec, codec_for, default_codec
from s2s.models.checkpoint import load_checkpoint, read_config
from s2s.models.device import pick_device
from s2s.models.frontend import WhisperFrontend
from s2s.models.model import PRESETS, S2SModel, preset_config
from s2s.serve import bench
from s2s.serve.pipeline import Pipeline

PRESET_FRONTEND = "whisper_tiny_en"  # what the preset rows hear: the product's default front-end
FIGURES = ("encode_ms", "prefill_ms", "decode_ms_per_frame", "decode_ms_p90", "frames_per_s",
           "x_realtime", "time_to_first_audio_ms", "speech_end_to_audio_ms", "realtime_factor",
           "peak_memory_mb")
COLUMNS = ("kind", "name", "status", "preset", "parameters", "codec", "device", "threads", "frames",
           "repeats", "prompt_seconds") + FIGURES + ("memory_scope",)


def device_name(device: torch.device) -> str:
    """"cpu (<model name>)" or the CUDA device's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.+)", text)
        return f"cpu ({model.group(1).strip()})" if model else "cpu"
    except OSError:
        return "cpu"


def _reset_peak(device: torch.device) -> bool:
    """Reset the peak-memory counter of this process; False if the kernel does not allow it."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := current RSS
        return True
    except OSError:
        return False


def _peak_since_reset_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return bench.peak_memory_mb(device)
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    except (OSError, AttributeError):
        return bench.peak_memory_mb(device)


def measure(model: S2SModel, codec: Codec, device: torch.device, *, frames: int = 75,
            repeats: int = 2, threads: int | None = None, source=None) -> dict:
    """Time one model with one codec in this process -> the figures of a row (see FIGURES).

    source: the prompt (path or (array, sr)); default 3 s of CMU ARCTIC (s2s.serve.bench.prompt_audio).
    frames: reply frames per timed run (clipped to the model's max_reply_frames).
    """
    if frames < 2 or repeats < 1:
        raise ValueError(f"frames must be >= 2 and repeats >= 1, got frames={frames}, repeats={repeats}")
    if threads:
        torch.set_num_threads(threads)
    source = source if source is not None else bench.prompt_audio(bench.PROMPT_SECONDS)
    frames = min(frames, model.cfg.max_reply_frames)
    pipe = Pipeline(model, codec, {"codec": codec.describe()}, device, checkpoint="latency")
    hear_ms, codes, features, wav = [], None, None, None
    for run in range(repeats + 1):  # run 0 is the warm-up
        wav, _ = pipe.load(source)
        codes, features, t = pipe.hear(wav)  # the front-end and/or codec encode the model needs
        if run:
            hear_ms.append(t.get("frontend", 0.0) + t.get("encode", 0.0))
    row = {"frames": frames, "repeats": repeats, "prompt_seconds": len(wav) / codec.sample_rate,
           "encode_ms": statistics.median(hear_ms)}
    row.update(bench.time_generation(model, codes, frames, repeats, features=features))
    ttfa, end_to_audio, rtf = [], [], []
    for run in range(repeats + 1):
        reply = pipe.respond(source, seed=run, max_seconds=frames / codec.frame_rate, prompt_codes=False)
        if run:
            t = reply.timings
            ttfa.append(t["time_to_first_audio"] - t.get("frontend", 0.0) - t.get("encode", 0.0))
            end_to_audio.append(t["time_to_first_audio"])  # audio loaded -> first chunk: all of it
            rtf.append(t["realtime_factor"])
    row["time_to_first_audio_ms"] = statistics.median(ttfa)
    row["speech_end_to_audio_ms"] = statistics.median(end_to_audio)
    row["realtime_factor"] = statistics.median(rtf)
    return row


def _base_row(kind: str, name: str, device: torch.device, threads: int) -> dict:
    row = {c: math.nan for c in COLUMNS}
    row.update(kind=kind, name=name, status="ok", preset="", codec="", device=device_name(device),
               threads=threads, memory_scope="")
    return row


def _measure_row(kind: str, name: str, build, device: torch.device, frames: int, repeats: int,
                 threads: int, scope: str) -> dict:
    """build() -> (model, codec); errors become the row's status."""
    torch.set_num_threads(threads)
    row = _base_row(kind, name, device, threads)
    reset = _reset_peak(device)
    try:
        model, codec = build()
        row.update(preset=model.cfg.preset, parameters=sum(p.numel() for p in model.parameters()),
                   codec=codec.name)
        row.update(measure(model, codec, device, frames=frames, repeats=repeats, threads=threads))
    except Exception as e:  # noqa: BLE001 - a row that fails is reported, the table goes on
        row["status"] = f"error: {type(e).__name__}: {e}"
        return row
    if scope == "subprocess":
        row["peak_memory_mb"] = bench.peak_memory_mb(device)
    else:
        row["peak_memory_mb"] = _peak_since_reset_mb(device) if reset else math.nan
    row["memory_scope"] = scope
    return row


def preset_row(name: str, codec: Codec | dict, device: torch.device, *, frames: int, repeats: int,
               threads: int, scope: str = "in-process") -> dict:
    """One preset, random weights (seed 0), hearing through PRESET_FRONTEND (the prototype's
    front-end: its features are on the critical path). codec: a Codec, its describe() dict to
    build here, or None = default_codec()."""
    def build():
        if isinstance(codec, Codec):
            c = codec
        else:
            c = codec_for({"codec": codec}) if codec else default_codec()
        torch.manual_seed(0)
        cfg = preset_config(name, frontend=PRESET_FRONTEND, feature_dim=WhisperFrontend.dim)
        return S2SModel(cfg).to(device).eval(), c
    return _measure_row("preset", name, build, device, frames, repeats, threads, scope)


def checkpoint_row(path: str | Path, device: torch.device, *, frames: int, repeats: int, threads: int,
                   codec: Codec | None = None, scope: str = "in-process") -> dict:
    """One checkpoint directory, with its own codec (or the given one, which must match)."""
    def build():
        c = codec or codec_for(read_config(path))
        model, _ = load_checkpoint(path, device=device, codec=c.describe())
        return model, c
    return _measure_row("checkpoint", str(path), build, device, frames, repeats, threads, scope)


def _run_one(args: list[str], kind: str, name: str, device: torch.device, threads: int) -> dict:
    cmd = [sys.executable, "-m", "eval.latency", "--one", *args]
    root = str(Path(__file__).resolve().parent.parent)  # so `-m eval.latency` resolves from any cwd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        row = _base_row(kind, name, device, threads)
        row["status"] = f"error: subprocess failed (exit {out.returncode}): {out.stderr.strip()[-500:]}"
        return row
    return json.loads(lines[-1])


def latency_rows(
    presets: list[str],
    checkpoints: list[str | Path] = (),
    *,
    codec: Codec | dict | None = None,
    device: str | torch.device | None = None,
    frames: int = 75,
    repeats: int = 2,
    threads: int | None = None,
    isolate: bool | None = None,
    progress=None,
) -> list[dict]:
    """Rows for the presets (random weights, with `codec`) then the checkpoints (their own codec).

    codec: a Codec object, a describe() dict ({"name", "params"}), or None = the first
    checkpoint's codec, else the default codec. isolate: one subprocess per row (default:
    yes unless codec is a Codec object, which cannot cross a process boundary).
    progress: optional callable(str) told what is being measured.
    """
    bad = [p for p in presets if p not in PRESETS]
    if bad:
        raise ValueError(f"unknown preset(s) {bad}; valid presets: {list(PRESETS)}")
    device = pick_device(device)
    threads = threads or torch.get_num_threads()
    if isolate is None:
        isolate = not isinstance(codec, Codec)
    if isolate and isinstance(codec, Codec):
        raise ValueError("isolate=True needs codec as a describe() dict or None, not a Codec object")
    if codec is None and presets:
        codec = _default_codec_spec(checkpoints)
    common = ["--frames", str(frames), "--repeats", str(repeats), "--threads", str(threads),
              "--device", device.type]
    rows = []
    for name in presets:
        if progress:
            progress(f"latency: preset {name}")
        if isolate:
            spec = ["--codec", json.dumps(codec)] if isinstance(codec, dict) else []
            rows.append(_run_one(["--presets", name, *spec, *common], "preset", name, device, threads))
        else:
            rows.append(preset_row(name, codec, device, frames=frames, repeats=repeats, threads=threads))
    for path in checkpoints:
        if progress:
            progress(f"latency: checkpoint {path}")
        if isolate:
            try:
                read_config(path)  # a bad config.json needs no subprocess to be reported
            except ValueError as e:
                row = _base_row("checkpoint", str(path), device, threads)
                row["status"] = f"error: {type(e).__name__}: {e}"
                rows.append(row)
                continue
            rows.append(_run_one(["--checkpoint", str(path), *common], "checkpoint", str(path), device, threads))
        else:
            given = codec if isinstance(codec, Codec) else None
            rows.append(checkpoint_row(path, device, frames=frames, repeats=repeats, threads=threads, codec=given))
    return rows


def _default_codec_spec(checkpoints) -> dict | None:
    """The codec of the first readable checkpoint; else None (the default codec)."""
    for path in checkpoints:
        try:
            return read_config(path)["codec"]
        except ValueError:
            continue
    return None


def format_table(rows: list[dict]) -> str:
    head = (f"{'name':>14} {'params':>8} {'codec':>13} {'thr':>3} {'enc ms':>7} {'prefill':>8} "
            f"{'ms/frame':>9} {'p90':>7} {'TTFA ms':>8} {'RTF':>6} {'peak MB':>8}")
    lines = [head]
    for r in rows:
        name = Path(r["name"]).name if r["kind"] == "checkpoint" else r["name"]
        if r["status"] != "ok":
            lines.append(f"{name[-14:]:>14} {r['status'][:100]}")
            continue
        lines.append(
            f"{name[-14:]:>14} {r['parameters'] / 1e6:>7.1f}M {r['codec'][:13]:>13} {r['threads']:>3} "
            f"{r['encode_ms']:>7.1f} {r['prefill_ms']:>8.1f} {r['decode_ms_per_frame']:>9.2f} "
            f"{r['decode_ms_p90']:>7.2f} {r['time_to_first_audio_ms']:>8.1f} {r['realtime_factor']:>6.2f} "
            f"{r['peak_memory_mb']:>8.0f}")
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        lines.append(f"device {ok[0]['device']}; prompt {ok[0]['prompt_seconds']:.2f} s; medians over "
                     f"{ok[0]['repeats']} runs of {ok[0]['frames']} frames after a warm-up")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m eval.latency", description="Latency per model preset (random weights) and per checkpoint.")
    p.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS),
                   help="presets to time (none = skip); default all")
    p.add_argument("--checkpoint", action="append", default=[], help="a checkpoint directory (repeatable)")
    p.add_argument("--codec", default=None,
                   help='codec for the presets as JSON {"name": ..., "params": {...}}; '
                        "default: the first checkpoint's, else the default codec")
    p.add_argument("--frames", type=int, default=75, help="reply frames per timed run (75 = 1 s)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: one row, in-process
    args = p.parse_args(argv)
    if args.frames < 2 or args.repeats < 1 or (args.threads is not None and args.threads < 1):
        raise SystemExit("error: --frames must be >= 2, --repeats and --threads >= 1")
    try:
        device = pick_device(args.device)
        codec = json.loads(args.codec) if args.codec else None
    except (ValueError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: {e}")
    threads = args.threads or torch.get_num_threads()
    if args.one:
        kw = dict(frames=args.frames, repeats=args.repeats, threads=threads, scope="subprocess")
        if args.checkpoint:
            row = checkpoint_row(args.checkpoint[0], device, **kw)
        else:
            row = preset_row(args.presets[0], codec, device, **kw)
        print(json.dumps(row))
        return
    rows = latency_rows(args.presets, args.checkpoint, codec=codec, device=device, frames=args.frames,
                        repeats=args.repeats, threads=threads, isolate=True)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))


if __name__ == "__main__":
    main()
