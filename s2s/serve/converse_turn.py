"""One reply of a conversation (s2s/serve/converse.py): hear the turn, generate it through the batching
scheduler, decode it as frames come, and send it, or hold it until the end of the turn is
decided (a turn prepared at the pause). With a turn head, the turn is heard by it too, on the
same features: P(finished) at or above its threshold decides the end there and then. The session
it belongs to gives the pipeline, the scheduler, the sampling settings and the outgoing queue.

Work per pause is bounded: a session hears one turn at a time (a turn prepared at a pause waits
for the front-end of an earlier, cancelled one to finish rather than run beside it), a turn
cancelled before its front-end starts never starts it, one cancelled after it never reaches the
scheduler. Every wait (the front-end, the next frame, the decoder) gives up after the limits'
reply_timeout_s. A failed reply tells the person so in plain words (the details go to the log)
and the conversation goes on; a scheduler that crashed closes the conversation (1011).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time

import numpy as np
import torch

from s2s.serve.pipeline import FIRST_AUDIO_FRAMES

log = logging.getLogger(__name__)

PUSH_FRAMES = 4  # after the first chunk, decode and send every 4 frames (53 ms of audio)
PLAYBACK_SLACK_S = 0.15  # the page's jitter buffer and output latency, for "still playing"
LEAD_LEVEL, LEAD_TRIM_S = 0.01, 0.3  # a reply's leading silence (below -40 dBFS) is not sent, up to 0.3 s


def load_head(pipe, choice: str):
    """(turn head, the front-end it reads) for Limits.turn_head: the pipeline's own Whisper
    front-end when it has one (the features computed at a pause serve both), else its own."""
    from s2s.models.frontend import load_frontend
    from s2s.models.turn_head import load_turn_head

    if choice == "none":
        return None, None
    name = getattr(pipe.frontend, "name", "")
    frontend = pipe.frontend if name == "whisper_tiny_en" else load_frontend("whisper_tiny_en")
    return load_turn_head(None if choice == "bundled" else choice, frontend=frontend), frontend


def head_probabilities(server, wav: torch.Tensor, features: torch.Tensor | None = None) -> tuple[float, float]:
    """The server's turn head on a turn ([T] at the codec's rate, as the pipeline loaded it):
    (P(finished), P(backchannel)). features: the pipeline's own, when they are the head's."""
    if features is None or server.head_frontend is not server.pipe.frontend:
        features = server.head_frontend.features(wav, server.pipe.codec.sample_rate)
    return server.turn_head.probabilities(features)


class Unanswerable(ValueError):
    """The turn's audio cannot be answered (too short, silent, too long): its message is for the person."""


FAILED = "server error: this reply failed; please say it again"


