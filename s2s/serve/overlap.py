"""Speech over a reply (s2s/serve/converse.py): a backchannel ("mm-hm", "yeah") lets the reply go on,
anything else stops it (barge-in). The turn head (s2s/models/turn_head.py) weighs it twice: at its
onset (surely not a backchannel: stop now) and at its pause (a backchannel: go on; else stop, and
what was said is the next turn). Speech that goes on past Limits.backchannel_max_ms without a
pause is stopped by the session's receive loop.

`o` is the session's overlap record ({"since", "vad_turn", "backchannel"}); a decision is acted on
only if it is still the session's current one.
"""

from __future__ import annotations

import asyncio
import time

from s2s.serve.converse_turn import Turn, head_probabilities


async def p_backchannel(session, ev) -> float:
    """The turn head's P(backchannel) of the speech in ev (0 when it is too short or silent to weigh)."""

    def weigh():
        wav, _ = session.pipe.load((ev.audio, ev.sample_rate), session.limits.max_turn_seconds + 1)
        return head_probabilities(session.server, wav)[1]

    try:
        return await asyncio.wait_for(asyncio.to_thread(weigh), session.limits.reply_timeout_s)
    except (ValueError, TimeoutError):
        return 0.0


async def weigh_onset(session, ev, o: dict) -> None:
    """Speech started over a reply: if its onset is surely not a backchannel, stop the reply now."""
    p = await p_backchannel(session, ev)
    if session.overlap is o and o["backchannel"] is None and p < session.server.turn_head.cfg.onset_threshold:
        session.barge_in(time.perf_counter())


async def weigh_overlap(session, ev, o: dict) -> None:
    """Speech over a reply paused: a backchannel lets the reply go on; anything else stops it and
    is heard as the next turn (prepared now, its end decided as any turn's)."""
    p = await p_backchannel(session, ev)
    if session.overlap is not o:  # decided meanwhile (it went on, or it ended)
        return
    if p >= session.server.turn_head.cfg.backchannel_threshold:
        o["backchannel"] = True
        session.put_json(type="backchannel", turn=session.turn.number if session.turn else None, p=round(p, 3))
        return
    session.barge_in(time.perf_counter())
    session.turns += 1
    session.turn = Turn(session, session.turns, ev, confirmed=False)
