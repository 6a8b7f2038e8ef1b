"""Conversation mode's server: one WebSocket per conversation on the app's own port, turns
found by voice activity on the streamed microphone, replies from one batching scheduler.

    server = ConverseServer(lambda: load_pipeline(), Limits(max_sessions=8))
    routes = [server.route("/converse/ws")]       # the app passes them to Gradio's FastAPI app
    python -m s2s.serve.converse --port 7861            # the route alone (uvicorn), for scripts/converse_load.py

Protocol (one WebSocket per conversation; every text message is JSON with a "type"):

    client -> server
      {"type": "start", "sample_rate": 24000, "temperature": 0.7, "top_k": 50, "seed": -1}   first
      bytes: int16 little-endian mono PCM at that rate, <= 40 ms per message, in real time
    server -> client
      {"type": "ready", "session", "sample_rate" (of the reply audio), "end_silence_ms", "turn_head", ...}
      {"type": "speech"}                        the person started speaking
      {"type": "barge_in", "turn": n}           they spoke over reply n: stop playing it now
      {"type": "backchannel", "turn": n, "p"}   what they said over reply n was a backchannel: it goes on
      {"type": "turn", "turn": n, "speech_end": s, "by": "head"|"silence", "p_finished"}
                                                end of turn n decided (s: stream seconds)
      {"type": "codes", "turn": n, "codes": [[c0..cK-1], ...]}   reply frames as they complete
      bytes: uint32 LE turn number + int16 PCM at "sample_rate": the reply's audio
      {"type": "first_audio", "turn": n, "timings": {...}}   after the turn's first audio went out
      {"type": "reply_end", "turn": n, "timings": {...}}      the reply is complete
      {"type": "ignored", "reason": "..."}      a turn that cannot be answered (too short, ...)
    close codes (the reason says which limit, in words the page can show):
      1000 done, idle ("idle: no speech for 30 s ..."), or the conversation's length limit
      1003 unsupported data   1008 policy (flooding, a bad start setting, too many conversations
      from one address)   1009 frame too big   1011 server error (plain words; details in the log)
      1013 busy (every conversation slot is taken)
    A handshake from a page of another origin is refused (HTTP 403) unless Limits.allowed_origins
    lists it; one without an Origin header (not a browser) is let in.

A turn is prepared before its end is decided: when the person has been silent for
Limits.pause_ms the turn's audio is final (s2s/serve/vad.py "pause"), so the front-end, the
prefill and the first reply frames run while the end of the turn is still being decided; the
audio is held until then and dropped if the person goes on speaking. With a turn head
(s2s/models/turn_head.py, Limits.turn_head) the end is decided from what was said, on the
features the front-end computed at the pause: "finished" ends the turn there (speech after it
starts a new one: over the reply, see below); otherwise the server waits, and
fallback_silence_ms of silence ends any turn (a hesitation is held, a fragment still gets its
answer). Without one, end_silence_ms of silence ends it.

Speech over a reply: with a turn head, speech that pauses within backchannel_max_ms and that the
head calls a backchannel ("mm-hm", "yeah") lets the reply go on; anything else (longer, resumed,
or not a backchannel) is a barge-in: the reply is cancelled and the page told to stop, and what
was said is heard as the next turn. Without a head any speech over a reply is a barge-in. If
that speech came within JOIN_S of the decided end of the turn, the turn had been cut too early
(a pause mid-sentence), and the next turn is heard joined to it.

Limits that keep a public server available (Limits): idle means no speech, not no frames (an
open tab streams silence forever), so a conversation with no speech for idle_timeout_s (none
heard, no reply being made or played) is closed, as is one that reaches max_conversation_s; at
most max_per_client conversations per client address (behind a proxy: the nearest public
address in X-Forwarded-For). The ready message names the checkpoint's folder, not its path.

Every session owns a VAD state, at most one reply (a scheduler row) and two tasks (receiving
and sending); closing the socket, any error or a limit frees all of them. Sessions share
nothing else, so replicas of the app behind a load balancer need only sticky sessions (a
WebSocket stays on the replica that accepted it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from starlette.websockets import WebSocketDisconnect

from s2s.serve.converse_limits import (
    Limits,
    SessionClosed,
    add_limit_flags,
    client_address,
    limit_flags,
    origin_allowed,
    parse_start,
    span,
)
from s2s.serve.converse_turn import Turn, load_head
from s2s.serve.overlap import weigh_onset, weigh_overlap

__all__ = ["ConverseServer", "Limits", "Session", "SessionClosed", "main"]

log = logging.getLogger(__name__)

JOIN_S = 1.0  # speech this soon after a turn was ended means it was ended too early: join them


class ConverseServer:
    """The models (one pipeline, one scheduler) and the live sessions: the server's state."""

    def __init__(self, pipeline_fn: Callable, limits: Limits | None = None):
        self.pipeline_fn, self.limits = pipeline_fn, limits or Limits()
        self.pipe = self.scheduler = None
        self.turn_head = self.head_frontend = None  # s2s.models.turn_head; None: silence alone ends turns
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def ready(self):
        """Load the pipeline and start the scheduler (once; blocking: call in a thread)."""
        from s2s.serve.scheduler import Scheduler

        with self._lock:
            if self.scheduler is None:
                pipe = self.pipeline_fn()
                cfg, lim = pipe.model.cfg, self.limits
                prompt = 0
                if cfg.uses_features:
                    prompt += math.ceil(lim.max_turn_seconds * pipe.frontend.frame_rate) + 50
                if cfg.uses_codes:
                    prompt += math.ceil(lim.max_turn_seconds * pipe.codec.frame_rate) + 75
                frames = min(cfg.max_reply_frames, round(lim.max_reply_seconds * pipe.codec.frame_rate))
                self.scheduler = Scheduler(pipe.model, max_sessions=lim.max_sessions, max_prompt_frames=prompt,
                                           max_frames=frames)
                self.turn_head, self.head_frontend = load_head(pipe, lim.turn_head)
                self.pipe = pipe
                warm_up(pipe)
        return self.pipe, self.scheduler

    def route(self, path: str = "/converse/ws"):
        from starlette.routing import WebSocketRoute

        return WebSocketRoute(path, self.endpoint)

    async def endpoint(self, ws) -> None:
        origin = ws.headers.get("origin")
        if not origin_allowed(origin, ws.headers, self.limits.allowed_origins):
            log.warning("refused a conversation from origin %r (host %r)", origin, ws.headers.get("host"))
            await ws.close(1008)  # before accept: the handshake is answered with HTTP 403
            return
        await ws.accept()
        client = client_address(ws)
        if len(self.sessions) >= self.limits.max_sessions:
            await ws.close(1013, f"busy: {len(self.sessions)} conversations, the most this server "
                                 "takes; try again in a minute")
            return
        mine = sum(s.client == client for s in self.sessions.values())
        if mine >= self.limits.max_per_client:
            await ws.close(1008, f"too many conversations: at most {self.limits.max_per_client} at once "
                                 "from one address; close another first")
            return
        sid = f"{next(self._ids)}-{secrets.token_hex(3)}"
        session = Session(self, ws, sid)
        session.client = client
        self.sessions[sid] = session
        try:
            await session.run()
        finally:
            session.free()
            self.sessions.pop(sid, None)

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()