class Turn:
    """One reply: hear the turn, generate through the scheduler, decode, send (or hold until
    the end of the turn is decided)."""

    def __init__(self, session, number: int, ev, confirmed: bool):  # session: s2s.serve.converse.Session
        self.session, self.number, self.at = session, number, ev.at
        self.audio, self.rate = ev.audio, ev.sample_rate
        self.joined = 0  # samples of an earlier turn, ended too early, heard before this one
        if session.carry is not None:
            self.joined = len(session.carry)
            self.audio = np.concatenate([session.carry, ev.audio])
        self.confirmed, self.cancelled, self.finished = confirmed, False, False
        self.vad_turn = session.vad_turn  # the stretch of speech (VAD start to end) it answers
        self.p_finished: float | None = None  # the turn head's, once heard
        self.held: list = []
        self.job = None
        self.timings: dict[str, float] = {}
        self.created = time.perf_counter()
        self.decided = self.first_sent = None
        self.samples_sent = 0
        self.voiced = False  # the reply's voice has started (its leading silence is not sent)
        self.task = asyncio.create_task(self._run())
        session.tasks = [t for t in session.tasks if not t.done()] + [self.task]

    def confirm(self, now: float, by: str = "silence") -> None:
        """The end of this turn is decided (by: "head" at a pause, or "silence"): what was held
        goes out, and the rest as it comes."""
        self.confirmed, self.decided = True, now
        self.timings["prepared_before_end_ms"] = (now - self.created) * 1e3
        self.session.carry = None
        p = None if self.p_finished is None else round(self.p_finished, 3)
        self.session.put_json(type="turn", turn=self.number, speech_end=round(self.at, 4),
                              joined_s=round(self.joined / self.rate, 3), by=by, p_finished=p)
        for kind, payload in self.held:
            self._out(kind, payload)
        self.held = []

    def cancel(self) -> None:
        self.cancelled = True
        if self.job is not None:
            self.job.cancel()
        self.task.cancel()

    def sent(self, nbytes: int) -> None:
        """The sender put `nbytes` of this turn's PCM on the wire."""
        s = self.session
        now = time.perf_counter()
        if self.first_sent is None:
            self.first_sent = now
            self.timings["end_to_first_audio_sent_ms"] = (now - self.decided) * 1e3
            s.put_json(type="first_audio", turn=self.number, timings=self.rounded())
        self.samples_sent += nbytes // 2
        s.playing_until = self.first_sent + self.samples_sent / s.pipe.codec.sample_rate + PLAYBACK_SLACK_S

    def rounded(self) -> dict:
        return {k: round(v, 2) for k, v in self.timings.items()}

    def _out(self, kind: str, payload) -> None:
        if not self.confirmed:
            self.held.append((kind, payload))
        elif kind == "audio":
            self.session.put_audio(self, payload)
        else:
            self.session.put_json(turn=self.number, **payload)

    async def _hear(self):
        """The turn's audio -> what the model hears, on a worker thread; one at a time per session."""
        s = self.session
        if s.hearing is not None and not s.hearing.done():  # an earlier turn's front-end still runs
            await asyncio.wait([s.hearing], timeout=s.limits.reply_timeout_s)
            if not s.hearing.done():
                raise TimeoutError

        def hear():
            try:
                wav, _ = s.pipe.load((self.audio, self.rate), s.limits.max_turn_seconds + 1)
                if self.cancelled:  # speech resumed while loading: the front-end is not run
                    return None
                codes, features, timings = s.pipe.hear(wav)
                if s.server.turn_head is not None:
                    t = time.perf_counter()
                    self.p_finished = head_probabilities(s.server, wav, features)[0]
                    timings["turn_head"] = (time.perf_counter() - t) * 1e3
                return codes, features, timings
            except ValueError as e:
                raise Unanswerable(str(e)) from e

        s.hearing = asyncio.get_running_loop().run_in_executor(None, hear)
        s.hearing.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even if abandoned
        return await asyncio.wait_for(asyncio.shield(s.hearing), s.limits.reply_timeout_s)

    async def _run(self) -> None:
        s = self.session
        pipe, loop = s.pipe, asyncio.get_running_loop()
        frames: asyncio.Queue = asyncio.Queue()
        wait = s.limits.reply_timeout_s
        try:
            t0 = time.perf_counter()
            heard = await self._hear()
            if self.cancelled or heard is None:
                return
            codes, features, heard = heard
            self.timings.update({k + "_ms": v for k, v in heard.items()})
            head = s.server.turn_head
            if (not self.confirmed and s.turn is self and self.p_finished is not None
                    and self.p_finished >= head.cfg.finished_threshold):
                self.confirm(time.perf_counter(), by="head")  # finished: no need to wait for the silence
                s.detector.end_turn()  # what is said next is a new turn (over the reply: weighed as such)
            self.job = s.scheduler.submit(
                codes=codes, features=features, **s.settings,
                on_frame=lambda f: loop.call_soon_threadsafe(frames.put_nowait, f),
                on_done=lambda reason: loop.call_soon_threadsafe(frames.put_nowait, reason))
            decoder, pending, total, reason = pipe.codec.stream_decoder(), [], 0, None
            while reason is None:
                items = [await asyncio.wait_for(frames.get(), wait)]
                if self.cancelled:  # (before 3.12, wait_for can swallow a cancel that meets its result)
                    return
                while not frames.empty():  # whatever else is ready goes in the same chunk
                    items.append(frames.get_nowait())
                for item in items:
                    if isinstance(item, str):
                        reason = item  # "eos", "cancelled", "error: ..." or "crashed"
                    else:
                        pending.append(item)
                if pending and "first_frame_ms" not in self.timings:
                    self.timings["first_frame_ms"] = (time.perf_counter() - t0) * 1e3
                    self.timings["prefill_ms"] = self.job.prefill_ms
                need = FIRST_AUDIO_FRAMES + decoder.lookahead if total == 0 else PUSH_FRAMES
                if reason is None and len(pending) >= need:
                    total += len(pending)
                    await self._decode(decoder, pending)
                    pending = []
            total += len(pending)
            if reason == "crashed":
                s.fail(1011, "server error: the reply engine restarted; please start the conversation again")
                return
            if reason != "eos":
                raise RuntimeError(f"reply {self.number} of {s.id} ended: {reason}")
            await self._decode(decoder, pending, flush=True)
            self.timings["reply_seconds"] = total / pipe.codec.frame_rate
            self.timings["generate_ms"] = (time.perf_counter() - t0) * 1e3
            self._out("json", {"type": "reply_end", "frames": total, "timings": self.rounded()})
        except asyncio.CancelledError:
            pass
        except Exception as e:
            if not self.cancelled:  # a cancelled turn says nothing more
                self._failed(e)
        finally:
            self.finished = True
            if self.job is not None:
                self.job.cancel()

    def _failed(self, e: Exception) -> None:
        """Tell the person in plain words; the details go to the log."""
        s = self.session
        if isinstance(e, Unanswerable):  # a turn that cannot be answered: too short, silent, too long
            reason = str(e)
        elif isinstance(e, TimeoutError):
            log.error("turn %d of %s: no progress for %.0f s; given up", self.number, s.id, s.limits.reply_timeout_s)
            reason = "server error: the reply took too long; please say it again"
        else:
            log.error("turn %d of %s failed", self.number, s.id, exc_info=e)
            reason = FAILED
        self._out("json", {"type": "ignored", "reason": reason})

    def _trim_lead(self, wave: torch.Tensor) -> torch.Tensor:
        """Drop the reply's leading silence (the replies start like their training answers, with
        ~50 ms below -40 dBFS: time the person would wait for nothing), keeping 5 ms before the
        voice starts, and at most LEAD_TRIM_S in all."""
        if self.voiced or not wave.numel():
            return wave
        rate = self.session.pipe.codec.sample_rate
        trimmed = self.timings.get("lead_trimmed_ms", 0.0) * rate / 1e3
        loud = torch.nonzero(wave.abs() > LEAD_LEVEL)
        cut = len(wave) if not len(loud) else max(0, int(loud[0]) - int(0.005 * rate))
        cut = int(min(cut, LEAD_TRIM_S * rate - trimmed))
        self.voiced = bool(len(loud)) or cut < len(wave)
        self.timings["lead_trimmed_ms"] = (trimmed + cut) / rate * 1e3
        return wave[cut:]

    async def _decode(self, decoder, pending: list, flush: bool = False) -> None:
        codes = torch.stack(pending, dim=1) if pending else None
        if codes is not None:
            self._out("json", {"type": "codes", "codes": codes.T.tolist()})

        def work():
            parts = [decoder.push(codes)] if codes is not None else []
            if flush:
                parts.append(decoder.flush())
            return torch.cat(parts) if parts else torch.zeros(0)

        wave = self._trim_lead(await asyncio.wait_for(asyncio.to_thread(work), self.session.limits.reply_timeout_s))
        if wave.numel():
            pcm = (wave.clamp(-1, 1) * 32767).round().to(torch.int16).numpy().astype("<i2").tobytes()
            self._out("audio", struct.pack("<I", self.number) + pcm)
