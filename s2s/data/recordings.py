"""A person's recordings of the known questions, for a fine-tune: read, checked, paired with answers.

    recs = read_recordings("my_clips/")             # a folder of clips named by topic
    recs = read_recordings("mine/manifest.jsonl")   # a manifest in the corpus format (intent = topic)
    recs = read_upload("clips.zip", "topics.csv", "work/")   # the app's upload: a zip + CSV file,topic
    rec = check_clip("q.wav", "capital_france")     # one clip: RecordingError if it cannot be used
    answer_audio("capital_france")                  # the assistant's own answer to that topic

A folder's clip names its topic: `capital_france.wav`, `capital_france_2.flac`, or any file in a
subfolder `capital_france/`. Topics are the intents of assets/intents.json (the answers the
model knows); each one's answer audio is the bundled assets/eval/answers/<topic>.flac, the same
Piper voice the model was trained to speak.

Every clip is checked as it comes: readable, at most MAX_CLIP_SECONDS long, with at least
MIN_SPEECH_SECONDS above the silence floor, and not clipped; a batch is checked for count and
total size. A RecordingError names the clip and what is allowed. Nothing here writes outside
the folder it is given.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import random
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2s.data.corpus import load_intents
from s2s.io.audio import AudioError, load_audio
from s2s.io.manifest import ManifestError, audio_path, read_manifest

ANSWERS = Path(__file__).resolve().parents[2] / "assets" / "eval" / "answers"
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")  # what libsndfile reads
RATE = 16000  # clips are checked at this rate (the speech front-end's)
MIN_SPEECH_SECONDS = 0.4  # speech above the floor: a clip with less is "silent"
MAX_CLIP_SECONDS = 15.0  # a question; a longer clip is refused, not cut
SILENCE_FLOOR_DB = -40.0  # 20 ms windows quieter than this (dBFS RMS) are silence
CLIPPED_SHARE = 0.002  # more than this share of samples at full scale: "clipped"
MAX_CLIPS = 200
MAX_TOTAL_BYTES = 200 * 1024 * 1024  # files on disk (a zip: uncompressed)


class RecordingError(ValueError):
    """A clip or a batch of clips that cannot be used: the message names it and what is allowed."""


@dataclass(frozen=True)
class Recording:
    path: Path
    topic: str
    seconds: float
    speech_seconds: float


def topics() -> dict[str, str]:
    """{topic: its answer text}, in the order of assets/intents.json."""
    return {i.name: i.answer for i in load_intents()}


def example_question(topic: str) -> str:
    """A wording of the topic to show a person ("ask in your own words"): its first phrasing."""
    return next(i.phrasings[0] for i in load_intents() if i.name == check_topic(topic))


def check_topic(name: str) -> str:
    """The topic itself, or RecordingError naming the closest known topics."""
    known = topics()
    if name in known:
        return name
    near = difflib.get_close_matches(str(name), list(known), n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; known topics: {', '.join(known)}"
    raise RecordingError(f"unknown topic {name!r}: the model has no answer for it{hint}")


def answer_audio(topic: str) -> Path:
    path = ANSWERS / f"{check_topic(topic)}.flac"
    if not path.is_file():
        raise RecordingError(f"topic {topic!r} has no answer audio at {path}")
    return path


def speech_seconds(x: np.ndarray, rate: int = RATE) -> float:
    """Seconds of 20 ms windows louder than SILENCE_FLOOR_DB."""
    hop = rate // 50
    n = len(x) // hop
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    return float(np.sum(20 * np.log10(np.maximum(rms, 1e-10)) > SILENCE_FLOOR_DB)) / 50


def check_clip(path: str | os.PathLike, topic: str, name: str | None = None) -> Recording:
    """One clip of a topic, checked: RecordingError says why it cannot be used (re-record it)."""
    topic = check_topic(topic)
    name = name or Path(path).name
    try:  # the cap refuses a long file before decoding it whole; not normalised: clipping shows
        x = load_audio(path, RATE, max_seconds=MAX_CLIP_SECONDS, normalise=False).numpy()
    except AudioError as e:
        text = str(e).replace(str(path), name)
        if "too long" in text:
            raise RecordingError(f"{name}: too long ({text}); a question is at most "
                                 f"{MAX_CLIP_SECONDS:.0f} s: re-record it") from None
        if "too short" in text or "silent" in text:
            raise RecordingError(f"{name}: silent or too short ({text}): re-record it") from None
        raise RecordingError(f"{name}: cannot be read ({text})") from None
    seconds = len(x) / RATE
    speech = speech_seconds(x)
    if speech < MIN_SPEECH_SECONDS:
        raise RecordingError(f"{name}: silent or too short ({speech:.2f} s of speech above "
                             f"{SILENCE_FLOOR_DB:.0f} dBFS in {seconds:.2f} s; at least "
                             f"{MIN_SPEECH_SECONDS} s needed): re-record it")
    clipped = float(np.mean(np.abs(x) >= 0.999))
    if clipped > CLIPPED_SHARE:
        raise RecordingError(f"{name}: clipped ({clipped:.1%} of samples at full scale, at most "
                             f"{CLIPPED_SHARE:.1%}): move back from the microphone or lower its gain, and re-record it")
    return Recording(Path(path), topic, round(seconds, 3), round(speech, 3))


def check_batch(recs: list[Recording]) -> list[Recording]:
    if not recs:
        raise RecordingError("no recordings: record (or upload) at least 2 clips")
    if len(recs) > MAX_CLIPS:
        raise RecordingError(f"{len(recs)} clips: at most {MAX_CLIPS} per fine-tune")
    total = sum(r.path.stat().st_size for r in recs)
    if total > MAX_TOTAL_BYTES:
        raise RecordingError(f"clips total {total / 2**20:.0f} MB: at most {MAX_TOTAL_BYTES // 2**20} MB")
    return recs


def topic_from_name(path: Path, root: Path) -> str:
    """`capital_france_2.wav` or `capital_france/anything.wav` -> "capital_france"."""
    rel = path.relative_to(root)
    if len(rel.parts) > 1:
        return rel.parts[0]
    return re.sub(r"[_-]\d+$", "", path.stem)


def read_folder(folder: str | os.PathLike) -> list[Recording]:
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise RecordingError(f"no audio clips in {str(folder)!r} (looked for {', '.join(AUDIO_SUFFIXES)})")
    if len(files) > MAX_CLIPS:
        raise RecordingError(f"{len(files)} clips in {str(folder)!r}: at most {MAX_CLIPS} per fine-tune")
    return check_batch([check_clip(p, topic_from_name(p, folder), str(p.relative_to(folder))) for p in files])


def read_manifest_recordings(path: str | os.PathLike) -> list[Recording]:
    try:
        rows = read_manifest(path, check_audio=False)
    except ManifestError as e:
        raise RecordingError(str(e)) from None
    if len(rows) > MAX_CLIPS:
        raise RecordingError(f"{len(rows)} rows in {str(path)!r}: at most {MAX_CLIPS} per fine-tune")
    missing = [r["id"] for r in rows if not r.get("intent")]
    if missing:
        raise RecordingError(f"{str(path)!r}: rows without an intent (the topic): {missing[:5]}")
    return check_batch([check_clip(audio_path(path, r["prompt_audio"]), r["intent"], r["id"]) for r in rows])


def read_recordings(data: str | os.PathLike) -> list[Recording]:
    """A manifest (.jsonl) or a folder of clips named by topic."""
    data = Path(data)
    if data.is_dir():
        return read_folder(data)
    if data.is_file() and data.suffix == ".jsonl":
        return read_manifest_recordings(data)
    raise RecordingError(f"--data {str(data)!r}: give a manifest (.jsonl) or a folder of clips named by topic")


def read_topics_csv(text: str) -> dict[str, str]:
    """CSV rows `file,topic` (a header row `file,topic` is allowed) -> {file name in the zip: topic}."""
    out = {}
    for k, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not "".join(row).strip() or (k == 1 and [c.strip().lower() for c in row] == ["file", "topic"]):
            continue
        if len(row) != 2:
            raise RecordingError(f"topics CSV line {k}: expected 2 columns (file,topic), got {len(row)}")
        out[row[0].strip()] = check_topic(row[1].strip())
    if not out:
        raise RecordingError("the topics CSV is empty: one line per clip, file,topic")
    return out


def read_upload(zip_path: str | os.PathLike, csv_path: str | os.PathLike | None, dest: str | os.PathLike) -> list[Recording]:
    """The app's upload: a zip of clips and a CSV of file,topic (without a CSV, the clips' names
    give their topics), unpacked into dest. Entries that climb out of the zip's folder, links,
    too many clips or too many bytes are refused before anything is written."""
    dest = Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise RecordingError(f"{Path(zip_path).name}: not a readable zip ({e})") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        for m in members:
            parts = Path(m.filename.replace("\\", "/")).parts
            if m.filename.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", m.filename):
                raise RecordingError(f"zip entry {m.filename!r} climbs out of the zip's folder: refused")
            if (m.external_attr >> 16) & 0o170000 == 0o120000:
                raise RecordingError(f"zip entry {m.filename!r} is a link: refused")
        clips = [m for m in members if Path(m.filename).suffix.lower() in AUDIO_SUFFIXES]
        if not clips:
            raise RecordingError(f"no audio clips in the zip (looked for {', '.join(AUDIO_SUFFIXES)})")
        if len(clips) > MAX_CLIPS:
            raise RecordingError(f"{len(clips)} clips in the zip: at most {MAX_CLIPS} per fine-tune")
        total = sum(m.file_size for m in clips)
        if total > MAX_TOTAL_BYTES:
            raise RecordingError(f"the zip's clips total {total / 2**20:.0f} MB: at most {MAX_TOTAL_BYTES // 2**20} MB")
        if csv_path is not None:
            names = read_topics_csv(Path(csv_path).read_text(encoding="utf-8-sig", errors="replace"))
            by_name = {m.filename: m for m in clips} | {Path(m.filename).name: m for m in clips}
            unknown = [f for f in names if f not in by_name]
            if unknown:
                raise RecordingError(f"the CSV names clips that are not in the zip: {unknown[:5]}")
            chosen = [(by_name[f], t) for f, t in names.items()]
        else:
            chosen = [(m, check_topic(re.sub(r"[_-]\d+$", "", Path(m.filename).stem))) for m in clips]
        dest.mkdir(parents=True, exist_ok=True)
        recs = []
        for k, (m, topic) in enumerate(chosen):
            target = dest / f"upload_{k:03d}{Path(m.filename).suffix.lower()}"
            with archive.open(m) as src, open(target, "wb") as out:
                out.write(src.read(MAX_TOTAL_BYTES + 1))
            recs.append(check_clip(target, topic, m.filename))
    return check_batch(recs)


def split_holdout(recs: list[Recording], share: float, seed: int = 0) -> tuple[list[Recording], list[Recording]]:
    """(train, held out): round(share * n) clips held out (at least 1 when share > 0 and n >= 2),
    drawn by seed; at least one clip is always left to train on."""
    if not 0.0 <= share < 1.0:
        raise RecordingError(f"--holdout must be in [0, 1), got {share}")
    if len(recs) < 2:
        raise RecordingError(f"{len(recs)} recording(s): at least 2 are needed")
    n = min(len(recs) - 1, max(1 if share > 0 else 0, round(share * len(recs))))
    order = list(range(len(recs)))
    random.Random(seed).shuffle(order)
    held = set(order[:n])
    return [r for k, r in enumerate(recs) if k not in held], [r for k, r in enumerate(recs) if k in held]


def manifest_rows(recs: list[Recording], split: str, prefix: str) -> list[dict]:
    """Corpus-format rows (absolute paths) pairing each clip with its topic's answer."""
    answers = topics()
    return [{"id": f"{prefix}_{k:03d}", "prompt_audio": str(r.path.resolve()), "prompt_text": "",
             "response_audio": str(answer_audio(r.topic)), "response_text": answers[r.topic],
             "intent": r.topic, "voice": "you", "accent": "you", "split": split}
            for k, r in enumerate(recs)]
