"""The continuous-batching scheduler: batched replies equal replies generated alone."""

import threading

import pytest
import torch

from s2s.models import generate as gen
from s2s.models.model import ModelConfig, S2SModel
from s2s.serve.scheduler import Scheduler


def tiny(frontend="whisper_tiny_en", feature_dim=12):
    torch.manual_seed(0)
    cfg = ModelConfig(n_codebooks=4, cardinality=64, d_model=32, n_layer=2, n_head=4, d_ff=64, n_encoder_layer=1,
                      max_reply_frames=40, frontend=frontend, feature_dim=feature_dim, max_feature_frames=200)
    return S2SModel(cfg).eval()


class Collector:
    def __init__(self):
        self.frames, self.reason, self.done = [], None, threading.Event()

    def on_frame(self, f):
        self.frames.append(f)

    def on_done(self, reason):
        self.reason = reason
        self.done.set()


def alone(model, features=None, codes=None, **kw):
    return list(gen.generate(model, codes, features=features, temperature=0, **kw))


def test_batched_greedy_replies_equal_replies_generated_alone():
    model = tiny()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randn(n, 12, generator=g) for n in (17, 60, 33, 5)]
    lengths = (25, 40, 12, 30)
    # random weights end replies early: min_frames keeps them going for the whole length
    expected = [alone(model, p, max_frames=m, min_frames=m) for p, m in zip(prompts, lengths)]
    sched = Scheduler(model, max_sessions=3, max_prompt_frames=100)
    try:
        got, jobs = [], []
        for i, (p, m) in enumerate(zip(prompts, lengths)):
            c = Collector()
            if i == 1:  # join while the first is mid-reply
                while len(got[0].frames) < 6 and not got[0].done.wait(0.001):
                    pass
            jobs.append(sched.submit(features=p, on_frame=c.on_frame, on_done=c.on_done, max_frames=m,
                                     min_frames=m, temperature=0))
            got.append(c)
        for c in got:  # the 4th waited for a slot (3 sessions at most), then ran
            assert c.done.wait(30)
        for c, exp in zip(got, expected):
            assert c.reason == "eos"
            assert len(c.frames) == len(exp)
            assert torch.equal(torch.stack(c.frames), torch.stack(exp))
        assert sched.stats["rows"] > sched.stats["steps"]  # some steps really were batched
        assert sched.busy_rows == 0
    finally:
        sched.close()


def test_codes_model_and_seeded_sampling_match_generate():
    model = tiny("codes", 0)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 64, (4, n), generator=g) for n in (9, 21)]
    expected = [list(gen.generate(model, p, max_frames=20, min_frames=15, temperature=0.9, top_k=10, seed=5))
                for p in prompts]
    sched = Scheduler(model, max_sessions=2)
    try:
        got = [Collector() for _ in prompts]
        for p, c in zip(prompts, got):
            sched.submit(codes=p, on_frame=c.on_frame, on_done=c.on_done, max_frames=20, min_frames=15,
                         temperature=0.9, top_k=10, seed=5)
        for c, exp in zip(got, expected):
            assert c.done.wait(30) and c.reason == "eos"
            assert torch.equal(torch.stack(c.frames), torch.stack(exp))
    finally:
        sched.close()


def test_a_cancelled_reply_frees_its_slot_and_the_others_are_unaffected():
    model = tiny()
    g = torch.Generator().manual_seed(3)
    a, b, c = (torch.randn(n, 12, generator=g) for n in (10, 20, 30))
    expected_b = alone(model, b, max_frames=40, min_frames=40)
    sched = Scheduler(model, max_sessions=2)
    try:
        ca, cb, cc = Collector(), Collector(), Collector()
        ja = sched.submit(features=a, on_frame=ca.on_frame, on_done=ca.on_done, temperature=0, min_frames=40)
        sched.submit(features=b, on_frame=cb.on_frame, on_done=cb.on_done, temperature=0, min_frames=40)
        while len(ca.frames) < 3 and not ca.done.wait(0.001):
            pass
        ja.cancel()
        assert ca.done.wait(10) and ca.reason == "cancelled"
        sched.submit(features=c, on_frame=cc.on_frame, on_done=cc.on_done, temperature=0,
                     min_frames=40)  # takes a's slot
        assert cb.done.wait(30) and cc.done.wait(30)
        assert torch.equal(torch.stack(cb.frames), torch.stack(expected_b))
        assert torch.equal(torch.stack(cc.frames), torch.stack(alone(model, c, max_frames=40, min_frames=40)))
    finally:
        sched.close()


