"""How much batching buys: N replies generated at once by the continuous-batching scheduler
(s2s/serve/scheduler.py) against one at a time, model only (no front-end, no codec). Prints JSON.

    python scripts/scheduler_bench.py                              # bundled prototype, CPU, 1 4 8
    python scripts/scheduler_bench.py --preset 300m --device cuda --sessions 1 8 32 64

Each reply is forced to --seconds of audio (random prompts of 3 s of front-end features; min
frames = max frames, so every run does the same work). Reported per session count: decode steps,
median step time, and each reply's real-time factor (seconds of reply per second of wall time,
all N generated together; > 1 is faster than real time).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s2s.models.checkpoint import load_checkpoint  # noqa: E402
from s2s.models.model import S2SModel, preset_config  # noqa: E402
from s2s.serve.scheduler import Scheduler  # noqa: E402

FRAME_RATE = 75.0
PROTOTYPE = Path(__file__).resolve().parent.parent / "assets" / "prototype"  # (s2s.serve.pipeline pulls audio I/O in)


def model_for(preset: str | None, device: str) -> S2SModel:
    if preset is None:  # the bundled prototype's weights
        return load_checkpoint(PROTOTYPE, device)[0]
    return S2SModel(preset_config(preset, frontend="whisper_tiny_en", feature_dim=384)).to(device).eval()


def run(model: S2SModel, n: int, frames: int) -> dict:
    cfg = model.cfg
    sched = Scheduler(model, max_sessions=n, max_prompt_frames=200, max_frames=frames)
    try:
        finished, done = [], threading.Event()

        def on_done(reason):  # runs on the scheduler's thread: must not block
            finished.append(reason)
            if len(finished) == n:
                done.set()

        g = torch.Generator().manual_seed(0)
        prompts = [torch.randn(150, cfg.feature_dim, generator=g) for _ in range(n)]
        t0 = time.perf_counter()
        for p in prompts:
            sched.submit(features=p, on_frame=lambda f: None, on_done=on_done, max_frames=frames,
                         min_frames=frames, temperature=0.7, seed=0)
        done.wait()
        wall = time.perf_counter() - t0
        stats = sched.stats
        return {"sessions": n, "steps": stats["steps"], "step_ms_mean": round(stats["step_ms"] / max(stats["steps"], 1), 3),
                "wall_s": round(wall, 2), "realtime_factor_per_reply": round(frames / FRAME_RATE / wall, 2),
                "reply_frames_per_s_total": round(n * frames / wall, 1)}
    finally:
        sched.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default=None, help="a preset with random weights (default: the bundled prototype)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--seconds", type=float, default=4.0, help="reply length")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = model_for(args.preset, args.device)
    frames = int(args.seconds * FRAME_RATE)
    run(model, 1, 20)  # warm-up
    rows = [run(model, n, frames) for n in args.sessions]
    base = rows[0]["reply_frames_per_s_total"]
    for r in rows:
        r["throughput_vs_first"] = round(r["reply_frames_per_s_total"] / base, 2)
        print(json.dumps({"preset": args.preset or "prototype", "device": args.device, **r}))


if __name__ == "__main__":
    main()
