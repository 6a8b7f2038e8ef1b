"""Build the synthetic spoken-dialogue corpus: spoken questions -> one fixed spoken answer.

    python -m s2s.data.corpus --out data/corpus --pairs 2000 --seed 0          # build (resumable)
    python -m s2s.data.corpus --out data/corpus --pairs 2000 --seed 0 \\
        --bundle-eval assets/eval --eval-pairs 130                         # + the bundled eval set
    python -m s2s.data.corpus --check-voices                                   # do the voices differ?

Questions and answers come from assets/intents.json (see load_intents for the rules). The
assistant answers every intent with one fixed sentence in one voice (Piper en_US joe medium),
synthesised once per intent and shared by all its pairs. The user's side is spoken by many
voices (s2s/data/voices.py): espeak-ng's 8 native English accents x variants x pitch (-p) x rate
(-s), and Piper joe with varied length/noise scales and pitch shifts (sox); a share of prompts
gets light augmentation (noise at 20-30 dB SNR, small reverb, gain). The bundled eval set is
copied out of a built corpus by s2s/data/eval_bundle.py.

Splits (decided by plan_corpus, a pure function of the intents, sizes and seed):
- train: TRAIN_* voice settings, every intent's training phrasings (the out_of_scope intent's
  off-topic questions OOS_WEIGHT times as often as any other intent);
- eval_voices: EVAL_* settings (variants, pitches, rates, pitch shifts never used in train,
  inside the train range), train phrasings;
- eval_phrasings: each in-scope intent's held-out phrasings (never in train), spoken by train voices;
- eval_oos: the out_of_scope intent's held-out questions (topics never asked in train: "Sorry,
  I can't help with that yet." is the right reply), spoken by train voices;
- eval_family: a synthesis engine that never speaks in train (flite: its CMU voices slt, rms,
  awb, kal16, kal, at several speeds and pitch shifts), train phrasings.

Output (under --out): prompts/<id>.wav and answers/<intent>.wav (24 kHz mono 16-bit), then
manifest.jsonl (the format of s2s/io/manifest.py), one pair a line: id, prompt_audio, prompt_text,
response_audio, response_text, intent, voice, accent, split (+ engine, augment, prompt_seconds,
response_seconds); paths relative to the manifest's folder. The same seed gives the same
manifest and the same audio. Every wav is written atomically, so a rerun skips what exists.

espeak-ng (GPL-3.0, a subprocess), flite (BSD-style, a subprocess: apt-get install flite) and
Piper (piper-tts, GPL-3.0, imported inside functions only) are data-building tools, called
through s2s/data/voices.py by this builder: nothing in the pipeline, app or eval imports them.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from s2s.data.eval_bundle import bundle_eval
from s2s.data.voices import (
    ASSISTANT,
    Voice,
    check_voices,
    load_piper,
    sample_voice,
    synth_espeak,
    synth_flite,
    synth_piper,
)
from s2s.io.audio import normalise_loudness, resample, save_audio
from s2s.io.manifest import write_manifest

SAMPLE_RATE = 24000
MIN_PHRASINGS = 10  # training phrasings per intent
HELD_OUT_PHRASINGS = 2  # an entry without "held_out": its last two phrasings are held out
OUT_OF_SCOPE = "out_of_scope"  # the intent for what the assistant cannot answer
OOS_WEIGHT = 3  # the off-topic questions are many and varied: train on them this many times as often
NEAR_COPY = 0.8  # word-set Jaccard at or above which a held-out wording is a near copy of a training one
DEFAULT_INTENTS = Path(__file__).resolve().parents[2] / "assets" / "intents.json"
SPLITS = ("train", "eval_voices", "eval_phrasings", "eval_family", "eval_oos")
PIPER_GROUP = 100  # Piper prompts per seeded ONNX session (see build_corpus)
ANSWER_SEED = 1234  # the assistant's answers do not depend on the corpus seed
VERSION = 3  # bump when synthesis changes: a folder built by another version is refused


class IntentsError(ValueError):
    """A bad intents file: the message names the file, the entry and the problem."""


@dataclass(frozen=True)
class Intent:
    name: str
    answer: str
    phrasings: tuple[str, ...]  # spoken in train (and in eval_voices / eval_family)
    held_out: tuple[str, ...] = ()  # never in train: eval_phrasings (eval_oos for out_of_scope)


@dataclass(frozen=True)
class Item:
    id: str
    split: str
    intent: str
    text: str
    answer: str
    voice: Voice
    augment: dict = field(default_factory=dict)  # {} or noise_snr_db/noise_color/gain_db/rt60/wet
    seed: int = 0  # numpy seed for this item's augmentation
    group: int = -1  # Piper session group, -1 for espeak


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9']+", " ", text.lower()).split())


def _words(text: str) -> frozenset[str]:
    return frozenset(_norm(text).split())


def _near(wa: frozenset[str], wb: frozenset[str]) -> bool:
    return len(wa & wb) >= NEAR_COPY * max(1, len(wa | wb))


def near_copy(a: str, b: str) -> bool:
    """Two wordings share NEAR_COPY or more of their words (Jaccard over word sets, normalised)."""
    return _near(_words(a), _words(b))


def _texts(entry: dict, key: str, where: str) -> list[str]:
    texts = entry[key]
    if not isinstance(texts, list):
        raise IntentsError(f"{where}: '{key}' must be a list of texts, got {type(texts).__name__}")
    for j, p in enumerate(texts):
        if not isinstance(p, str) or not _norm(p):
            raise IntentsError(f"{where}: {key[:-1] if key == 'phrasings' else key} #{j} must be non-empty text, got {p!r}")
    return [p.strip() for p in texts]


def parse_intents(data, source: str = "intents") -> list[Intent]:
    """Validate parsed JSON {"intents": [{name, answer, phrasings[, held_out]}, ...]} -> [Intent].

    "held_out" lists the wordings never spoken in train; an entry without it holds out the last
    HELD_OUT_PHRASINGS of its phrasings. Raises IntentsError naming the entry: missing or empty
    field, fewer than MIN_PHRASINGS training phrasings, a wording repeated (within or across
    intents), a held-out wording that is a near copy of a training one (near_copy), a repeated
    name or answer.
    """
    if not isinstance(data, dict) or not isinstance(data.get("intents"), list) or not data["intents"]:
        raise IntentsError(f"{source}: needs a top-level object with a non-empty 'intents' list")
    intents, seen_phrasing, seen_name, seen_answer = [], {}, set(), {}
    for i, entry in enumerate(data["intents"]):
        where = f"{source}: intent #{i}"
        if not isinstance(entry, dict):
            raise IntentsError(f"{where}: must be an object, got {type(entry).__name__}")
        if isinstance(entry.get("name"), str) and entry["name"].strip():
            where += f" ({entry['name']!r})"
        for key in ("name", "answer", "phrasings"):
            if key not in entry:
                raise IntentsError(f"{where}: missing field '{key}' (needs name, answer, phrasings)")
        for key in ("name", "answer"):
            if not isinstance(entry[key], str) or not _norm(entry[key]):
                raise IntentsError(f"{where}: field '{key}' must be non-empty text, got {entry[key]!r}")
        name, answer = entry["name"].strip(), entry["answer"].strip()
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise IntentsError(f"{where}: name must use letters, digits, '_' or '-' (it names a file)")
        if name in seen_name:
            raise IntentsError(f"{where}: duplicate intent name {name!r}")
        if _norm(answer) in seen_answer:
            raise IntentsError(f"{where}: answer {answer!r} repeats intent {seen_answer[_norm(answer)]!r}")
        phrasings = _texts(entry, "phrasings", where)
        if "held_out" in entry:
            held_out = _texts(entry, "held_out", where)
            if len(phrasings) < MIN_PHRASINGS or not held_out:
                raise IntentsError(f"{where}: needs at least {MIN_PHRASINGS} phrasings and 1 held_out, "
                                   f"got {len(phrasings)} and {len(held_out)}")
        else:
            if len(phrasings) < MIN_PHRASINGS + HELD_OUT_PHRASINGS:
                raise IntentsError(f"{where}: needs a list of at least {MIN_PHRASINGS + HELD_OUT_PHRASINGS} "
                                   f"phrasings, got {len(phrasings)}")
            phrasings, held_out = phrasings[:-HELD_OUT_PHRASINGS], phrasings[-HELD_OUT_PHRASINGS:]
        for p in phrasings + held_out:
            if _norm(p) in seen_phrasing:
                raise IntentsError(
                    f"{where}: phrasing {p!r} duplicates one in intent {seen_phrasing[_norm(p)]!r}")
            seen_phrasing[_norm(p)] = name
        seen_name.add(name)
        seen_answer[_norm(answer)] = name
        intents.append(Intent(name, answer, tuple(phrasings), tuple(held_out)))
    train = [(_words(p), p, it.name) for it in intents for p in it.phrasings]
    for it in intents:
        for h in it.held_out:
            wh = _words(h)
            copy = next(((p, n) for w, p, n in train if _near(w, wh)), None)
            if copy:
                raise IntentsError(f"{source}: held-out wording {h!r} of {it.name!r} is a near copy of the "
                                   f"training phrasing {copy[0]!r} of {copy[1]!r}: reword one of them")
    return intents


def load_intents(path: str | os.PathLike = DEFAULT_INTENTS) -> list[Intent]:
    """Read and validate an intents JSON file (see parse_intents); parsed once per file version."""
    try:
        stamp = Path(path).stat().st_mtime_ns
    except OSError as e:
        raise IntentsError(f"{path}: cannot read intents JSON: {e}") from e
    return list(_load_intents(str(path), stamp))


@functools.lru_cache(maxsize=8)
def _load_intents(path: str, stamp: int) -> tuple[Intent, ...]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise IntentsError(f"{path}: cannot read intents JSON: {e}") from e
    return tuple(parse_intents(data, path))


def _sample_augment(rng: random.Random, share: float) -> dict:
    if rng.random() >= share:
        return {}
    aug = {}
    while not aug:
        if rng.random() < 0.6:
            aug["noise_snr_db"] = round(rng.uniform(20.0, 30.0), 1)
            aug["noise_color"] = rng.choice(["white", "pink"])
        if rng.random() < 0.5:
            aug["rt60"] = round(rng.uniform(0.15, 0.4), 2)
            aug["wet"] = round(rng.uniform(0.15, 0.35), 2)
        if rng.random() < 0.6:
            aug["gain_db"] = round(rng.uniform(-6.0, 3.0), 1)
    return aug


def plan_corpus(intents: list[Intent], pairs: int, seed: int, *, eval_voices_pairs: int | None = None,
                eval_phrasings_pairs: int | None = None, eval_family_pairs: int | None = None,
                eval_oos_pairs: int | None = None, piper_share: float = 0.3,
                augment_share: float = 0.3) -> list[Item]:
    """Decide every item (text, voice, split, augmentation) without synthesising anything.

    Pure: the same arguments give the same list. Intents are cycled in a reshuffled order so
    each split is balanced over intents (out_of_scope OOS_WEIGHT times in train, alone in
    eval_oos, absent from the other eval splits). Default eval sizes: pairs // 10 each (at
    least 1; eval_oos none without an out_of_scope intent).
    """
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    if not 0.0 <= piper_share <= 1.0 or not 0.0 <= augment_share <= 1.0:
        raise ValueError(f"piper_share and augment_share must be in [0, 1], got {piper_share}, {augment_share}")
    n_ev = max(1, pairs // 10) if eval_voices_pairs is None else eval_voices_pairs
    n_ep = max(1, pairs // 10) if eval_phrasings_pairs is None else eval_phrasings_pairs
    n_ef = max(1, pairs // 10) if eval_family_pairs is None else eval_family_pairs
    oos = [i for i in intents if i.name == OUT_OF_SCOPE]
    in_scope = [i for i in intents if i.name != OUT_OF_SCOPE]
    n_eo = (max(1, pairs // 10) if oos else 0) if eval_oos_pairs is None else eval_oos_pairs
    if n_eo and not oos:
        raise ValueError(f"eval_oos_pairs={n_eo} needs an intent named {OUT_OF_SCOPE!r}")
    cycle = {"train": in_scope + oos * OOS_WEIGHT, "eval_oos": oos}
    rng = random.Random(f"s2s-corpus:{seed}")
    items: list[Item] = []
    train_voices: dict[Voice, None] = {}  # ordered set
    visits: dict[tuple[str, str], int] = {}
    for split, n in (("train", pairs), ("eval_voices", n_ev), ("eval_phrasings", n_ep), ("eval_family", n_ef),
                     ("eval_oos", n_eo)):
        order: list[Intent] = []
        for k in range(n):
            if not order:
                order = list(cycle.get(split, in_scope))
                rng.shuffle(order)
            intent = order.pop()
            if split in ("eval_phrasings", "eval_oos"):  # every held-out wording in turn, not by chance
                visits[split, intent.name] = visits.get((split, intent.name), -1) + 1
                text = intent.held_out[visits[split, intent.name] % len(intent.held_out)]
                voice = rng.choice(list(train_voices))
            else:
                text = rng.choice(intent.phrasings)
                voice = sample_voice(rng, split, piper_share)
            if split == "train":
                train_voices[voice] = None
            items.append(Item(f"{split}_{k:05d}", split, intent.name, text, intent.answer, voice,
                              _sample_augment(rng, augment_share), rng.getrandbits(31)))
    n_piper = 0
    for i, it in enumerate(items):
        if it.voice.engine == "piper":
            items[i] = Item(**{**it.__dict__, "group": n_piper // PIPER_GROUP})
            n_piper += 1
    return items


# ----------------------------------------------------------------------------- finishing the audio

def trim_silence(x: np.ndarray, sr: int, pad: float = 0.1, floor_db: float = -45.0) -> np.ndarray:
    """Cut leading/trailing frames quieter than floor_db below the loudest 10 ms frame, keep pad s."""
    hop = max(1, sr // 100)
    n = len(x) // hop
    if n < 2:
        return x
    e = np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1)
    on = np.flatnonzero(e > e.max() * 10 ** (floor_db / 10))
    a = max(0, on[0] * hop - int(pad * sr))
    b = min(len(x), (on[-1] + 1) * hop + int(pad * sr))
    return x[a:b]


def augment(x: np.ndarray, sr: int, aug: dict, seed: int) -> np.ndarray:
    """Reverb (synthetic exponential-decay IR), then noise at an SNR, then gain. [T] -> [T]."""
    rng = np.random.default_rng(seed)
    x = x.astype(np.float64)
    if "rt60" in aug:
        t = np.arange(int(aug["rt60"] * sr)) / sr
        ir = rng.standard_normal(t.size) * np.exp(-6.9 * t / aug["rt60"])  # -60 dB at rt60
        wet = np.convolve(x, ir)[: x.size]
        wet *= np.sqrt(np.mean(x**2) / max(np.mean(wet**2), 1e-12))
        x = (1 - aug["wet"]) * x + aug["wet"] * wet
    if "noise_snr_db" in aug:
        noise = rng.standard_normal(x.size)
        if aug["noise_color"] == "pink":  # 1/f power: scale the spectrum by 1/sqrt(f)
            spec = np.fft.rfft(noise)
            spec[1:] /= np.sqrt(np.arange(1, spec.size))
            noise = np.fft.irfft(spec, n=x.size)
        noise *= np.sqrt(np.mean(x**2) / max(np.mean(noise**2), 1e-12)) * 10 ** (-aug["noise_snr_db"] / 20)
        x = x + noise
    x = x * 10 ** (aug.get("gain_db", 0.0) / 20)
    peak = np.max(np.abs(x)) if x.size else 0.0
    return (x * (0.99 / peak if peak > 0.99 else 1.0)).astype(np.float32)


def _finish(x: np.ndarray, sr: int) -> np.ndarray:
    """Raw TTS output -> trimmed, 24 kHz, loudness-normalised float32 [T]."""
    x = resample(np.asarray(x, dtype=np.float32), sr, SAMPLE_RATE)
    return normalise_loudness(trim_silence(x, SAMPLE_RATE), SAMPLE_RATE)


def _complete(path: Path) -> bool:
    try:
        info = sf.info(str(path))
    except (OSError, RuntimeError, sf.LibsndfileError):
        return False
    return info.frames > 0 and info.samplerate == SAMPLE_RATE and info.channels == 1


# ----------------------------------------------------------------------------- build

def build_corpus(out: str | os.PathLike, pairs: int = 2000, seed: int = 0, *,
                 intents_path: str | os.PathLike = DEFAULT_INTENTS, assistant: Voice = ASSISTANT,
                 progress: bool = True, **plan_options) -> dict:
    """Synthesise the planned corpus under out/ (resumable); returns counts by what was done.

    plan_options go to plan_corpus. A folder built with other settings is refused rather
    than mixed: its corpus.json records them.
    """
    from tqdm import tqdm

    out = Path(out)
    intents = load_intents(intents_path)
    items = plan_corpus(intents, pairs, seed, **plan_options)
    settings = {"version": VERSION, "pairs": pairs, "seed": seed, "assistant": assistant.key,
                **plan_options, "plan_sha256": hashlib.sha256(repr((intents, items)).encode()).hexdigest()}
    meta_path = out / "corpus.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{out} was built with other settings ({', '.join(diff)}): "
                             f"{ {k: old.get(k) for k in diff} }; use a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(meta_path, json.dumps(settings, indent=1) + "\n")

    def answer_path(name):
        return out / "answers" / f"{name}.wav"

    def prompt_path(it):
        return out / "prompts" / f"{it.id}.wav"

    stats = {"synthesised": 0, "skipped": 0}
    bar = tqdm(total=len(intents) + len(items), desc="corpus", unit="wav", disable=not progress)
    # Answers: one file per intent, all from one seeded session (replayed whole if any is missing).
    if all(_complete(answer_path(i.name)) for i in intents):
        stats["skipped"] += len(intents)
        bar.update(len(intents))
    else:
        pv = load_piper(ANSWER_SEED) if assistant.engine == "piper" else None
        for i in intents:
            x, sr = synth_piper(pv, assistant, i.answer) if pv else synth_espeak(assistant, i.answer)
            if not _complete(answer_path(i.name)):
                save_audio(answer_path(i.name), _finish(x, sr), SAMPLE_RATE)
                stats["synthesised"] += 1
            else:
                stats["skipped"] += 1
            bar.update(1)

    def write(it, x, sr):
        save_audio(prompt_path(it), augment(_finish(x, sr), SAMPLE_RATE, it.augment, it.seed), SAMPLE_RATE)
        stats["synthesised"] += 1

    for it in items:
        if it.voice.engine not in ("espeak", "flite"):
            continue
        if _complete(prompt_path(it)):
            stats["skipped"] += 1
        else:
            write(it, *(synth_espeak if it.voice.engine == "espeak" else synth_flite)(it.voice, it.text))
        bar.update(1)
    # Piper prompts: the ONNX noise stream continues across calls in a session, so each group
    # gets its own seeded session and is replayed whole (writing only what is missing).
    groups: dict[int, list[Item]] = {}
    for it in items:
        if it.voice.engine == "piper":
            groups.setdefault(it.group, []).append(it)
    for g, members in sorted(groups.items()):
        missing = [not _complete(prompt_path(it)) for it in members]
        if not any(missing):
            stats["skipped"] += len(members)
            bar.update(len(members))
            continue
        pv = load_piper(int(hashlib.sha256(f"{seed}:{g}".encode()).hexdigest(), 16) % 2**31)
        last = max(k for k, m in enumerate(missing) if m)
        for k, it in enumerate(members):
            if k > last:  # nothing after this needs the stream
                stats["skipped"] += 1
            elif missing[k]:
                write(it, *synth_piper(pv, it.voice, it.text))
            else:
                synth_piper(pv, it.voice, it.text)
                stats["skipped"] += 1
            bar.update(1)
    bar.close()
    write_manifest(out / "manifest.jsonl", [
        manifest_row(it, prompt_path(it), answer_path(it.intent), out) for it in items])
    return stats


def manifest_row(it: Item, prompt: Path, response: Path, root: Path) -> dict:
    return {"id": it.id, "prompt_audio": prompt.relative_to(root).as_posix(), "prompt_text": it.text,
            "response_audio": response.relative_to(root).as_posix(), "response_text": it.answer,
            "intent": it.intent, "voice": it.voice.key, "accent": it.voice.accent, "split": it.split,
            "engine": it.voice.engine, "augment": it.augment,
            "prompt_seconds": round(sf.info(str(prompt)).duration, 3),
            "response_seconds": round(sf.info(str(response)).duration, 3)}


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m s2s.data.corpus", description=__doc__.split("\n")[0])
    p.add_argument("--out", help="corpus folder (e.g. data/corpus)")
    p.add_argument("--pairs", type=int, default=2000, help="training pairs (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--intents", default=str(DEFAULT_INTENTS))
    p.add_argument("--eval-voices-pairs", type=int, default=None, help="default pairs // 10")
    p.add_argument("--eval-phrasings-pairs", type=int, default=None, help="default pairs // 10")
    p.add_argument("--eval-family-pairs", type=int, default=None, help="default pairs // 10")
    p.add_argument("--eval-oos-pairs", type=int, default=None, help="default pairs // 10 (with an out_of_scope intent)")
    p.add_argument("--piper-share", type=float, default=0.3, help="share of prompts spoken by Piper")
    p.add_argument("--augment-share", type=float, default=0.3, help="share of prompts augmented")
    p.add_argument("--assistant", choices=["piper", "espeak"], default="piper",
                   help="answer voice; espeak (en-us) only for quick tests")
    p.add_argument("--bundle-eval", metavar="DIR", help="then copy a held-out eval set to DIR (FLAC)")
    p.add_argument("--eval-pairs", type=int, default=130, help="pairs in the bundled eval set (40 eval_voices, "
                   "30 eval_family, 20 eval_oos, 40 eval_phrasings)")
    p.add_argument("--check-voices", action="store_true", help="check the voices differ, then exit")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.check_voices:
        r = check_voices()
        print(json.dumps(r, indent=1))
        sys.exit(1 if r["duplicates"] else 0)
    if not a.out:
        p.error("--out is required (or --check-voices)")
    try:
        opts = {k: getattr(a, k) for k in ("piper_share", "augment_share", "eval_voices_pairs", "eval_phrasings_pairs",
                                           "eval_family_pairs", "eval_oos_pairs") if getattr(a, k) is not None}
        assistant = ASSISTANT if a.assistant == "piper" else Voice("espeak", "en-us")
        stats = build_corpus(a.out, a.pairs, a.seed, intents_path=a.intents, assistant=assistant,
                             progress=not a.no_progress, **opts)
        print(f"{a.out}: {stats['synthesised']} wavs synthesised, {stats['skipped']} already there")
        if a.bundle_eval:
            rows = bundle_eval(a.out, a.bundle_eval, a.eval_pairs)
            size = sum(f.stat().st_size for f in Path(a.bundle_eval).rglob("*") if f.is_file())
            print(f"{a.bundle_eval}: {len(rows)} pairs, {size / 1e6:.2f} MB")
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