def test_bad_submissions_are_refused_by_name():
    model = tiny()
    sched = Scheduler(model, max_sessions=1, max_prompt_frames=50)
    try:
        noop = dict(on_frame=lambda f: None, on_done=lambda r: None)
        with pytest.raises(ValueError, match="at most 50"):
            sched.submit(features=torch.randn(51, 12), **noop)
        with pytest.raises(ValueError, match="features must be"):
            sched.submit(features=torch.randn(10, 3), **noop)
        with pytest.raises(ValueError, match="top_p"):
            sched.submit(features=torch.randn(10, 12), top_p=0, **noop)
    finally:
        sched.close()
    with pytest.raises(ValueError, match="max_sessions"):
        Scheduler(model, max_sessions=0)


def test_a_failing_row_fails_only_its_own_reply():
    model = tiny()
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(12, 12, generator=g), torch.randn(25, 12, generator=g)
    expected_b = alone(model, b, max_frames=30, min_frames=30)
    sched = Scheduler(model, max_sessions=2)
    choose = sched._choose

    def choose_or_fail(job, row, logits):  # a's sampling fails at its 5th step
        if job.id == ja.id and job.step == 5:
            raise RuntimeError("a bad row")
        return choose(job, row, logits)

    sched._choose = choose_or_fail  # the real scheduler, one method made to fail
    try:
        ca, cb = Collector(), Collector()
        ja = sched.submit(features=a, on_frame=ca.on_frame, on_done=ca.on_done, temperature=0, min_frames=30)
        sched.submit(features=b, on_frame=cb.on_frame, on_done=cb.on_done, temperature=0, max_frames=30,
                     min_frames=30)
        assert ca.done.wait(30) and cb.done.wait(30)
        assert cb.reason == "eos" and torch.equal(torch.stack(cb.frames), torch.stack(expected_b))
        assert ca.reason == "error: RuntimeError"  # the reason names the kind; the details are logged
        assert sched.busy_rows == 0 and sched.stats["restarts"] == 0
    finally:
        sched.close()


def test_a_dead_loop_ends_its_replies_and_a_new_thread_takes_over():
    model = tiny()
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(12, 12, generator=g), torch.randn(20, 12, generator=g)
    sched = Scheduler(model, max_sessions=1)
    step, retire, broken = sched._step, sched._retire, []

    def step_fails():
        if not broken:
            broken.append("step")
            raise RuntimeError("step")
        return step()

    def retire_fails(jobs, reason):  # freeing the failed rows fails too: the loop itself dies
        if jobs and broken == ["step"]:
            broken.append("retire")
            raise RuntimeError("retire")
        return retire(jobs, reason)

    sched._step, sched._retire = step_fails, retire_fails
    try:
        old = sched._thread
        ca, cw = Collector(), Collector()
        sched.submit(features=a, on_frame=ca.on_frame, on_done=ca.on_done, temperature=0, min_frames=40)
        sched.submit(features=b, on_frame=cw.on_frame, on_done=cw.on_done, temperature=0)  # waits for the slot
        assert ca.done.wait(10) and cw.done.wait(10)
        assert ca.reason == cw.reason == "crashed"  # nobody is left waiting on a dead thread
        old.join(5)
        assert not old.is_alive() and sched._thread.is_alive() and sched.stats["restarts"] == 1
        c = Collector()  # the new thread serves, from clean rows
        sched.submit(features=b, on_frame=c.on_frame, on_done=c.on_done, temperature=0, max_frames=20, min_frames=20)
        assert c.done.wait(30) and c.reason == "eos"
        assert torch.equal(torch.stack(c.frames), torch.stack(alone(model, b, max_frames=20, min_frames=20)))
    finally:
        sched.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_submit_restarts_a_thread_that_died_outright():
    model = tiny()
    sched = Scheduler(model, max_sessions=1)
    step, crashed, broken = sched._step, sched._crashed, []

    def step_fails():
        raise KeyboardInterrupt  # not an Exception: the loop's own handler lets it through

    def crash_handling_fails():  # and so does the restart: the thread is gone
        if not broken:
            broken.append(1)
            raise RuntimeError("crash handling")
        return crashed()

    sched._step, sched._crashed = step_fails, crash_handling_fails
    try:
        old, ca = sched._thread, Collector()
        sched.submit(features=torch.randn(8, 12), on_frame=ca.on_frame, on_done=ca.on_done, temperature=0)
        old.join(10)
        assert not old.is_alive() and broken == [1] and not ca.done.is_set()  # a reply waits on a dead thread
        sched._step = step
        c = Collector()  # the next submit finds the thread dead: the waiting reply ends, a new thread runs
        sched.submit(features=torch.randn(9, 12), on_frame=c.on_frame, on_done=c.on_done, temperature=0,
                     max_frames=10, min_frames=10)
        assert ca.done.wait(5) and ca.reason == "crashed"
        assert c.done.wait(30) and c.reason == "eos" and len(c.frames) == 10
        assert sched._thread.is_alive() and sched.stats["restarts"] == 1
    finally:
        sched.close()
