"""A simulated conversation client: streams spoken prompts over the conversation WebSocket in
real time, as a microphone would, and times what comes back (scripts/converse_load.py, tests).

    log = asyncio.run(converse("ws://127.0.0.1:7860/converse/ws", [wav1, wav2], rate=24000))
    log.turns[0]["first_audio_s"]      # speech end -> first reply audio received, seconds

Each prompt is sent in 20 ms frames paced by the clock, followed by silence until its reply has
ended and would have finished playing (or `reply_timeout_s`), then the next prompt. Speech end of a prompt: its last 10 ms
block louder than -34 dBFS, so the time counts from when the person really stopped. Talker
drives a conversation step by step instead (speech over a reply, hesitations: scripts/turn_bench.py).
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from dataclasses import dataclass, field

import numpy as np

FRAME_S = 0.02


def loud_blocks(x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """Indices of x's 10 ms blocks with a peak above 0.02 (-34 dBFS), and the block length."""
    block = max(1, rate // 100)
    peaks = np.abs(x[: x.size // block * block]).reshape(-1, block).max(axis=1)
    return np.flatnonzero(peaks > 0.02), block


def speech_end(x: np.ndarray, rate: int) -> float:
    """Seconds into x where its last loud 10 ms block ends (0 for silence)."""
    loud, block = loud_blocks(x, rate)
    return float((loud[-1] + 1) * block / rate) if loud.size else 0.0


def speech_start(x: np.ndarray, rate: int) -> float:
    """Seconds into x where its first loud 10 ms block starts (0 for silence)."""
    loud, block = loud_blocks(x, rate)
    return float(loud[0] * block / rate) if loud.size else 0.0


@dataclass
class ClientLog:
    ready: dict | None = None
    turns: list[dict] = field(default_factory=list)  # per prompt: speech end, first audio, reply
    events: list[tuple[float, dict]] = field(default_factory=list)  # (client time, message)
    audio: dict[int, bytearray] = field(default_factory=dict)  # turn number -> reply PCM (int16)
    codes: dict[int, list] = field(default_factory=dict)  # turn number -> reply frames [[K codes], ...]
    close_code: int | None = None
    close_reason: str = ""
    error: str = ""


async def converse(url: str, prompts: list[np.ndarray], rate: int = 24000, *, reply_timeout_s: float = 20.0,
                   lead_silence_s: float = 0.3, tail_silence_s: float = 0.6, start: dict | None = None,
                   open_timeout_s: float = 30.0) -> ClientLog:
    """Talk through `prompts` (float32 mono at `rate`), one turn each; returns what happened."""
    import websockets

    log = ClientLog()
    frame = int(rate * FRAME_S)
    try:
        async with websockets.connect(url, max_size=2**22, open_timeout=open_timeout_s) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": rate, **(start or {})}))
            msg = json.loads(await asyncio.wait_for(ws.recv(), open_timeout_s))
            if msg.get("type") != "ready":
                raise RuntimeError(f"expected ready, got {msg}")
            log.ready = msg
            reply_done = asyncio.Event()
            current: dict = {}

            async def receive():
                async for m in ws:
                    now = time.perf_counter()
                    if isinstance(m, bytes):
                        number = struct.unpack("<I", m[:4])[0]
                        log.audio.setdefault(number, bytearray()).extend(m[4:])
                        if current and current.get("number") == number and "first_audio_at" not in current:
                            current["first_audio_at"] = now
                        continue
                    msg = json.loads(m)
                    log.events.append((now, msg))
                    if msg["type"] == "codes":
                        log.codes.setdefault(msg["turn"], []).extend(msg["codes"])
                    elif msg["type"] == "turn":
                        current.update(number=msg["turn"], decided_at=now)
                    elif msg["type"] == "reply_end" and msg.get("turn") == current.get("number"):
                        current.update(ended_at=now, timings=msg.get("timings", {}), frames=msg.get("frames"))
                        reply_done.set()
                    elif msg["type"] == "ignored":
                        current.update(ignored=msg.get("reason"))
                        reply_done.set()

            receiver = asyncio.create_task(receive())
            t0 = time.perf_counter()
            sent = 0  # frames sent: the pacing clock

            async def send(samples: np.ndarray):
                nonlocal sent
                pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
                for i in range(0, len(pcm), frame):
                    delay = t0 + sent * FRAME_S - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await ws.send(pcm[i:i + frame].tobytes())
                    sent += 1

            silence = np.zeros(frame, np.float32)
            await send(np.zeros(int(lead_silence_s * rate), np.float32))
            for x in prompts:
                current.clear()
                reply_done.clear()
                began = t0 + sent * FRAME_S
                await send(x)
                end_at = began + speech_end(x, rate)
                deadline = time.perf_counter() + reply_timeout_s
                while not reply_done.is_set() and time.perf_counter() < deadline:
                    await send(silence)
                # a person listens to the reply before speaking again (else it is a barge-in)
                played = current.get("first_audio_at", 0) + current.get("timings", {}).get("reply_seconds", 0)
                while time.perf_counter() < min(played, deadline):
                    await send(silence)
                await send(np.zeros(int(tail_silence_s * rate), np.float32))
                turn = {"speech_end_at": end_at, **current}
                if "first_audio_at" in turn:
                    turn["first_audio_s"] = turn["first_audio_at"] - end_at
                if "decided_at" in turn:
                    turn["decided_s"] = turn["decided_at"] - end_at
                timings = turn.get("timings", {})
                if timings.get("reply_seconds") and timings.get("generate_ms"):
                    # reply audio per second of the server's work on it (hearing, generating, decoding)
                    turn["reply_seconds"] = timings["reply_seconds"]
                    turn["realtime_factor"] = timings["reply_seconds"] / (timings["generate_ms"] / 1e3)
                turn["completed"] = reply_done.is_set() and "ignored" not in turn
                log.turns.append(turn)
            await ws.close()
            await asyncio.wait_for(receiver, 5)
    except Exception as e:  # noqa: BLE001 - every failure is reported in the log, per client
        close = getattr(e, "rcvd", None)
        if close is not None:
            log.close_code, log.close_reason = close.code, close.reason
        log.error = f"{type(e).__name__}: {e}"
    return log


class Talker:
    """A conversation driven step by step (scripts/turn_bench.py, tests): audio goes out in real
    time, 20 ms frames, silence whenever nothing is being said, so speech can be sent over a
    reply; every message is kept with the client time it arrived.

        talker = await Talker.open(url)                      # rate 24000
        start = await talker.say(x)                          # returns when all of x is out
        got = await talker.until(lambda: talker.of("barge_in"), 2.0)
        await talker.close()
    """

    def __init__(self, ws, rate: int):
        self.ws, self.rate, self.events, self.audio_at = ws, rate, [], {}  # audio_at: turn -> first reply audio time
        self.audio: dict[int, bytearray] = {}  # turn -> its reply's int16 PCM
        self.queue: list[np.ndarray] = []
        self.t0 = time.perf_counter()
        self.sent = 0
        self.started = 0.0  # when the first sample of the latest thing said went out
        self.spoken = asyncio.Event()

    @classmethod
    async def open(cls, url: str, rate: int = 24000, start: dict | None = None) -> "Talker":
        import websockets

        ws = await websockets.connect(url, max_size=2**22)
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "seed": 0, **(start or {})}))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"expected ready, got {ready}")
        t = cls(ws, rate)
        t.ready = ready
        t.tasks = [asyncio.create_task(t._send()), asyncio.create_task(t._receive())]
        return t

    async def _send(self):
        frame = int(self.rate * FRAME_S)
        silence = np.zeros(frame, "<i2").tobytes()
        buf = np.zeros(0, np.float32)
        while True:
            delay = self.t0 + self.sent * FRAME_S - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if not len(buf) and self.queue:
                buf = self.queue.pop(0)
                self.started = self.t0 + self.sent * FRAME_S  # this frame's place on the clock
            if len(buf):
                pcm, buf = buf[:frame], buf[frame:]
                data = (np.clip(np.pad(pcm, (0, frame - len(pcm))), -1, 1) * 32767).astype("<i2").tobytes()
                if not len(buf) and not self.queue:
                    self.spoken.set()
            else:
                data = silence
            await self.ws.send(data)
            self.sent += 1

    async def _receive(self):
        async for m in self.ws:
            now = time.perf_counter()
            if isinstance(m, bytes):
                number = struct.unpack("<I", m[:4])[0]
                self.audio_at.setdefault(number, now)
                self.audio.setdefault(number, bytearray()).extend(m[4:])
            else:
                self.events.append((now, json.loads(m)))

    async def say(self, x: np.ndarray) -> float:
        """Send x (float32 mono at the talker's rate) after what is queued; returns, once all of it
        is out, the client time its first sample went out."""
        self.spoken.clear()
        self.queue.append(x.astype(np.float32))
        await self.spoken.wait()
        return self.started

    async def until(self, pred, timeout: float):
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            hit = pred()
            if hit:
                return hit
            await asyncio.sleep(0.01)
        return None

    def of(self, kind: str) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.events if m.get("type") == kind]

    async def close(self):
        for t in self.tasks:
            t.cancel()
        await self.ws.close()
