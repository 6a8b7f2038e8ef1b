"""The conversation WebSocket server, served for real (uvicorn) and talked to by real clients:
concurrent conversations each get their own reply, bad clients are closed with a reason while
the others go on, and every closed session frees what it held."""

import asyncio
import json
import subprocess
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import soxr

from s2s.serve.converse import ConverseServer, Limits
from s2s.serve.converse_client import converse
from s2s.serve.pipeline import load_pipeline
from s2s.serve.ports import free_port

pytestmark = pytest.mark.slow
RATE = 24000


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    d = tmp_path_factory.mktemp("converse")
    out = []
    for i, text in enumerate(["Turn the lights on, please.", "What is the weather like today?",
                              "Tell me a joke."]):
        subprocess.run(["espeak-ng", "-w", str(d / f"{i}.wav"), text], check=True)
        x, sr = sf.read(d / f"{i}.wav", dtype="float32")
        out.append(soxr.resample(x, sr, RATE).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def pipeline():
    """The bundled prototype: a model that listens, so different questions get different replies."""
    return load_pipeline(None, "cpu")


def serve(server: ConverseServer):
    import uvicorn
    from starlette.applications import Starlette

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(Starlette(routes=[server.route()]), host="127.0.0.1", port=port,
                                       log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.05)
    return uv, thread, f"ws://127.0.0.1:{port}/converse/ws"


@pytest.fixture
def running(pipeline):
    def start(**limits):
        limits = {"max_reply_seconds": 1.0, "max_per_client": 64, **limits}  # every test client is 127.0.0.1
        server = ConverseServer(lambda: pipeline, Limits(**limits))
        uv, thread, url = serve(server)
        started.append((server, uv, thread))
        return server, url

    started = []
    yield start
    for server, uv, thread in started:
        uv.should_exit = True
        thread.join(10)
        server.close()


def freed(server, timeout=5.0):
    """Every session gone and every scheduler row free (after the server's own cleanup)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not server.sessions and (server.scheduler is None or server.scheduler.busy_rows == 0):
            return True
        time.sleep(0.05)
    return False


GREEDY = {"temperature": 0}


def test_concurrent_conversations_each_get_their_own_reply(running, prompts):
    server, url = running(max_sessions=4)
    alone = [asyncio.run(converse(url, [p], RATE, start=GREEDY)) for p in prompts]
    for log in alone:
        assert not log.error and log.turns[0]["completed"], log.error
        pcm = np.frombuffer(bytes(log.audio[log.turns[0]["number"]]), "<i2") / 32768
        assert len(pcm) > 0.5 * RATE  # at least 0.5 s of reply audio
        # the reply's leading silence was not sent: the voice starts within the first 10 ms
        assert log.turns[0]["timings"]["lead_trimmed_ms"] > 0
        assert np.flatnonzero(np.abs(pcm) > 0.01)[0] < 0.01 * RATE

    async def together():
        return await asyncio.gather(*(converse(url, [p], RATE, start=GREEDY) for p in prompts))

    both = asyncio.run(together())
    for a, b in zip(alone, both):
        assert not b.error and b.turns[0]["completed"]
        # greedy replies do not depend on who else is talking: the same codes, frame for frame
        assert a.codes[a.turns[0]["number"]] == b.codes[b.turns[0]["number"]]
        # (the audio may differ by a few samples: the decoder's chunks follow the timing)
        assert abs(len(b.audio[b.turns[0]["number"]]) - len(a.audio[a.turns[0]["number"]])) < 0.02 * RATE * 2
    replies = {str(b.codes[b.turns[0]["number"]]) for b in both}
    assert len(replies) == len(prompts)  # and each person got the reply to their own question
    assert server.scheduler.stats["rows"] > server.scheduler.stats["steps"]  # decode steps were shared
    assert freed(server)


async def raw(url, start, frames, wait=5.0):
    """A hand-made client: send `start` (dict or raw text), then `frames`; return the close."""
    import websockets

    try:
        async with websockets.connect(url) as ws:
            await ws.send(start if isinstance(start, str) else json.dumps(start))
            for f in frames:
                await ws.send(f)
            while True:
                await asyncio.wait_for(ws.recv(), wait)
    except websockets.ConnectionClosed as e:
        return e.rcvd.code, e.rcvd.reason


def test_bad_clients_are_closed_with_a_reason_and_the_others_go_on(running, prompts):
    server, url = running(max_sessions=8)
    ok = {"type": "start", "sample_rate": RATE}
    frame = np.zeros(480, "<i2").tobytes()
    bad = [
        ("not json", [], 1008, "first message"),
        ({"type": "start", "sample_rate": 1000}, [], 1008, "sample_rate must be an int in [8000, 48000]"),
        ({"type": "start", "sample_rate": RATE, "temperature": -1}, [], 1008, "temperature"),
        (ok, [b"\x00" * 4800], 1009, "at most 1920"),  # 100 ms in one frame
        (ok, [b"\x00\x01\x02"], 1003, "even"),
        (ok, ["a text frame"], 1003, "binary audio"),
        (ok, [frame] * 300, 1008, "flooding"),  # 6 s of audio at once
    ]

    async def everyone():
        good = converse(url, prompts[:1], RATE, start=GREEDY)
        return await asyncio.gather(good, *(raw(url, s, f) for s, f, _, _ in bad))

    good, *closes = asyncio.run(everyone())
    for (code, reason), (_, _, want_code, want) in zip(closes, bad):
        assert code == want_code and want in reason, (code, reason)
    assert not good.error and good.turns[0]["completed"]  # the good conversation was not disturbed
    assert freed(server)


def test_busy_idle_and_a_client_that_leaves_mid_reply(running, prompts):
    server, url = running(max_sessions=1, idle_timeout_s=1.0)

    async def scenario():
        import websockets

        async with websockets.connect(url) as first:
            await first.send(json.dumps({"type": "start", "sample_rate": RATE}))
            await first.recv()  # ready
            busy = await raw(url, {"type": "start", "sample_rate": RATE}, [])
            # stream a question, then leave as soon as the reply starts
            pcm = (np.concatenate([np.zeros(RATE // 4), prompts[0], np.zeros(RATE)]) * 32767).astype("<i2")
            t0 = time.perf_counter()
            for i in range(0, len(pcm), 480):
                await asyncio.sleep(max(0.0, t0 + i / RATE - time.perf_counter()))
                await first.send(pcm[i:i + 480].tobytes())
            while not isinstance(await first.recv(), bytes):
                pass
        left = freed(server)
        idle = await raw(url, {"type": "start", "sample_rate": RATE}, [], wait=5.0)
        return busy, left, idle

    busy, left, idle = asyncio.run(scenario())
    assert busy[0] == 1013 and "busy" in busy[1]
    assert left  # the reply's scheduler row, tasks and session were freed
    assert idle[0] == 1000 and "idle: no audio for 1 s" in idle[1]
    assert freed(server)


def test_a_turn_ended_mid_sentence_is_joined_to_what_follows(running, prompts):
    server, url = running(max_sessions=2, turn_head="none")  # silence alone ends the turn
    # one question with a 0.4 s pause in the middle: longer than the end-of-turn silence, so the
    # turn ends and a reply starts; the person goes on speaking, which stops it (barge-in) ...
    gap = np.zeros(int(0.4 * RATE), np.float32)
    log = asyncio.run(converse(url, [np.concatenate([prompts[0], gap, prompts[1]])], RATE, start=GREEDY))
    assert not log.error
    kinds = [m["type"] for _, m in log.events]
    turns = [m for _, m in log.events if m["type"] == "turn"]
    assert "barge_in" in kinds and len(turns) == 2
    # ... and the next turn is heard with the first half in front of it
    assert turns[0]["joined_s"] == 0
    assert turns[1]["joined_s"] > 0.5 * len(prompts[0]) / RATE
    assert log.turns[0]["completed"]
    assert freed(server)


# ---------------------------------------------------------------- a public server (issue 19)

def test_a_failing_reply_fails_only_itself_and_the_conversation_goes_on(running, prompts, monkeypatch):
    server, url = running(max_sessions=2, max_reply_seconds=0.5)
    _, sched = server.ready()
    choose, failed = sched._choose, []

    def choose_or_fail(job, row, logits):  # the first reply's sampling fails at its 3rd step
        if job.step == 3 and (not failed or failed == [job.id]):
            failed.append(job.id)
            raise RuntimeError("secret detail /srv/weights")
        return choose(job, row, logits)

    monkeypatch.setattr(sched, "_choose", choose_or_fail)

    async def both():
        a = asyncio.create_task(converse(url, [prompts[2], prompts[1]], RATE, start=GREEDY, tail_silence_s=0.2))
        await asyncio.sleep(0.5)  # b's question is longer and later: a's reply is the one that fails
        b = asyncio.create_task(converse(url, prompts[:1], RATE, start=GREEDY, tail_silence_s=0.2))
        return await asyncio.gather(a, b)

    a, b = asyncio.run(asyncio.wait_for(both(), 60))
    assert len(failed) == 1  # the failed reply says so in plain words (no exception text), and the next turn is answered
    assert a.turns[0]["ignored"] == "server error: this reply failed; please say it again"
    assert not a.error and a.turns[1]["completed"]
    assert not b.error and b.turns[0]["completed"]  # the other conversation did not notice
    assert freed(server)


def test_a_dead_scheduler_is_restarted_and_its_conversations_closed_plainly(running, prompts, monkeypatch):
    server, url = running(max_sessions=2, max_reply_seconds=0.5)
    _, sched = server.ready()
    step, retire, broken = sched._step, sched._retire, []

    def step_fails(*a):
        if not broken:
            broken.append("step")
            raise RuntimeError("secret detail")
        return step(*a)

    def retire_fails(jobs, reason):  # then freeing the failed rows fails too: the thread dies
        if jobs and reason.startswith("error") and broken == ["step"]:
            broken.append("retire")
            raise RuntimeError("secret detail")
        return retire(jobs, reason)

    monkeypatch.setattr(sched, "_step", step_fails)
    monkeypatch.setattr(sched, "_retire", retire_fails)
    first = asyncio.run(converse(url, prompts[2:], RATE, start=GREEDY))
    assert broken == ["step", "retire"] and sched.stats["restarts"] == 1
    assert first.close_code == 1011 and first.close_reason.startswith("server error: the reply engine restarted")
    assert "secret" not in first.close_reason
    after = asyncio.run(converse(url, prompts[2:], RATE, start=GREEDY, tail_silence_s=0.2))  # the new thread serves
    assert not after.error and after.turns[0]["completed"]
    assert freed(server)


def test_a_reply_that_stalls_is_given_up_and_the_conversation_goes_on(running, prompts, monkeypatch):
    server, url = running(max_sessions=2, reply_timeout_s=1.0, max_reply_seconds=0.5)
    _, sched = server.ready()
    step, release = sched._step, threading.Event()

    def stuck(*a):  # the first reply's decode step hangs (a wedged device, say) until released
        release.wait(10)
        return step(*a)

    monkeypatch.setattr(sched, "_step", stuck)

    async def talk():
        task = asyncio.create_task(converse(url, [prompts[2]] * 2, RATE, start=GREEDY, tail_silence_s=0.2))
        while not task.done() and not any(s.turn is not None and s.turn.finished
                                          for s in list(server.sessions.values())):
            await asyncio.sleep(0.05)  # until the first turn was given up
        monkeypatch.setattr(sched, "_step", step)
        release.set()
        return await task

    log = asyncio.run(asyncio.wait_for(talk(), 60))
    assert log.turns[0]["ignored"] == "server error: the reply took too long; please say it again"
    assert not log.error and log.turns[1]["completed"]
    assert freed(server)


def test_a_turn_prepared_at_a_pause_is_cancelled_or_never_started_when_speech_resumes(running, prompts,
                                                                                     monkeypatch):
    server, url = running(max_sessions=2, end_silence_ms=600, turn_head="none")
    pipe, sched = server.ready()
    hear, running_now, seen, lock = pipe.hear, [0], {"calls": 0, "most": 0}, threading.Lock()

    def slow_hear(wav):  # a slow front-end (a big encoder on a busy CPU)
        with lock:
            seen["calls"] += 1
            running_now[0] += 1
            seen["most"] = max(seen["most"], running_now[0])
        try:
            time.sleep(1.0)
            return hear(wav)
        finally:
            with lock:
                running_now[0] -= 1

    monkeypatch.setattr(pipe, "hear", slow_hear)
    submit, submitted = sched.submit, []
    monkeypatch.setattr(sched, "submit", lambda **kw: submitted.append(1) or submit(**kw))
    # one question said in pieces, 0.3 s pauses between them: each pause prepares a turn (0.1 s of
    # silence), each resumption cancels it, and only the end (0.6 s of silence) is answered
    x = prompts[1]
    gap = np.zeros(int(0.3 * RATE), np.float32)
    pieces = [x[i:i + int(0.4 * RATE)] for i in range(0, len(x), int(0.4 * RATE))]
    said = np.concatenate([p for piece in pieces for p in (piece, gap)][:-1])
    log = asyncio.run(converse(url, [said], RATE, start=GREEDY))
    starts = sum(1 for _, m in log.events if m["type"] == "speech")
    assert not log.error and log.turns[0]["completed"]
    assert seen["most"] == 1  # never two front-ends of one conversation at once
    assert seen["calls"] < len(pieces)  # turns cancelled before their front-end never ran it
    assert len(submitted) == 1  # and only the answered turn reached the scheduler
    assert starts == 1  # (the pieces were heard as one turn that paused and resumed)
    assert freed(server)
