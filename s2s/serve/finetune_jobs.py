"""The app's fine-tunes: one at a time per server, each in its own process, queued with a position.

    jobs = FinetuneJobs()
    job = jobs.submit("session-1", data="/tmp/s2s-finetune/ab12", base="assets/prototype", out="ckpts/mine")
    jobs.status(job.id)      # {"state": "queued" | "running" | "done" | "failed" | "cancelled",
                             #  "position": 0, "fraction": 0.42, "text": "training: step 25 of 60 ...", ...}
    jobs.cancel(job.id)

A job runs `python -m s2s.finetune ... --progress --json` (a process of its own: the fine-tune
never holds the server's threads or the GIL, and a crash of it is a failed job, not a dead
server) and reads its progress lines. Cancel sends SIGTERM: the fine-tune removes its staging
folder and exits, so nothing is half-written; the base is never touched. When a job ends, its
recordings folder (`cleanup`) is deleted: the person's voice is not kept. One job per session at a
time; at most `max_queued` waiting.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class JobError(ValueError):
    """A fine-tune that cannot be queued (one already running for this session, the queue full)."""


@dataclass
class Job:
    id: str
    session: str
    argv: list[str]
    out: str
    cleanup: str | None = None
    state: str = "queued"
    fraction: float = 0.0
    text: str = "waiting for its turn"
    card: dict | None = None
    error: str = ""
    created: float = field(default_factory=time.time)
    ended: float | None = None
    process: subprocess.Popen | None = None
    cancelled: bool = False


class FinetuneJobs:
    def __init__(self, python: str = sys.executable, cwd: str | Path = ROOT, max_queued: int = 4,
                 keep_ended: int = 50):
        self.python, self.cwd, self.max_queued, self.keep_ended = python, str(cwd), max_queued, keep_ended
        self.jobs: dict[str, Job] = {}
        self.queue: deque[str] = deque()
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.worker = threading.Thread(target=self._work, name="finetune-jobs", daemon=True)
        self.worker.start()

    def submit(self, session: str, *, data: str | Path, base: str | Path, out: str | Path, steps: int | None = None,
               holdout: float | None = None, eval_set: str | None = None, replay: int | None = None,
               cleanup: str | Path | None = None) -> Job:
        argv = [self.python, "-m", "s2s.finetune", "--data", str(data), "--base", str(base), "--out", str(out),
                "--progress", "--json"]
        for flag, value in (("--steps", steps), ("--holdout", holdout), ("--eval-set", eval_set), ("--replay", replay)):
            if value is not None:
                argv += [flag, str(value)]
        with self.lock:
            mine = [j for j in self.jobs.values() if j.session == session and j.state in ("queued", "running")]
            if mine:
                raise JobError("a fine-tune of yours is already queued or running: wait for it, or cancel it")
            if len(self.queue) >= self.max_queued:
                raise JobError(f"{len(self.queue)} fine-tunes are waiting already (at most {self.max_queued}): try later")
            if any(j.out == str(out) and j.state in ("queued", "running") for j in self.jobs.values()):
                raise JobError(f"another fine-tune is writing {out}: choose another name")
            job = Job(uuid.uuid4().hex[:12], session, argv, str(out), str(cleanup) if cleanup else None)
            self.jobs[job.id] = job
            self.queue.append(job.id)
            self._forget_old()
            self.wake.notify()
        return job

    def status(self, job_id: str) -> dict:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return {"state": "unknown", "text": "no such fine-tune (the server may have restarted)"}
            position = list(self.queue).index(job_id) + 1 if job_id in self.queue else 0
            text = job.text if job.state != "queued" else (
                f"queued: {position - 1} fine-tune(s) before yours" + (" and one running" if self._running() else ""))
            return {"state": job.state, "position": position, "fraction": job.fraction, "text": text,
                    "card": job.card, "error": job.error, "out": job.out}

    def cancel(self, job_id: str) -> bool:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.state not in ("queued", "running"):
                return False
            job.cancelled = True
            if job.state == "queued":
                self.queue.remove(job_id)
                self._end(job, "cancelled", "cancelled before it started")
                return True
            process = job.process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the fine-tune removes its staging folder and exits
        return True

    def close(self) -> None:
        with self.lock:
            ids = list(self.queue) + [j.id for j in self.jobs.values() if j.state == "running"]
        for job_id in ids:
            self.cancel(job_id)

    # ------------------------------------------------------------------------- the worker

    def _running(self) -> bool:
        return any(j.state == "running" for j in self.jobs.values())

    def _forget_old(self) -> None:
        ended = sorted((j for j in self.jobs.values() if j.ended), key=lambda j: j.ended)
        for job in ended[: max(0, len(ended) - self.keep_ended)]:
            del self.jobs[job.id]

    def _end(self, job: Job, state: str, text: str) -> None:
        job.state, job.text, job.ended = state, text, time.time()
        if state == "done":
            job.fraction = 1.0
        if job.cleanup:
            shutil.rmtree(job.cleanup, ignore_errors=True)

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.queue:
                    self.wake.wait()
                job = self.jobs[self.queue.popleft()]
                job.state, job.text = "running", "starting"
            self._run(job)

    def _run(self, job: Job) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
        try:
            process = subprocess.Popen(job.argv, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=env, start_new_session=True)
        except OSError as e:
            with self.lock:
                job.error = f"could not start the fine-tune: {e}"
                self._end(job, "failed", job.error)
            return
        with self.lock:
            job.process = process
            cancel_now = job.cancelled
        if cancel_now:
            os.killpg(process.pid, signal.SIGTERM)
        errors: list[str] = []
        reader = threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True)
        reader.start()
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if "progress" in message:
                    job.fraction = float(message["progress"].get("fraction", job.fraction))
                    job.text = str(message["progress"].get("text", job.text))
                else:
                    job.card = message
        process.wait()
        reader.join(timeout=5)
        with self.lock:
            if job.cancelled:
                self._end(job, "cancelled", "cancelled: nothing was written")
            elif process.returncode == 0 and job.card is not None:
                self._end(job, "done", f"done: {job.out}")
            else:
                said = [e.strip() for e in errors if e.strip().startswith("error:")]
                job.error = said[-1].removeprefix("error:").strip() if said else (
                    f"the fine-tune stopped (exit code {process.returncode}); its last words: "
                    + " ".join(e.strip() for e in errors[-3:]))
                self._end(job, "failed", f"failed: {job.error}")
