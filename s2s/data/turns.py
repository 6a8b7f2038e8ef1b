"""Examples for the turn head (s2s/models/turn_head.py): the turn so far at each pause, labelled
finished or not, and short speech over a reply, labelled backchannel or not.

    python -m s2s.data.turns --out data/turns --seed 0             # examples.npz + examples.jsonl

Each clip is spoken (espeak-ng; held-out voices: espeak's eval settings and flite), streamed in
20 ms frames through the conversation's own turn detector (s2s/serve/vad.py, pause events on), and
every "pause" it gives becomes an example: the turn audio the server would hear there, through
the Whisper tiny.en front-end. A pause is "finished" when no speech follows it in the clip.

Clips per question wording (s2s/data/corpus.py's intents; the last two wordings of every intent
are held out, as in the corpus):
- plain: the question (its own commas and breaths make natural unfinished pauses);
- words: the question cut at a word, maybe with a filler ("um", "so", "and"), a pause of
  0.3-1.2 s, then the rest (the first part spoken on its own, so its voice may fall as if done);
- cut: the question's audio with a pause of 0.3-1.2 s inserted at its quietest point mid-way
  (the hesitation scripts/turn_bench.py asks with);
- preamble: "I have a question." (or another opener), a pause, then the question.
Backchannels ("mm-hm", "yeah", a laugh) are positive "backchannel" examples; short real speech
over a reply ("wait", "stop", the start of a question) negative. Held-out splits use other
voices, wordings, fillers, openers and interruptions; backchannels, a small closed class, are
held out by voice (and four words, NEW_BACKCHANNELS, are said only in the held-out split).

Output (under --out): examples.npz (features float16 [sum S, 384], offsets, finished and
backchannel labels, -1 = not labelled) and examples.jsonl (one line per example: split, kind,
text, voice, seconds). A rerun with the same arguments rebuilds it; the files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from s2s.data.corpus import load_intents, trim_silence
from s2s.data.voices import Voice, sample_voice, synth_espeak, synth_flite
from s2s.io.audio import normalise_loudness, resample

RATE = 24000
FRAME_S = 0.02
FILLERS = {"train": ("um", "uh", "so", "and", "like", "well"), "eval": ("hmm", "er", "you know", "but")}
PREAMBLES = {"train": ("I have a question.", "Okay, so.", "Hey there.", "Quick question.", "Let me ask you something.",
                       "Right, um."),
             "eval": ("Hello.", "So I was wondering.", "Can I ask you something?", "Alright.")}
# backchannels are a small closed class: both splits say all of them (held out by voice); the
# held-out split also says NEW_BACKCHANNELS, never trained on, to see how far the head carries
BACKCHANNELS = ("mm-hm", "uh-huh", "yeah", "okay", "right", "yes", "I see", "sure", "ha ha", "oh", "got it", "mm",
                "yep", "mhm", "right right", "oh okay", "ha ha ha", "uh huh", "yeah yeah", "wow", "oh wow",
                "exactly", "alright", "of course")
NEW_BACKCHANNELS = ("cool", "true", "nice", "okay okay")  # never trained on
INTERRUPTIONS = {"train": ("wait", "stop", "no no", "hold on", "sorry, what?", "excuse me", "hang on", "actually",
                           "no, I meant", "listen", "that's wrong", "what?"),
                 "eval": ("stop please", "wait a second", "no, that's not it", "hey", "pardon?", "one moment",
                          "not that", "sorry")}
BACKCHANNEL_MAX_S = 1.0  # a pause after more speech than this is not asked "backchannel?"


def voice_for(rng: random.Random, split: str) -> Voice:
    """train: espeak's train settings; eval: espeak's eval settings or flite (an engine never trained
    on), half and half. (Piper for a third of train voices was tried: held-out finished questions
    found at the chosen threshold fell from ~62% to ~34%; README "Turn-taking".)"""
    if split == "train":
        return sample_voice(rng, "train", 0.0)
    return sample_voice(rng, "eval_voices" if rng.random() < 0.5 else "eval_family", 0.0)


def speak(voice: Voice, text: str) -> np.ndarray:
    """text in voice -> float32 [T] at RATE, silence trimmed to 0.1 s each side, loudness-normalised."""
    x, sr = (synth_flite if voice.engine == "flite" else synth_espeak)(voice, text)
    x = resample(np.asarray(x, np.float32), sr, RATE)
    return normalise_loudness(trim_silence(x, RATE), RATE).astype(np.float32)


def quietest_point(x: np.ndarray, rate: int, lo: float = 0.3, hi: float = 0.7) -> int:
    """The sample index of the quietest 10 ms block between fractions lo and hi of x's length
    (where a hesitation is inserted: between words, if the speech has a gap there)."""
    block = rate // 100
    n = len(x) // block
    e = np.sqrt(np.mean(x[: n * block].reshape(n, block) ** 2, axis=1))
    a, b = int(n * lo), max(int(n * lo) + 1, int(n * hi))
    return (a + int(np.argmin(e[a:b]))) * block + block // 2


def insert_pause(x: np.ndarray, rate: int, seconds: float) -> tuple[np.ndarray, int]:
    """x with `seconds` of silence inserted at its quietest point mid-way -> (audio, where)."""
    at = quietest_point(x, rate)
    return np.concatenate([x[:at], np.zeros(int(seconds * rate), np.float32), x[at:]]), at


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    noise = rng.standard_normal(x.size).astype(np.float32)
    noise *= np.sqrt(np.mean(x ** 2) / max(np.mean(noise ** 2), 1e-12)) * 10 ** (-snr_db / 20)
    return np.clip(x + noise, -1, 1).astype(np.float32)


def plan_clips(split: str, seed: int, per_wording: int = 2, per_short: int = 40) -> list[dict]:
    """The clips of a split: {"kind", "parts": [text or pause seconds, ...], "voice", "text"} (a
    pure function of its arguments; "cut" clips carry one text and the pause to insert)."""
    rng = random.Random(f"turns:{split}:{seed}")
    intents = load_intents()
    wordings = [p for it in intents for p in (it.phrasings if split == "train" else it.held_out)]
    clips = []
    for text in wordings:
        kinds = ["plain"] + rng.sample(["words", "cut", "preamble"], k=per_wording - 1)
        for kind in kinds:
            pause = round(rng.uniform(0.3, 1.2), 2)
            words = text.split()
            if kind == "words" and len(words) < 2:  # ("Goodbye.": no word to stop at)
                kind = "cut"
            if kind == "plain":
                parts = [text]
            elif kind == "words":
                k = rng.randint(1, max(1, len(words) - 1))
                first = " ".join(words[:k]).rstrip(",.?!")
                if rng.random() < 0.5:
                    first += ", " + rng.choice(FILLERS[split])
                parts = [first, pause, " ".join(words[k:])]
            elif kind == "cut":
                parts = [text, pause]  # the pause goes inside the text's audio
            else:
                parts = [rng.choice(PREAMBLES[split]), round(rng.uniform(0.4, 1.0), 2), text]
            clips.append({"kind": kind, "parts": parts, "voice": voice_for(rng, split), "text": text})
    shorts = (("backchannel", BACKCHANNELS + (NEW_BACKCHANNELS if split == "eval" else ())),
              ("interruption", INTERRUPTIONS[split]))
    for kind, texts in shorts:
        for k in range(per_short * len(texts)):
            clips.append({"kind": kind, "parts": [texts[k % len(texts)]], "voice": voice_for(rng, split),
                          "text": texts[k % len(texts)]})
    return clips


def render(clip: dict) -> np.ndarray:
    """A planned clip -> its audio, float32 [T] at RATE."""
    if clip["kind"] == "cut":
        return insert_pause(speak(clip["voice"], clip["parts"][0]), RATE, clip["parts"][1])[0]
    out = [np.zeros(int(p * RATE), np.float32) if isinstance(p, float) else speak(clip["voice"], p)
           for p in clip["parts"]]
    return np.concatenate(out)


def pauses(x: np.ndarray, rate: int, detector) -> list:
    """Stream x (with 0.3 s of silence before and 1.2 s after) through a fresh turn detector in
    20 ms frames -> its "start" and "pause" events, with ev.at in seconds of x."""
    lead = 0.3
    stream = np.concatenate([np.zeros(int(lead * rate), np.float32), x, np.zeros(int(1.2 * rate), np.float32)])
    frame = int(FRAME_S * rate)
    events = []
    for i in range(0, len(stream), frame):
        for ev in detector.push(stream[i:i + frame], rate):
            if ev.kind in ("pause", "start"):
                ev.at -= lead
                events.append(ev)
    return events


def build_turns(out: str | os.PathLike, seed: int = 0, *, per_wording: int = 2, per_short: int = 40,
                limit: int | None = None, progress: bool = True) -> dict:
    """Build examples.npz + examples.jsonl under `out` (both splits). Returns counts."""
    from s2s.models.frontend import load_frontend
    from s2s.serve.converse_limits import Limits
    from s2s.serve.converse_client import speech_end
    from s2s.serve.vad import TurnDetector

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frontend = load_frontend("whisper_tiny_en")
    feats, finished, backchannel, meta = [], [], [], []
    started = time.perf_counter()
    for split in ("train", "eval"):
        clips = plan_clips(split, seed, per_wording, per_short)[:limit]
        noise = np.random.default_rng(seed + (split == "eval"))
        for n, clip in enumerate(clips):
            x = render(clip)
            if noise.random() < 0.4:
                x = add_noise(x, noise, float(noise.uniform(15, 35)))
            end = speech_end(x, RATE)
            det = TurnDetector(min_speech_ms=Limits.min_speech_ms, end_silence_ms=2000.0, pause_events=True,
                               pause_ms=Limits.pause_ms)
            for ev in pauses(x, RATE, det):
                audio = normalise_loudness(resample(ev.audio, ev.sample_rate, RATE), RATE)
                try:
                    f = frontend.features(audio, RATE)
                except ValueError:  # too short or silent for the front-end: the server would not ask
                    continue
                done = end <= ev.at + 0.15
                speech_s = len(ev.audio) / ev.sample_rate - 0.3  # the pre-roll and trailing silence
                if ev.kind == "start":  # the onset (one per clip: its pauses are shorter than the end silence)
                    labels = (-1, int(clip["kind"] == "backchannel"))
                elif clip["kind"] == "backchannel":
                    labels = (-1, 1)
                elif clip["kind"] == "interruption":
                    labels = (-1, 0)
                else:
                    labels = (int(done), 0 if speech_s <= BACKCHANNEL_MAX_S else -1)
                feats.append(f.numpy().astype(np.float16))
                finished.append(labels[0])
                backchannel.append(labels[1])
                meta.append({"split": split, "kind": clip["kind"], "event": ev.kind, "text": clip["text"],
                             "voice": clip["voice"].key,
                             "at": round(ev.at, 3), "seconds": round(len(ev.audio) / ev.sample_rate, 3),
                             "finished": labels[0], "backchannel": labels[1]})
            if progress and (n + 1) % 100 == 0:
                print(f"{split}: {n + 1}/{len(clips)} clips, {len(meta)} examples, "
                      f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    offsets = np.cumsum([0] + [len(f) for f in feats])
    tmp = out / "examples.tmp.npz"
    np.savez(tmp, features=np.concatenate(feats), offsets=offsets, finished=np.array(finished, np.int8),
             backchannel=np.array(backchannel, np.int8), sha256=frontend.describe()["params"]["sha256"])
    tmp.replace(out / "examples.npz")
    tmp = out / "examples.jsonl.tmp"
    tmp.write_text("".join(json.dumps(m) + "\n" for m in meta))
    tmp.replace(out / "examples.jsonl")
    counts = {}
    for m in meta:
        key = f"{m['split']}:{m['kind']}"
        counts[key] = counts.get(key, 0) + 1
    return {"examples": len(meta), "by_split_kind": counts, "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m s2s.data.turns", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-wording", type=int, default=2, help="clips per question wording (1-4; default 2)")
    p.add_argument("--per-short", type=int, default=40, help="clips per backchannel / interruption text")
    p.add_argument("--limit", type=int, default=None, help="at most this many clips per split (a quick build)")
    args = p.parse_args(argv)
    if not 1 <= args.per_wording <= 4:
        p.error(f"--per-wording must be 1-4, got {args.per_wording}")
    if args.per_short < 0 or (args.limit is not None and args.limit < 1):
        p.error("--per-short must be >= 0 and --limit >= 1")
    print(json.dumps(build_turns(args.out, args.seed, per_wording=args.per_wording, per_short=args.per_short,
                                 limit=args.limit)))


if __name__ == "__main__":
    main()