def warm_up(pipe) -> None:
    """One short reply before the first visitor: the first front-end call, prefill and decode
    each pay a one-off cost (~150 ms measured) that a person's first turn should not."""
    t = np.arange(int(0.6 * pipe.codec.sample_rate)) / pipe.codec.sample_rate
    tone = (0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    for _ in pipe.stream((tone, pipe.codec.sample_rate), max_seconds=0.2, prompt_codes=False, seed=0):
        pass


class Session:
    """One conversation: receives audio, finds turns, replies, sends audio and events."""

    def __init__(self, server: ConverseServer, ws, sid: str):
        self.server, self.ws, self.id, self.limits = server, ws, sid, server.limits
        self.client = ""  # the address it is counted under (ConverseServer.endpoint)
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.rate, self.settings, self.pipe, self.scheduler = 0, {}, None, None  # set by the start message
        self.turn: Turn | None = None  # the reply being prepared, generated or played
        self.hearing: asyncio.Future | None = None  # the front-end run of this session's latest turn
        self.carry: np.ndarray | None = None  # a turn ended too early: heard again with the next
        self.turns = 0
        self.vad_turn = 0  # stretches of speech heard (VAD "start" events)
        self.detector = None  # the session's TurnDetector, once started
        self.overlap: dict | None = None  # speech over a reply, being weighed: {"since", "vad_turn", "backchannel"}
        self.playing_until = 0.0
        self.tasks: list[asyncio.Task] = []
        self.receiver: asyncio.Task | None = None
        self.closing: SessionClosed | None = None  # set by fail(): why the receiver was stopped

    def fail(self, code: int, reason: str) -> None:
        """End this conversation from outside its receive loop (a turn that hit a dead scheduler)."""
        if self.closing is None:
            self.closing = SessionClosed(code, reason)
            if self.receiver is not None:
                self.receiver.cancel()

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        self.tasks.append(sender)
        self.receiver = asyncio.create_task(self._receive_loop())
        try:
            try:
                await self.receiver
            except asyncio.CancelledError:
                if self.closing is None:  # the server is shutting down, not fail()
                    raise
                raise self.closing from None
            code, reason = 1000, "conversation ended"
        except SessionClosed as e:
            code, reason = e.code, e.reason
        except WebSocketDisconnect:
            return
        except Exception:  # a bug: this session ends, the others go on; the details stay in the log
            log.exception("conversation %s failed", self.id)
            code, reason = 1011, "server error: the conversation failed; please start again"
        self.cancel_turn()
        try:
            await asyncio.wait_for(self.outbox.join(), 1.0)  # what is queued goes out first
        except (TimeoutError, Exception):
            pass
        try:
            await asyncio.wait_for(self.ws.close(code, reason), 2.0)
        except Exception:  # already gone
            pass

    async def _receive(self, timeout: float, deadline: float = math.inf):
        try:
            msg = await asyncio.wait_for(self.ws.receive(), min(timeout, max(0.0, deadline - time.perf_counter())))
        except TimeoutError:
            if time.perf_counter() >= deadline:
                raise self._too_long() from None
            raise SessionClosed(1000, f"idle: no audio for {span(timeout)}; the conversation was closed") from None
        if msg["type"] == "websocket.disconnect":
            return None
        return msg

    def _too_long(self) -> SessionClosed:
        return SessionClosed(1000, f"conversations last at most {span(self.limits.max_conversation_s)}: "
                                   "start a new one to go on")

    async def _receive_loop(self) -> None:
        from s2s.serve.vad import TurnDetector

        lim = self.limits
        msg = await self._receive(lim.start_timeout_s)
        if msg is None:
            return
        self.rate, self.settings = parse_start(msg)
        self.pipe, self.scheduler = await asyncio.to_thread(self.server.ready)
        pipe = self.pipe
        end_ms = lim.fallback_silence_ms if self.server.turn_head is not None else lim.end_silence_ms
        self.detector = det = TurnDetector(min_speech_ms=lim.min_speech_ms, end_silence_ms=end_ms,
                                           max_turn_seconds=lim.max_turn_seconds, pause_events=True,
                                           pause_ms=lim.pause_ms)
        max_bytes = 2 * math.ceil(self.rate * lim.max_frame_ms / 1000)
        self.put_json(type="ready", session=self.id, sample_rate=pipe.codec.sample_rate,
                      end_silence_ms=end_ms, turn_head=self.server.turn_head is not None,
                      max_frame_ms=lim.max_frame_ms,
                      max_reply_seconds=lim.max_reply_seconds, idle_timeout_s=lim.idle_timeout_s,
                      max_conversation_s=lim.max_conversation_s,
                      checkpoint=Path(str(pipe.checkpoint)).name)  # the folder's name: no server paths
        received, started = 0, None
        spoke = time.perf_counter()  # speech heard, or a reply made or played, last at this time
        deadline = spoke + lim.max_conversation_s
        while True:
            msg = await self._receive(lim.idle_timeout_s, deadline)
            if msg is None:
                return
            data = msg.get("bytes")
            if data is None:
                raise SessionClosed(1003, f"expected binary audio frames after start, got text {str(msg.get('text'))[:40]!r}")
            if len(data) > max_bytes:
                raise SessionClosed(1009, f"audio frame of {len(data)} bytes; at most {max_bytes} "
                                          f"({lim.max_frame_ms:.0f} ms of int16 at {self.rate} Hz)")
            if len(data) == 0 or len(data) % 2:
                raise SessionClosed(1003, f"audio frame of {len(data)} bytes: int16 PCM needs an even, non-zero size")
            if self.closing is not None:  # fail() was called (its cancel may have met a message)
                raise self.closing
            now = time.perf_counter()
            started = started or now
            received += len(data) // 2
            if received / self.rate > now - started + lim.flood_slack_s:
                raise SessionClosed(1008, f"flooding: {received / self.rate:.1f} s of audio in "
                                          f"{now - started:.1f} s; send it in real time")
            for ev in det.push(np.frombuffer(data, "<i2"), self.rate):
                self._on_event(ev, time.perf_counter())
            now = time.perf_counter()
            o = self.overlap
            if o is not None and o["backchannel"] is None and now - o["since"] > lim.backchannel_max_ms / 1e3:
                self.barge_in(now)  # speech over the reply went on too long for a backchannel
            if det.in_turn or (self.turn is not None and not self.turn.finished) or now < self.playing_until:
                spoke = now
            elif now - spoke > lim.idle_timeout_s:  # frames keep coming, but nobody speaks
                raise SessionClosed(1000, f"idle: no speech for {span(lim.idle_timeout_s)}; the conversation "
                                          "was closed to free its place")
            if now >= deadline:
                raise self._too_long()

    def _on_event(self, ev, now: float) -> None:
        turn, o = self.turn, self.overlap
        if ev.kind == "start":
            self.vad_turn += 1
            self.put_json(type="speech")
            if turn is not None and turn.confirmed and (not turn.finished or now < self.playing_until):
                if self.server.turn_head is None:
                    self.barge_in(now)
                else:  # a backchannel lets the reply go on: weighed at its onset and at its pause
                    self.overlap = o = {"since": now, "vad_turn": self.vad_turn, "backchannel": None}
                    self._spawn(weigh_onset(self, ev, o))
        elif o is not None and o["vad_turn"] == self.vad_turn:
            if ev.kind == "pause" and o["backchannel"] is None:
                o["backchannel"] = "weighing"
                self._spawn(weigh_overlap(self, ev, o))
            elif ev.kind == "resume":  # more than a backchannel: speech came back
                self.barge_in(now)
            elif ev.kind == "end":  # a backchannel, over: the reply went on
                self.overlap = None
        elif ev.kind == "pause":
            self.cancel_turn()
            self.turns += 1
            self.turn = Turn(self, self.turns, ev, confirmed=False)
        elif ev.kind == "resume":
            if turn is not None and not turn.confirmed:
                self.cancel_turn()
        elif ev.kind == "end":
            if turn is not None and turn.at == ev.at and turn.vad_turn == self.vad_turn:
                if not turn.confirmed:
                    turn.confirm(now)
                return  # (or the head decided at the pause)
            self.cancel_turn()
            self.turns += 1
            self.turn = Turn(self, self.turns, ev, confirmed=False)
            self.turn.confirm(now)

    def barge_in(self, now: float) -> None:
        """Speech over the reply that is not a backchannel: stop it and tell the page."""
        turn, self.overlap = self.turn, None
        if turn is None:
            return
        self.cancel_turn()
        self.playing_until = 0.0
        self.put_json(type="barge_in", turn=turn.number)
        if turn.decided is not None and now - turn.decided < JOIN_S:  # the person had not finished
            self.carry = turn.audio

    def _spawn(self, coro) -> None:
        self.tasks = [t for t in self.tasks if not t.done()] + [asyncio.create_task(coro)]

    def cancel_turn(self) -> None:
        if self.turn is not None:
            self.turn.cancel()
            self.turn = None

    # ------------------------------------------------------------------ sending

    def put_json(self, **message) -> None:
        self.outbox.put_nowait(json.dumps(message))

    def put_audio(self, turn: Turn, pcm: bytes) -> None:
        self.outbox.put_nowait((turn, pcm))

    async def _send_loop(self) -> None:
        while True:
            item = await self.outbox.get()
            try:
                if isinstance(item, str):
                    await self.ws.send_text(item)
                else:
                    turn, pcm = item
                    if turn.cancelled:
                        continue
                    await self.ws.send_bytes(pcm)
                    turn.sent(len(pcm) - 4)
            except Exception:  # the socket is gone: the receive loop ends the session
                return
            finally:
                self.outbox.task_done()

    def free(self) -> None:
        """Everything this session holds: its reply's scheduler row, its tasks, its queue."""
        self.cancel_turn()
        for task in self.tasks:
            task.cancel()
        while not self.outbox.empty():
            self.outbox.get_nowait()
            self.outbox.task_done()


def main(argv: list[str] | None = None) -> None:
    """Serve the conversation route alone (no Gradio page): for load tests and scripts."""
    import uvicorn
    from starlette.applications import Starlette

    from s2s.serve.pipeline import load_pipeline

    p = argparse.ArgumentParser(prog="python -m s2s.serve.converse",
                                description="The conversation WebSocket route alone (/converse/ws).")
    p.add_argument("--checkpoint", default=None, help="default: the bundled prototype")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7861)
    p.add_argument("--max-sessions", type=int, default=Limits.max_sessions)
    p.add_argument("--end-silence-ms", type=float, default=Limits.end_silence_ms)
    add_limit_flags(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        limits = Limits(max_sessions=args.max_sessions, end_silence_ms=args.end_silence_ms, **limit_flags(args))
    except ValueError as e:
        p.error(str(e))
    server = ConverseServer(lambda: load_pipeline(args.checkpoint, args.device), limits)
    server.ready()
    uvicorn.run(Starlette(routes=[server.route()]), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
