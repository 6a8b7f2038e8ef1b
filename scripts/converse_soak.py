"""A soak with misbehaving clients: good conversations beside clients that flood, send bad frames,
stay silent and disconnect mid-reply, against one conversation server; prints JSON.

    python scripts/converse_soak.py                       # 8 good + 4 bad clients, 10 minutes
    python scripts/converse_soak.py --minutes 2 --quiet-minutes 1

First a quiet run (the good clients alone, --quiet-minutes), then the soak (--minutes) with one
client of each bad kind beside them, each reconnecting as soon as the server has closed it:
- flood: streams audio as fast as it can (the server closes it: faster than real time),
- bad frames: an odd-length frame, a frame over 40 ms, a text message that is not JSON,
- silent: streams silence in real time (closed by the idle limit: no speech, not no frames),
- leave mid-reply: asks a question, drops the connection when the first reply audio arrives.
Reported: the good clients' turns and errors, first audio after speech end (p50 / p90) in the
quiet run and in the soak and their ratio (target: p90 within 1.5x), how each bad client was
closed (close codes, seconds to the close), and the server's resident memory, its peak per minute
(target: flat after warm-up). The server is started with room for every client and for the bad
ones' reconnections (--max-sessions, and a per-address cap that lets them all in: they all come
from 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from s2s.serve.converse_client import converse  # noqa: E402
from scripts.converse_load import RATE, pct, prompts, rss_mb, start_server  # noqa: E402

FRAME = int(RATE * 0.02)


async def good_client(url: str, i: int, clips: list[np.ndarray], stop_at: float, turns: list, errors: list):
    k = 0
    while time.perf_counter() < stop_at:
        log = await converse(url, [clips[(i * 7 + k + j) % len(clips)] for j in range(3)], RATE, reply_timeout_s=30)
        k += 3
        turns += log.turns
        if log.error:
            errors.append(log.error)
            await asyncio.sleep(1)


async def _open(url: str):
    import websockets

    ws = await websockets.connect(url, max_size=2**22, open_timeout=30)
    await ws.send(json.dumps({"type": "start", "sample_rate": RATE}))
    msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if msg.get("type") != "ready":
        await ws.close()
        raise RuntimeError(f"expected ready, got {msg}")
    return ws


async def _until_closed(ws, send=None, timeout: float = 120.0) -> tuple[int | None, str, float]:
    """Run `send` (a coroutine factory over ws) until the server closes; (code, reason, seconds)."""
    t0 = time.perf_counter()

    async def drain():
        async for _ in ws:
            pass

    tasks = [asyncio.create_task(drain())] + ([asyncio.create_task(send(ws))] if send else [])
    try:
        await asyncio.wait_for(tasks[0], timeout)
    except Exception:  # noqa: BLE001 - a closed socket ends the drain either way
        pass
    for task in tasks[1:]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return ws.close_code, ws.close_reason or "", round(time.perf_counter() - t0, 2)


async def flood(ws):
    frame = (np.random.default_rng(0).standard_normal(FRAME) * 3000).astype("<i2").tobytes()
    while True:
        await ws.send(frame)
        await asyncio.sleep(0)


async def silence(ws):
    frame = np.zeros(FRAME, "<i2").tobytes()
    t0, sent = time.perf_counter(), 0
    while True:
        await asyncio.sleep(max(0.0, t0 + sent * 0.02 - time.perf_counter()))
        await ws.send(frame)
        sent += 1


def bad_frames():
    n = 0

    async def send(ws):
        nonlocal n
        kind = n % 3
        n += 1
        await ws.send(np.zeros(FRAME, "<i2").tobytes())
        await ws.send([b"\x01\x02\x03", np.zeros(RATE, "<i2").tobytes(), "not json {"][kind])
        await asyncio.Event().wait()

    return send


async def leave_mid_reply(url: str, clip: np.ndarray) -> tuple[int | None, str, float]:
    t0 = time.perf_counter()
    ws = await _open(url)
    pcm = (np.clip(np.concatenate([clip, np.zeros(RATE * 3, np.float32)]), -1, 1) * 32767).astype("<i2")

    async def speak():
        start, sent = time.perf_counter(), 0
        for i in range(0, len(pcm), FRAME):
            await asyncio.sleep(max(0.0, start + sent * 0.02 - time.perf_counter()))
            await ws.send(pcm[i:i + FRAME].tobytes())
            sent += 1

    speaker = asyncio.create_task(speak())
    try:
        async for m in ws:
            if isinstance(m, bytes):  # the first reply audio: gone, without a closing handshake
                transport = getattr(ws, "transport", None)
                if transport is not None:
                    transport.abort()
                else:
                    await ws.close()
                break
    except Exception:  # noqa: BLE001
        pass
    speaker.cancel()
    await asyncio.gather(speaker, return_exceptions=True)
    return None, "left mid-reply", round(time.perf_counter() - t0, 2)


async def bad_client(kind: str, url: str, clips: list[np.ndarray], stop_at: float, closes: list):
    senders = {"flood": flood, "silent": silence, "bad_frames": bad_frames()}
    k = 0
    while time.perf_counter() < stop_at:
        try:
            if kind == "leave_mid_reply":
                closes.append((kind, *await leave_mid_reply(url, clips[k % len(clips)])))
            else:
                ws = await _open(url)
                closes.append((kind, *await _until_closed(ws, senders[kind])))
        except Exception as e:  # noqa: BLE001 - refused or reset: counted, then try again
            closes.append((kind, None, f"{type(e).__name__}: {e}"[:120], 0.0))
        k += 1
        await asyncio.sleep(0.5)


async def run(url: str, n_good: int, minutes: float, bad: bool, clips: list[np.ndarray], pid: int | None) -> dict:
    memory: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    stop_at = t0 + minutes * 60
    turns: list[dict] = []
    errors: list[str] = []
    closes: list[tuple] = []

    async def sample():
        while True:
            if pid is not None and (mb := rss_mb(pid)) is not None:
                memory.append((time.perf_counter() - t0, mb))
            await asyncio.sleep(5)

    sampler = asyncio.create_task(sample())
    jobs = [good_client(url, i, clips, stop_at, turns, errors) for i in range(n_good)]
    if bad:
        jobs += [bad_client(kind, url, clips, stop_at, closes)
                 for kind in ("flood", "bad_frames", "silent", "leave_mid_reply")]
    await asyncio.gather(*jobs)
    sampler.cancel()
    wall = time.perf_counter() - t0
    first = [t["first_audio_s"] for t in turns if "first_audio_s" in t]

    def peak(lo, hi):
        values = [mb for t, mb in memory if lo <= t < hi]
        return round(max(values), 1) if values else None

    out = {"good_sessions": n_good, "bad_clients": bad, "wall_s": round(wall, 1), "turns": len(turns),
           "turns_completed": sum(bool(t.get("completed")) for t in turns), "good_errors": len(errors),
           "good_error_examples": errors[:3],
           "first_audio_s": {"p50": pct(first, 50), "p90": pct(first, 90), "max": pct(first, 100)},
           "rss_peak_mb_per_minute": [peak(m * 60, (m + 1) * 60) for m in range(int(math.ceil(wall / 60)))]}
    if bad:
        out["bad_closes"] = {kind: {"connections": sum(c[0] == kind for c in closes),
                                    "close_codes": dict(Counter(str(c[1]) for c in closes if c[0] == kind)),
                                    "reasons": sorted({c[2] for c in closes if c[0] == kind})[:4],
                                    "seconds_to_close_median": pct([c[3] for c in closes if c[0] == kind], 50)}
                             for kind in ("flood", "bad_frames", "silent", "leave_mid_reply")}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--good", type=int, default=8, help="good conversations")
    p.add_argument("--minutes", type=float, default=10.0, help="the soak's length")
    p.add_argument("--quiet-minutes", type=float, default=2.0, help="the good clients alone first (0: skip)")
    p.add_argument("--server-args", default="", help="more flags for python -m s2s.serve.converse")
    args = p.parse_args(argv)
    clips = prompts()
    room = args.good + 8  # the 4 bad clients reconnect at once: a closed one's place may not be free yet
    flags = ["--max-sessions", str(room), "--max-per-client", str(room), *args.server_args.split()]
    proc, url = start_server(flags)
    try:
        report = {"flags": " ".join(flags)}
        if args.quiet_minutes > 0:
            report["quiet"] = asyncio.run(run(url, args.good, args.quiet_minutes, False, clips, proc.pid))
            print(json.dumps(report["quiet"]), flush=True)
            time.sleep(2)
        report["soak"] = asyncio.run(run(url, args.good, args.minutes, True, clips, proc.pid))
        print(json.dumps(report["soak"]), flush=True)
        if "quiet" in report and report["quiet"]["first_audio_s"]["p90"]:
            ratio = report["soak"]["first_audio_s"]["p90"] / report["quiet"]["first_audio_s"]["p90"]
            print(json.dumps({"first_audio_p90_soak_over_quiet": round(ratio, 2)}), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
