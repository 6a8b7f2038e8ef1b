"""Turn-taking with the turn head, over real sockets to a real server with the bundled prototype and
the bundled head: a hesitation mid-question is held, a finished question is answered without
waiting for the fallback silence, a backchannel over a reply lets it go on, a question over it
stops it."""

import asyncio
import random
import time

import numpy as np
import pytest

from s2s.data.turns import RATE, insert_pause, speak, voice_for
from s2s.serve.converse_client import Talker, speech_end, speech_start
from test_converse import freed, pipeline, running  # noqa: F401 - the shared fixtures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def said():
    rng = random.Random(7)
    voice = voice_for(rng, "eval")
    return {"question": speak(voice, "Could you tell me what the weather is like today?"),
            "other": speak(voice_for(rng, "eval"), "What is the capital of France?"),
            "mm": speak(voice, "uh-huh")}


async def talk(url, first, over=None, pause_s=0.0):
    """Say `first` (a hesitation of pause_s inserted mid-way); with `over`, say it 0.5 s into the
    reply. -> (talker, speech end, when `over`'s speech started), client times."""
    t = await Talker.open(url)
    try:
        await t.say(np.zeros(int(0.3 * RATE), np.float32))
        x = insert_pause(first, RATE, pause_s)[0] if pause_s else first
        end = await t.say(x) + speech_end(x, RATE)
        assert await t.until(lambda: t.audio_at, 6.0), t.events
        spoke = None
        if over is not None:
            await asyncio.sleep(max(0.0, min(t.audio_at.values()) + 0.5 - time.perf_counter()))
            spoke = await t.say(over) + speech_start(over, RATE)
            await t.until(lambda: t.of("barge_in") or t.of("backchannel"), 2.0)
        else:
            await t.until(lambda: t.of("reply_end"), 5.0)
        return t, end, spoke
    finally:
        await t.close()


def test_a_hesitation_is_held_and_a_finished_question_answered_at_once(running, said):
    server, url = running(max_sessions=2, max_reply_seconds=1.0)
    t, end, _ = asyncio.run(talk(url, said["question"], pause_s=0.8))
    turns = t.of("turn")
    assert turns and all(at >= end - 0.02 for at, _ in turns), (end, turns)  # nothing decided inside the pause
    assert not t.of("barge_in")
    assert turns[0][1]["by"] == "head"  # ... and the end came from the head, not the 1 s fallback
    assert turns[0][0] - end < 0.6
    assert freed(server)


def test_a_backchannel_over_a_reply_lets_it_go_on_and_a_question_stops_it(running, said):
    server, url = running(max_sessions=2, max_reply_seconds=4.0)
    t, _, _ = asyncio.run(talk(url, said["question"], over=said["mm"]))
    assert t.of("backchannel") and not t.of("barge_in"), t.events
    t, _, spoke = asyncio.run(talk(url, said["question"], over=said["other"]))
    stops = t.of("barge_in")
    assert stops and stops[0][0] - spoke < 0.7, (spoke, t.events)
    assert freed(server)
