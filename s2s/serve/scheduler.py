"""Continuous batching: one model, many conversations, one forward pass per decode step.

    sched = Scheduler(model, max_sessions=8, max_prompt_frames=1000)
    job = sched.submit(features=feats, on_frame=send, on_done=finish, temperature=0.7, seed=1)
    ...                                     # on_frame(frame [K]) is called as each reply frame completes
    job.cancel()                            # barge-in / disconnect: the slot is freed before the next step
    sched.close()

A thread runs the loop: admit the replies waiting for a slot (each prefilled on its own: its
prompt's cross K/V copied into its slot, the BOS step run on its own cache rows), then one
`model.decode` over the active rows, each at its own step (a position per row; masks hide the
cache slots a row has not written and the prompt frames beyond its own prompt), then each row
samples its own tokens through the delay pattern (s2s.models.generate.StepRules) with its own
generator. Replies join and leave between steps; active rows stay packed in slots 0..n-1 (a
reply that leaves is replaced by the last row, a copy of its filled cache), so a step works on
views of the preallocated caches, never copies of them. Greedy batched replies equal replies
generated alone (tests/test_scheduler.py).

Memory is allocated once: per decoder layer, self-attention K/V [N, H, max_steps, D/H] and
cross-attention K/V [N, H, max_prompt_frames, D/H], N = max_sessions. Callbacks run on the
scheduler's thread: keep them short (hand the frame to an event loop or a queue).

Failure stays with its row: an exception in one row's work (its prefill, its sampling) ends that
reply only (on_done("error: ...")); one in the batched forward pass ends the replies of that
step. If the loop itself dies (an exception while retiring rows, say), every reply it held or
queued ends with on_done("crashed") and a fresh thread takes over with empty rows; `submit`
restarts a dead thread too, so a queued reply never waits on a thread that is gone.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from s2s.models import generate as gen
from s2s.models import patterns
from s2s.models.model import S2SModel

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One reply being generated. on_frame(frame [K] LongTensor) per completed frame;
    on_done(reason) once: "eos" (the reply ended), "cancelled", "error: ..." (this reply
    failed) or "crashed" (the scheduler's thread died and was restarted)."""

    id: int
    codes: torch.Tensor | None
    features: torch.Tensor | None
    on_frame: Callable[[torch.Tensor], None]
    on_done: Callable[[str], None]
    rules: gen.StepRules
    sample: Callable[[torch.Tensor], torch.Tensor]
    submitted: float = field(default_factory=time.perf_counter)
    prefill_ms: float = 0.0
    cancelled: bool = False
    step: int = 0
    prompt_len: int = 0
    history: list = field(default_factory=list)  # tokens [K] per step, for the frames' diagonals

    def cancel(self) -> None:
        """Stop generating; the slot is freed before the next step (thread-safe)."""
        self.cancelled = True


class SchedulerFull(RuntimeError):
    """More replies waiting than the scheduler admits."""


