"""Several people talking at once: N simulated clients stream real prompts in real time over the
conversation WebSocket; prints JSON per session count.

    python scripts/converse_load.py --sessions 1 4 8              # starts python -m s2s.serve.converse
    python scripts/converse_load.py --sessions 4 --minutes 5      # soak: memory at minute 1 and 5
    python scripts/converse_load.py --url ws://host:7860/converse/ws --sessions 4   # a running app

Each client (s2s/serve/converse_client.py) speaks bundled prompts (each client its own, from
assets/eval), one turn after another, listening to each reply before the next. Reported per
session count: per-session real-time factor (reply audio / server time on it, median over the
session's turns; > 1 is faster than real time), first audio after speech end (client side,
p50 / p90 over all turns), turns completed and errors. With --minutes, the clients go on
until the time is up and the server's resident memory (its /proc status, sampled every 5 s)
is reported as its peak in each minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from s2s.io.audio import load_audio  # noqa: E402
from s2s.io.manifest import audio_path, read_manifest  # noqa: E402
from s2s.serve.converse_client import converse  # noqa: E402
from s2s.serve.ports import free_port  # noqa: E402

RATE = 24000


def prompts() -> list[np.ndarray]:
    manifest = ROOT / "assets" / "eval" / "manifest.jsonl"
    return [load_audio(audio_path(manifest, r["prompt_audio"]), RATE).numpy() for r in read_manifest(manifest)]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


async def load(url: str, n: int, clips: list[np.ndarray], turns: int, minutes: float | None, pid: int | None) -> dict:
    memory: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    stop_at = t0 + minutes * 60 if minutes else None

    async def sample():
        while True:
            if pid is not None and (mb := rss_mb(pid)) is not None:
                memory.append((time.perf_counter() - t0, mb))
            await asyncio.sleep(5)

    async def client(i: int):
        logs, k = [], 0
        while True:
            mine = [clips[(i * 7 + k * turns + j) % len(clips)] for j in range(turns)]
            logs.append(await converse(url, mine, RATE, reply_timeout_s=30))
            k += 1
            if stop_at is None or time.perf_counter() > stop_at or logs[-1].error:
                return logs

    sampler = asyncio.create_task(sample())
    results = await asyncio.gather(*(client(i) for i in range(n)))
    sampler.cancel()
    wall = time.perf_counter() - t0
    first, rtfs, completed, total, errors = [], [], 0, 0, []
    for logs in results:
        session_rtf = []
        for log in logs:
            if log.error:
                errors.append(log.error)
            for t in log.turns:
                total += 1
                completed += bool(t.get("completed"))
                if "first_audio_s" in t:
                    first.append(t["first_audio_s"])
                if "realtime_factor" in t:
                    session_rtf.append(t["realtime_factor"])
        rtfs.append(round(statistics.median(session_rtf), 2) if session_rtf else None)
    out = {"sessions": n, "wall_s": round(wall, 1), "turns": total, "turns_completed": completed,
           "errors": len(errors), "error_examples": errors[:3],
           "first_audio_s": {"p50": pct(first, 50), "p90": pct(first, 90), "max": pct(first, 100)},
           "realtime_factor_per_session": rtfs,
           "slowest_session_realtime_factor": min((r for r in rtfs if r is not None), default=None)}
    if minutes and memory:
        def peak(lo, hi):
            values = [mb for t, mb in memory if lo <= t < hi]
            return round(max(values), 1) if values else None
        out["rss_peak_mb_per_minute"] = [peak(m * 60, (m + 1) * 60) for m in range(int(math.ceil(wall / 60)))]
    return out


def start_server(flags: list[str]) -> tuple[subprocess.Popen, str]:
    """`python -m s2s.serve.converse` on a free port with these flags, once it accepts connections:
    (the process, its ws:// URL)."""
    port = free_port()
    cmd = [sys.executable, "-m", "s2s.serve.converse", "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.time() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"ws://127.0.0.1:{port}/converse/ws"
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise SystemExit(f"the conversation server did not start: {' '.join(cmd[1:])}")
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=None, help="ws://.../converse/ws of a running server (default: start one)")
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--turns", type=int, default=3, help="turns per conversation")
    p.add_argument("--minutes", type=float, default=None, help="keep talking this long (soak test)")
    p.add_argument("--max-sessions", type=int, default=8, help="the started server's limit")
    args = p.parse_args(argv)
    clips = prompts()
    proc, url, pid = None, args.url, None
    if url is None:  # every client comes from 127.0.0.1: the per-address cap lets them all in
        proc, url = start_server(["--max-sessions", str(args.max_sessions), "--max-per-client", str(args.max_sessions)])
        pid = proc.pid
    try:
        for i, n in enumerate(args.sessions):
            if i:
                time.sleep(2)  # the server closes the last round's sessions first (else "busy")
            print(json.dumps(asyncio.run(load(url, n, clips, args.turns, args.minutes, pid))), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
