"""What a visitor's conversation is held to (s2s/serve/converse_limits.py), over real sockets to a
real server with the bundled prototype: idle means no speech, a length limit, start settings
checked by field, same-origin pages and a few conversations per address."""

import asyncio
import json
import time

import numpy as np

from s2s.serve.converse_client import converse
from test_converse import RATE, freed, pipeline, prompts, raw, running  # noqa: F401 - the shared fixtures


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