class Scheduler:
    def __init__(self, model: S2SModel, *, max_sessions: int = 8, max_prompt_frames: int | None = None,
                 max_frames: int | None = None, max_waiting: int | None = None):
        cfg = model.cfg
        if not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be an int >= 1, got {max_sessions!r}")
        self.model, self.cfg = model, cfg
        self.max_frames = cfg.max_reply_frames if max_frames is None else int(max_frames)
        if not 1 <= self.max_frames <= cfg.max_reply_frames:
            raise ValueError(f"max_frames must be in [1, {cfg.max_reply_frames}], got {max_frames!r}")
        longest = (cfg.max_feature_frames if cfg.uses_features else 0) + (cfg.max_prompt_frames if cfg.uses_codes else 0)
        self.max_prompt = longest if max_prompt_frames is None else min(int(max_prompt_frames), longest)
        self.n = max_sessions
        self.max_waiting = 4 * max_sessions if max_waiting is None else max_waiting
        self.device = model.heads.device
        steps = self.max_frames + cfg.n_codebooks
        dtype = torch.bfloat16 if self.device.type == "cuda" else model.heads.dtype
        hd = cfg.d_model // cfg.n_head

        def buffers(length):
            return [(torch.zeros(self.n, cfg.n_head, length, hd, dtype=dtype, device=self.device),
                     torch.zeros(self.n, cfg.n_head, length, hd, dtype=dtype, device=self.device))
                    for _ in range(cfg.n_layer)]

        self.caches, self.cross = buffers(steps), buffers(self.max_prompt)
        self.cross_len = torch.zeros(self.n, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(self.n, dtype=torch.long, device=self.device)
        self.tokens = torch.zeros(self.n, cfg.n_codebooks, 1, dtype=torch.long, device=self.device)
        self.active: list[Job] = []  # row i of the buffers belongs to active[i]
        self.waiting: queue.Queue[Job] = queue.Queue()
        self.ids = itertools.count(1)
        self.bos = patterns.special_ids(cfg.cardinality)["bos"]
        self.stats = {"steps": 0, "rows": 0, "step_ms": 0.0, "jobs": 0, "restarts": 0}
        self._wake = threading.Event()
        self._closed = False
        self._restart_lock = threading.Lock()
        self._thread = self._start_thread()

    def _start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="s2s-scheduler", daemon=True)
        thread.start()
        return thread

    # ------------------------------------------------------------------ public

    def submit(self, *, codes: torch.Tensor | None = None, features: torch.Tensor | None = None,
               on_frame: Callable[[torch.Tensor], None], on_done: Callable[[str], None],
               max_frames: int | None = None, min_frames: int = 1, temperature: float = 0.7,
               top_k: int = 50, top_p: float = 1.0, seed: int | None = None) -> Job:
        """Queue a reply to a prompt (codes [K, S] and/or features [S', D], as the model hears)."""
        if self._closed:
            raise RuntimeError("the scheduler is closed")
        self._ensure_running()
        cfg = self.cfg
        max_frames = self.max_frames if max_frames is None else max_frames
        gen.validate_sampling(temperature, top_k, top_p, max_frames)
        if max_frames > self.max_frames:
            raise ValueError(f"max_frames {max_frames} exceeds this scheduler's {self.max_frames}")
        if cfg.uses_codes:
            gen.check_prompt(codes, cfg)
        if cfg.uses_features:
            gen.check_features(features, cfg)
        length = (features.shape[0] if cfg.uses_features else 0) + (codes.shape[1] if cfg.uses_codes else 0)
        if length > self.max_prompt:
            raise ValueError(f"prompt has {length} frames; this scheduler takes at most {self.max_prompt}")
        if self.waiting.qsize() >= self.max_waiting:
            raise SchedulerFull(f"{self.waiting.qsize()} replies are already waiting for a slot")
        generator = None if seed is None else torch.Generator(device="cpu").manual_seed(int(seed))

        def sample(masked: torch.Tensor) -> torch.Tensor:
            return gen.sample_next(masked, temperature, top_k, top_p, generator)

        job = Job(next(self.ids), codes if cfg.uses_codes else None, features if cfg.uses_features else None,
                  on_frame, on_done, gen.StepRules(cfg.n_codebooks, cfg.cardinality, max_frames, min_frames),
                  sample, prompt_len=length)
        self.waiting.put(job)
        self._wake.set()
        return job

    @property
    def busy_rows(self) -> int:
        return len(self.active)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------ the loop

    def _ensure_running(self) -> None:
        """Start a fresh thread if the loop's thread is gone (its crash handling failed too)."""
        with self._restart_lock:
            if not self._closed and not self._thread.is_alive():
                log.error("the scheduler's thread was dead; starting a new one")
                self._crashed()
                self._thread = self._start_thread()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # the loop died: its replies end, a new thread takes over
            log.exception("the scheduler's loop died; restarting it")
            with self._restart_lock:
                self._crashed()
                if not self._closed:
                    time.sleep(0.05)  # a fault that repeats at once must not spin a core
                    self._thread = self._start_thread()

    def _crashed(self) -> None:
        """End every reply held or queued ("crashed") and free every row, touching no tensors."""
        self.stats["restarts"] += 1
        jobs, self.active = list(self.active), []
        while not self.waiting.empty():
            jobs.append(self.waiting.get_nowait())
        for job in jobs:
            self._finish(job, "crashed")

    def _loop(self) -> None:
        with torch.inference_mode():
            while not self._closed:
                try:
                    self._retire([j for j in self.active if j.cancelled], "cancelled")
                    self._admit()
                    if not self.active:
                        self._wake.wait(timeout=0.5)
                        self._wake.clear()
                        continue
                    self._step()
                except Exception as e:  # the batched pass failed: the replies in it end, the loop goes on
                    log.exception("scheduler step failed")
                    self._retire(list(self.active), f"error: {type(e).__name__}")
            self._retire(list(self.active), "cancelled")
            while not self.waiting.empty():
                self._finish(self.waiting.get_nowait(), "cancelled")

    def _admit(self) -> None:
        while len(self.active) < self.n and not self.waiting.empty():
            job = self.waiting.get_nowait()
            if job.cancelled:
                self._finish(job, "cancelled")
                continue
            row = len(self.active)
            self.active.append(job)
            try:
                self._prefill(job, row)
            except Exception as e:  # this reply's prompt failed: this reply ends
                log.exception("prefill of job %d failed", job.id)
                self._retire([job], f"error: {type(e).__name__}")

    def _prefill(self, job: Job, row: int) -> None:
        """Encode the job's prompt into row `row` (cross K/V) and run its BOS step there."""
        t0 = time.perf_counter()
        model, cfg = self.model, self.cfg
        codes = None if job.codes is None else job.codes[None].to(self.device)
        feats = None if job.features is None else job.features[None].to(self.device)
        with gen.autocast(self.device):
            memory, _ = model.encode_prompt(codes, None, feats, None)
            kvs = model.cross_kv(memory)
        s = memory.shape[1]
        for (k, v), (ck, cv) in zip(kvs, self.cross):
            ck[row, :, :s] = k[0].to(ck.dtype)
            cv[row, :, :s] = v[0].to(cv.dtype)
        self.cross_len[row] = s
        cross = [(ck[row:row + 1, :, :s], cv[row:row + 1, :, :s]) for ck, cv in self.cross]
        caches = [(k[row:row + 1, :, :1], v[row:row + 1, :, :1]) for k, v in self.caches]
        start = torch.full((1, cfg.n_codebooks, 1), self.bos, dtype=torch.long, device=self.device)
        with gen.autocast(self.device):
            logits = model.decode(start, torch.zeros(1, dtype=torch.long, device=self.device), cross, caches=caches)
        job.prefill_ms = (time.perf_counter() - t0) * 1e3
        self._choose(job, row, logits[0, :, -1].float())

    def _step(self) -> None:
        """One decode step for every active row, in one forward pass."""
        t0 = time.perf_counter()
        n = len(self.active)
        pos = self.pos[:n]
        end = int(pos.max()) + 1
        s = int(self.cross_len[:n].max())
        caches = [(k[:n, :, :end], v[:n, :, :end]) for k, v in self.caches]
        cross = [(k[:n, :, :s], v[:n, :, :s]) for k, v in self.cross]
        if n == 1:  # the same computation as generate()'s decode_step
            self_mask = cross_mask = None
        else:
            self_mask = (torch.arange(end, device=self.device)[None] <= pos[:, None])[:, None, None]
            cross_mask = (torch.arange(s, device=self.device)[None] < self.cross_len[:n, None])[:, None, None]
        with gen.autocast(self.device):
            logits = self.model.decode(self.tokens[:n], pos[:, None] if n > 1 else pos[:1], cross,
                                       cross_mask, caches=caches, self_mask=self_mask)
        logits = logits[:, :, -1].float()
        self.stats["steps"] += 1
        self.stats["rows"] += n
        self.stats["step_ms"] += (time.perf_counter() - t0) * 1e3
        done, failed = [], []
        for row, job in enumerate(list(self.active)):
            if job.cancelled:
                continue
            try:  # one row's sampling failing ends that reply, not the others
                if self._choose(job, row, logits[row]):
                    done.append(job)
            except Exception as e:
                log.exception("step of job %d failed", job.id)
                failed.append((job, f"error: {type(e).__name__}"))
        self._retire(done, "eos")
        for job, reason in failed:
            self._retire([job], reason)

    def _choose(self, job: Job, row: int, logits: torch.Tensor) -> bool:
        """Sample the job's tokens for its current step, hand out a completed frame; True when
        the reply is over."""
        k = self.cfg.n_codebooks
        tokens = job.rules.choose(logits, job.step, job.sample)
        job.history.append(tokens.cpu())
        frame = job.rules.frame_ready(job.step)
        if frame is not None:
            out = torch.stack([job.history[frame + c][c] for c in range(k)])
            try:
                job.on_frame(out)
            except Exception:  # the consumer's problem (e.g. a closed socket): stop this reply only
                log.exception("on_frame failed; cancelling job %d", job.id)
                job.cancel()
        if job.rules.done(job.step):
            return True
        job.step += 1
        self.tokens[row, :, 0] = tokens.to(self.device)
        self.pos[row] = job.step
        return False

    def _retire(self, jobs: list[Job], reason: str) -> None:
        for job in jobs:
            row = self.active.index(job)
            last = len(self.active) - 1
            if row != last:  # keep rows packed: the last row moves into the freed one
                mover = self.active[last]
                end, s = int(self.pos[last]) + 1, int(self.cross_len[last])
                for k, v in self.caches:
                    k[row, :, :end] = k[last, :, :end]
                    v[row, :, :end] = v[last, :, :end]
                for k, v in self.cross:
                    k[row, :, :s] = k[last, :, :s]
                    v[row, :, :s] = v[last, :, :s]
                self.cross_len[row], self.pos[row] = self.cross_len[last], self.pos[last]
                self.tokens[row] = self.tokens[last]
                self.active[row] = mover
            self.active.pop()
            self._finish(job, reason)

    def _finish(self, job: Job, reason: str) -> None:
        self.stats["jobs"] += 1
        job.history = []
        try:
            job.on_done(reason)
        except Exception:
            log.exception("on_done failed for job %d", job.id)
