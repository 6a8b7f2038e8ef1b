"""Generation speed of each model preset on this machine, with the KV cache (random weights).

    python -m s2s.serve.bench                       # every preset, a table
    python -m s2s.serve.bench --preset 10m --json   # one preset, JSON rows

Per preset: median and p90 decode ms per reply frame, frames per second and how many times
real time that is (75 frames/s = 1x), prefill ms for a 3 s prompt, time to first audio (the
prompt already encoded -> first audio chunk out of the codec, through Pipeline.stream), and
the peak memory of a process that ran only that preset (CPU RSS, or CUDA allocated). Each
preset runs in its own subprocess so the peaks do not mix; warm-up runs are excluded and the
figures are medians over --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from s2s.models.device import pick_device
from s2s.models.generate import generate
from s2s.models.model import PRESETS, S2SModel, preset_config
from s2s.serve.pipeline import Pipeline

PROMPT_SECONDS = 3.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def prompt_audio(seconds: float) -> tuple[np.ndarray, int]:
    """A real human recording (CMU ARCTIC, shipped with pysptk) cut or looped to `seconds`."""
    import pysptk
    import soundfile as sf

    wav, sr = sf.read(pysptk.util.example_audio_file(), dtype="float32")
    n = int(seconds * sr)
    return np.resize(wav, n), sr


def time_generation(model, prompt, frames: int, repeats: int, features=None) -> dict:
    """Median/p90 ms per frame after the first, frames/s and prefill ms over `repeats` runs.
    prompt codes [K, S] and/or features [S', D]: what the model hears."""
    per_frame, fps, prefill = [], [], []
    for run in range(repeats + 1):  # run 0 is the warm-up
        timings: dict = {}
        stamps = []
        start = time.perf_counter()
        for _ in generate(model, prompt, features=features, max_frames=frames, min_frames=frames, temperature=0.7,
                          top_k=50, seed=run, timings=timings):
            stamps.append(time.perf_counter())
        if run == 0:
            continue
        per_frame += [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])]
        fps.append(frames / (stamps[-1] - start))
        prefill.append(timings["prefill"])
    return {
        "decode_ms_per_frame": statistics.median(per_frame),
        "decode_ms_p90": percentile(per_frame, 90),
        "frames_per_s": statistics.median(fps),
        "x_realtime": statistics.median(fps) / 75.0,
        "prefill_ms": statistics.median(prefill),
    }


def time_to_first_audio(model, device, repeats: int) -> dict:
    """Prompt encoded -> first streamed audio chunk, with the default codec (median ms)."""
    from s2s.codecs.codec import default_codec

    codec = default_codec()
    config = {"codec": codec.describe()}
    if (codec.n_codebooks, codec.cardinality) != (model.cfg.n_codebooks, model.cfg.cardinality):
        return {"codec": codec.name, "time_to_first_audio_ms": float("nan")}
    pipe = Pipeline(model, codec, config, device, checkpoint="random weights")
    source = prompt_audio(PROMPT_SECONDS)
    values = []
    for run in range(repeats + 1):
        for chunk in pipe.stream(source, seed=run, max_seconds=0.5):
            if chunk.reply is not None and run > 0:
                values.append(chunk.reply.timings["time_to_first_audio"])
    return {"codec": codec.name, "time_to_first_audio_ms": statistics.median(values)}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_preset(name: str, frames: int, repeats: int, device: torch.device, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = S2SModel(preset_config(name)).to(device).eval()
    prompt = torch.randint(0, model.cfg.cardinality, (model.cfg.n_codebooks, int(PROMPT_SECONDS * 75)))
    row = {
        "preset": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": threads,
        "frames": frames,
        "repeats": repeats,
    }
    row.update(time_generation(model, prompt, frames, repeats))
    row.update(time_to_first_audio(model, device, repeats))
    row["peak_memory_mb"] = peak_memory_mb(device)
    return row


def run_in_subprocess(name: str, args) -> dict:
    cmd = [sys.executable, "-m", "s2s.serve.bench", "--one", name, "--frames", str(args.frames),
           "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if args.device:
        cmd += ["--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark of {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict]) -> str:
    head = (f"{'preset':>6} {'params':>8} {'device':>6} {'thr':>3} {'ms/frame':>9} {'p90':>7} "
            f"{'frames/s':>9} {'x rt':>6} {'prefill':>8} {'TTFA ms':>8} {'peak MB':>8}")
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['preset']:>6} {r['parameters'] / 1e6:>7.1f}M {r['device'][:6]:>6} {r['threads']:>3} "
            f"{r['decode_ms_per_frame']:>9.2f} {r['decode_ms_p90']:>7.2f} {r['frames_per_s']:>9.1f} "
            f"{r['x_realtime']:>6.2f} {r['prefill_ms']:>8.1f} {r['time_to_first_audio_ms']:>8.1f} "
            f"{r['peak_memory_mb']:>8.0f}"
        )
    codecs = sorted({r["codec"] for r in rows})
    lines.append(f"prompt {PROMPT_SECONDS:g} s; TTFA through codec {', '.join(codecs)}; medians over "
                 f"{rows[0]['repeats']} runs of {rows[0]['frames']} frames after a warm-up")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Generation speed of the model presets (KV cache).")
    p.add_argument("--preset", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--frames", type=int, default=150, help="reply frames per run (75 = 1 s)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one preset, in-process
    args = p.parse_args(argv)
    if args.frames < 2 or args.repeats < 1 or args.threads < 1:
        raise SystemExit("error: --frames must be >= 2, --repeats and --threads >= 1")
    if args.one:
        print(json.dumps(bench_preset(args.one, args.frames, args.repeats, pick_device(args.device), args.threads)))
        return
    rows = [run_in_subprocess(name, args) for name in args.preset]
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))


if __name__ == "__main__":
    main()
