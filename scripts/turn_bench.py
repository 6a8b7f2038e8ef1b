"""Turn-taking, measured Full-Duplex-Bench style over the conversation route: simulated clients
stream held-out speech in real time and time what the server does.

    python scripts/turn_bench.py                         # starts python -m s2s.serve.converse (bundled head)
    python scripts/turn_bench.py --turn-head none        # the same, silence alone (end_silence_ms)
    python scripts/turn_bench.py --n 10 --json           # fewer trials; one JSON object

Trials (each its own conversation; held-out wordings, voices, backchannels of s2s/data/turns.py,
never trained on, with their own seed):
- pause: a question with a hesitation of 0.4-1.0 s inserted at its quietest point mid-way.
  Take-over: the server decided the end of the turn before the question's last speech.
- plain: the question as said. Turn-taking take-over: a reply came; latency: speech end ->
  first reply audio received; false cut-in: the end decided before the last speech.
- backchannel: the question, then 0.5 s into its reply a backchannel ("mm-hm", "yep"). Take-over:
  the server stopped the reply (barge_in).
- interruption: the question, then 0.5 s into its reply another question. Rate: the server
  stopped the reply within 1.5 s; latency: the interruption's first speech -> barge_in received.
- librivox: the five LibriVox sentences of pocketsphinx-testdata (a human reader, natural
  pauses), if installed. Take-over: the end decided before the sentence's last speech.
Answers: the plain questions' replies through the route are transcribed (Whisper tiny.en) and
matched to the closest answer, beside the same prompts answered as eval.run answers them.
Latency is the client's clock (real time, 20 ms frames, a local socket). Prints a table (or JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from s2s.data.corpus import load_intents  # noqa: E402
from s2s.data.turns import BACKCHANNELS, insert_pause, quietest_point, speak, voice_for  # noqa: E402
from s2s.serve.converse_client import Talker, speech_end, speech_start  # noqa: E402

RATE = 24000
FRAME_S = 0.02
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def first_reply_after(talker: Talker, end: float):
    """(turn number, first audio time) of the first turn decided after `end` that sent audio."""
    for t, m in talker.of("turn"):
        if t >= end and m["turn"] in talker.audio_at:
            return m["turn"], talker.audio_at[m["turn"]]
    return None


async def trial(url: str, kind: str, x: np.ndarray, over: np.ndarray | None = None, intent: str = "") -> dict:
    talker = await Talker.open(url)
    try:
        await talker.say(np.zeros(int(0.3 * RATE), np.float32))
        start = await talker.say(x)
        end = start + speech_end(x, RATE)
        out = {"kind": kind, "take_over": any(t < end - 0.02 for t, _ in talker.of("turn"))}
        got = await talker.until(lambda: first_reply_after(talker, end - 0.02), 6.0)  # (as take_over counts)
        out["replied"] = got is not None
        if got:
            out["latency_s"] = got[1] - end
            by = [m.get("by") for t, m in talker.of("turn") if m["turn"] == got[0]]
            out["by"] = by[0] if by else None
        if intent and got:  # the whole reply, for its answer
            await talker.until(lambda: any(m.get("type") == "reply_end" and m.get("turn") == got[0]
                                           for _, m in talker.events), 15.0)
            out["intent"], out["reply"] = intent, np.frombuffer(bytes(talker.audio[got[0]]), "<i2") / 32768.0
        if over is not None and got:
            await asyncio.sleep(max(0.0, got[1] + 0.5 - time.perf_counter()))
            said = await talker.say(over)
            speech_at = said + speech_start(over, RATE)
            stop = await talker.until(lambda: next((t for t, m in talker.of("barge_in") if m["turn"] == got[0]), None),
                                      1.5)
            out["stopped"] = stop is not None
            if stop is not None:
                out["stop_latency_s"] = stop - speech_at
            out["overlap_take_over"] = out["stopped"]
            if not out["stopped"]:  # was the reply still playing when the listener spoke? (else: not a trial)
                await talker.until(lambda: any(m.get("type") == "reply_end" and m.get("turn") == got[0]
                                               for _, m in talker.events), 10.0)
                played_until = got[1] + len(talker.audio.get(got[0], b"")) / 2 / RATE
                out["reply_too_short"] = played_until < speech_at + 0.2
        return out
    finally:
        await talker.close()


def clips(n: int, seed: int) -> dict[str, list]:
    """The held-out trials: {kind: [(audio, audio over the reply or None, intent or ""), ...]}
    (the plain questions carry their intent: their replies are scored)."""
    rng = random.Random(f"turn_bench:{seed}")
    wordings = [(p, it.name) for it in load_intents() for p in it.held_out]
    picks = rng.sample(wordings, min(len(wordings), 2 * n))
    out = {"pause": [], "plain": [], "backchannel": [], "interruption": []}
    for i, (text, intent) in enumerate(picks[:n]):
        x = speak(voice_for(rng, "eval"), text)
        out["plain"].append((x, None, intent))
        out["pause"].append((insert_pause(x, RATE, round(rng.uniform(0.4, 1.0), 2))[0], None))
        bc = speak(voice_for(rng, "eval"), rng.choice(BACKCHANNELS))
        out["backchannel"].append((x, bc))
        other = picks[n + i][0] if n + i < len(picks) else text
        out["interruption"].append((x, speak(voice_for(rng, "eval"), other)))
    if LIBRIVOX.is_dir():
        from s2s.io.audio import load_audio

        out["librivox"] = [(load_audio(str(f), RATE).numpy(), None) for f in sorted(LIBRIVOX.glob("*.wav"))]
    for kind in out:
        out[kind] = [item if len(item) == 3 else (*item, "") for item in out[kind]]
    return out


def summarise(rows: list[dict]) -> dict:
    def med(key, rs):
        v = [r[key] for r in rs if key in r]
        return round(statistics.median(v), 3) if v else None

    def p90(key, rs):
        v = [r[key] for r in rs if key in r]
        return round(float(np.percentile(v, 90)), 3) if v else None

    out = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind and not r.get("reply_too_short")]
        s = {"n": len(rs), "take_over_rate": round(sum(r["take_over"] for r in rs) / max(1, len(rs)), 3),
             "replied_rate": round(sum(r["replied"] for r in rs) / max(1, len(rs)), 3),
             "latency_median_s": med("latency_s", rs), "latency_p90_s": p90("latency_s", rs),
             "ended_by_head": sum(r.get("by") == "head" for r in rs)}
        if kind in ("backchannel", "interruption"):
            s["stopped_rate"] = round(sum(r.get("stopped", False) for r in rs) / max(1, len(rs)), 3)
            s["stop_latency_median_s"] = med("stop_latency_s", rs)
            fast = sum(r.get("stop_latency_s", 9) <= 0.2 for r in rs)
            s["stopped_within_0.2s_rate"] = round(fast / max(1, len(rs)), 3)
            s["skipped_reply_too_short"] = sum(r.get("reply_too_short", False) for r in rows if r["kind"] == kind)
        out[kind] = s
    return out


async def bench(url: str, sets: dict[str, list]) -> list[dict]:
    rows = []
    for kind, items in sets.items():
        for x, over, intent in items:
            rows.append(await trial(url, kind, x, over, intent))
            shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items() if k != "reply"}
            print(f"{kind}: {json.dumps(shown)}", file=sys.stderr)
    return rows


def answers(rows: list[dict], sets: dict[str, list]) -> dict:
    """Answer accuracy of the plain questions' replies through the route, and of the same prompts
    answered as eval.run answers them (the bundled prototype in this process, eval's sampling):
    each reply transcribed (Whisper) and matched to the closest answer."""
    from eval.asr import load_asr
    from eval.before_after import SAMPLING
    from s2s.asr.wer import closest_answer
    from s2s.serve.pipeline import load_pipeline

    texts = {it.name: it.answer for it in load_intents()}
    asr, pipe = load_asr(cpu_threads=1), load_pipeline(None, "cpu")
    route = [closest_answer(asr.transcribe(r["reply"].astype(np.float32), RATE), texts) == r["intent"]
             for r in rows if "reply" in r]
    direct = []
    for x, _, intent in sets.get("plain", []):
        reply = pipe.respond((x, RATE), prompt_codes=False, **SAMPLING)
        direct.append(closest_answer(asr.transcribe(reply.audio, reply.sample_rate), texts) == intent)
    return {"route": {"n": len(route), "accuracy": round(sum(route) / max(1, len(route)), 3)},
            "eval_run_way": {"n": len(direct), "accuracy": round(sum(direct) / max(1, len(direct)), 3)}}


def main(argv: list[str] | None = None) -> None:
    from converse_load import start_server

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=None, help="ws://.../converse/ws of a running server (default: start one)")
    p.add_argument("--turn-head", default="bundled", help="the started server's --turn-head (bundled, none, DIR)")
    p.add_argument("--n", type=int, default=20, help="trials per kind (default 20)")
    p.add_argument("--kinds", nargs="+", default=None, help="only these kinds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    sets = clips(args.n, args.seed)
    if args.kinds:
        unknown = set(args.kinds) - set(sets)
        if unknown:
            p.error(f"--kinds: {sorted(unknown)} unknown; choose from {sorted(sets)}")
        sets = {k: v for k, v in sets.items() if k in args.kinds}
    proc, url = (None, args.url) if args.url else start_server(["--turn-head", args.turn_head])
    try:
        rows = asyncio.run(bench(url, sets))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    summary = {"turn_head": args.turn_head, "n": args.n, "kinds": summarise(rows)}
    if any("reply" in r for r in rows):
        summary["answers"] = answers(rows, sets)
    if args.json:
        print(json.dumps(summary))
        return
    print(f"turn head: {args.turn_head}")
    for kind, s in summary["kinds"].items():
        print(f"{kind:>12}: " + ", ".join(f"{k} {v}" for k, v in s.items()))
    if "answers" in summary:
        a = summary["answers"]
        print(f"     answers: through the route {a['route']['accuracy']:.1%} (n {a['route']['n']}), the same "
              f"prompts as eval.run answers them {a['eval_run_way']['accuracy']:.1%} (n {a['eval_run_way']['n']})")


if __name__ == "__main__":
    main()
