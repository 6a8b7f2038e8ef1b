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
    server, url = running(max_sessions=2)
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

async def stream_silence(url, until: asyncio.Event | None = None, seconds=10.0):
    """A forgotten tab: start, then a quiet microphone (faint noise) in real time until closed."""
    import websockets

    rng = np.random.default_rng(0)
    try:
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": RATE}))
            ready = json.loads(await ws.recv())
            until and until.set()
            t0 = time.perf_counter()
            for i in range(int(seconds / 0.02)):
                await asyncio.sleep(max(0.0, t0 + i * 0.02 - time.perf_counter()))
                await ws.send((rng.normal(0, 30, 480)).astype("<i2").tobytes())  # -60 dBFS
            return ready, None, None, time.perf_counter() - t0
    except websockets.ConnectionClosed as e:
        return ready, e.rcvd.code, e.rcvd.reason, time.perf_counter() - t0


def test_silent_tabs_are_closed_after_the_idle_limit_and_the_next_visitor_gets_in(running):
    server, url = running(max_sessions=8, idle_timeout_s=1.5)
    server.ready()

    async def scenario():
        opened = [asyncio.Event() for _ in range(8)]
        tabs = [asyncio.create_task(stream_silence(url, e)) for e in opened]
        for e in opened:
            await asyncio.wait_for(e.wait(), 10)
        ninth_early = await raw(url, {"type": "start", "sample_rate": RATE}, [])
        closes = await asyncio.gather(*tabs)
        return ninth_early, closes, await stream_silence(url, seconds=0.2)

    ninth_early, closes, ninth = asyncio.run(scenario())
    assert ninth_early[0] == 1013  # while the 8 tabs stream silence, every place is taken
    for ready, code, reason, seconds in closes:
        # frames kept coming, but nobody spoke: closed after the idle limit, with a reason to show
        assert code == 1000 and reason.startswith("idle: no speech for 1.5 s"), (code, reason)
        assert 1.4 < seconds < 4.0
        assert ready["idle_timeout_s"] == 1.5
    assert ninth[0]["type"] == "ready"  # and the ninth visitor got in
    assert freed(server)


def test_a_conversation_is_closed_at_its_length_limit(running, prompts):
    server, url = running(max_sessions=2, max_conversation_s=2.0)
    server.ready()
    ready, code, reason, seconds = asyncio.run(stream_silence(url, seconds=6.0))
    assert code == 1000 and reason.startswith("conversations last at most 2 s"), (code, reason)
    assert 1.9 < seconds < 3.5 and ready["max_conversation_s"] == 2.0
    assert freed(server)


def test_start_settings_not_finite_or_out_of_range_are_refused_by_name(running):
    server, url = running(max_sessions=16)
    start = '{"type": "start", "sample_rate": 24000, '
    bad = [
        (start + '"temperature": Infinity}', "temperature must be a number in [0, 5], got inf"),
        (start + '"temperature": NaN}', "temperature must be a number"),
        (start + '"temperature": 1e999}', "temperature"),
        (start + '"temperature": 50}', "temperature must be a number in [0, 5], got 50"),
        (start + '"top_p": -Infinity}', "top_p"),
        (start + '"top_p": 0}', "top_p"),
        (start + '"top_k": -1}', "top_k must be an int in [0, 4096], got -1"),
        (start + '"top_k": 1e3}', "top_k must be an int"),
        (start + '"seed": 18446744073709551616}', "seed must be an int in [0, 1.84467e+19] (-1 = random), got 1844"),
        (start + '"seed": -2}', "seed"),
        (start + '"seed": true}', "seed"),
        (start + '"sample_rate": NaN}', "sample_rate"),
    ]

    async def everyone():
        return await asyncio.gather(*(raw(url, s, []) for s, _ in bad))

    for (code, reason), (_, want) in zip(asyncio.run(everyone()), bad):
        assert code == 1008 and want in reason, (code, reason)
    # the largest seed is taken
    log = asyncio.run(converse(url, [], RATE, start={"seed": 2**64 - 1, "temperature": 5, "top_k": 0}))
    assert log.ready is not None and not log.error, log.error
    assert freed(server)


def test_only_same_origin_pages_and_a_few_conversations_per_address(running):
    import websockets

    server, url = running(max_sessions=8, max_per_client=2)
    wide, wide_url = running(max_sessions=2, allowed_origins=("https://friend.example",))
    host = url.split("/")[2]
    start = json.dumps({"type": "start", "sample_rate": RATE})

    async def opens(u, **connect):
        """'ready' (and the socket, kept open), or the refusal: HTTP status or close code."""
        try:
            ws = await websockets.connect(u, **connect)
        except websockets.InvalidStatus as e:
            return e.response.status_code, None
        try:
            await ws.send(start)
            return json.loads(await ws.recv()), ws
        except websockets.ConnectionClosed as e:
            return (e.rcvd.code, e.rcvd.reason), None

    async def scenario():
        out = {"evil": await opens(url, origin="http://evil.example"),
               "evil_port": await opens(url, origin=f"http://{host.split(':')[0]}:1"),
               "friend_here": await opens(url, origin="https://friend.example"),
               "same": await opens(url, origin=f"http://{host}"),
               "no_origin": await opens(url),
               "third": await opens(url),
               "proxied": await opens(url, additional_headers={"X-Forwarded-For": "203.0.113.7"}),
               "friend": await opens(wide_url, origin="https://friend.example"),
               "evil_wide": await opens(wide_url, origin="https://evil.example")}
        await asyncio.gather(*(ws.close() for _, ws in out.values() if ws is not None))
        return {k: v for k, (v, _) in out.items()}

    got = asyncio.run(scenario())
    # another site's page cannot open a conversation in its visitor's name: refused at the handshake
    assert got["evil"] == 403 and got["evil_port"] == 403 and got["friend_here"] == 403
    assert got["same"]["type"] == "ready" and got["no_origin"]["type"] == "ready"
    # no server paths: the checkpoint's folder name only
    assert got["same"]["checkpoint"] == "prototype"
    # a third conversation from one address is refused with a reason ...
    assert got["third"][0] == 1008 and "at most 2 at once from one address" in got["third"][1]
    # ... a visitor behind the (local) proxy is counted by the address the proxy forwards
    assert got["proxied"]["type"] == "ready"
    # --allowed-origins widens it
    assert got["friend"]["type"] == "ready" and got["evil_wide"] == 403
    assert freed(server) and freed(wide)


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
    server, url = running(max_sessions=2, end_silence_ms=600)
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


def test_on_a_space_its_own_page_is_always_let_in(monkeypatch):
    """Whatever Host header the Space's proxy passes on, the page at https://$SPACE_HOST may talk."""
    import argparse

    from s2s.serve.converse_limits import Limits, add_limit_flags, limit_flags, origin_allowed

    p = argparse.ArgumentParser()
    add_limit_flags(p)
    args = p.parse_args(["--allowed-origins", "https://me.example"])
    monkeypatch.delenv("SPACE_HOST", raising=False)
    assert limit_flags(args)["allowed_origins"] == ("https://me.example",)
    monkeypatch.setenv("SPACE_HOST", "someone-s2s.hf.space")
    limits = Limits(**limit_flags(args))
    proxied = {"host": "10.0.0.7:7860"}  # what a proxy may pass on instead of the page's host
    assert origin_allowed("https://someone-s2s.hf.space", proxied, limits.allowed_origins)
    assert not origin_allowed("https://evil.example", proxied, limits.allowed_origins)
