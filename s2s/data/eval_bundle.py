"""The bundled eval set: a small held-out set copied from a built corpus (FLAC, its own manifest).

    python -m s2s.data.corpus --out data/corpus --pairs 3000 --seed 0 --bundle-eval assets/eval --eval-pairs 130
    rows = bundle_eval("data/corpus", "assets/eval", eval_pairs=130)

eval.run scores checkpoints on it by default; the app takes its example prompts from it
(`example_prompts`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import soundfile as sf

from s2s.io.manifest import ManifestError, audio_path, read_manifest, write_manifest

log = logging.getLogger(__name__)


def _round_robin(rows: list[dict], n: int, group, rotate: bool = False) -> list[dict]:
    """Up to n rows taken in turn from each group(row) (sorted), in the rows' order within a group;
    rotate: the j-th group starts at its row j (mod its size), so that groups whose rows cycle
    through alternatives (an intent's held-out wordings) do not all give their first."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(group(r), []).append(r)
    if rotate:
        for j, g in enumerate(sorted(groups)):
            k = j % len(groups[g])
            groups[g] = groups[g][k:] + groups[g][:k]
    picked: list[dict] = []
    while len(picked) < n and any(groups.values()):
        for g in sorted(groups):
            if groups[g] and len(picked) < n:
                picked.append(groups[g].pop(0))
    return picked


def bundle_eval(corpus: str | os.PathLike, dest: str | os.PathLike, eval_pairs: int = 130,
                voices_share: float = 4 / 13, family_share: float = 3 / 13, oos_share: float = 2 / 13) -> list[dict]:
    """Copy a small held-out set from a built corpus into dest/ as FLAC, with its own manifest.

    Takes round(eval_pairs * voices_share) eval_voices pairs round-robin over the held-out
    voices, round(eval_pairs * family_share) eval_family pairs round-robin over the held-out
    family's voices, round(eval_pairs * oos_share) eval_oos pairs (if the corpus has that split;
    in their order), the rest from eval_phrasings round-robin over intents, each intent's
    held-out wordings in turn (130: 40 / 30 / 20 / 40); copies every intent's answer (a
    fine-tune pairs a person's clips with them) and the pysptk CMU ARCTIC recording (16 kHz,
    real human speech) with its licence for codec checks.
    """
    corpus, dest = Path(corpus), Path(dest)
    rows = read_manifest(corpus / "manifest.jsonl")

    def voice_family(r):  # espeak:<base>+<variant>:.. / piper:joe:st..:.. / flite:<voice>:..
        parts = r["voice"].split(":")
        return parts[1].partition("+")[2] if parts[0] == "espeak" else parts[1] if parts[0] == "flite" else parts[2]

    def split(name):
        return [r for r in rows if r["split"] == name]

    picked = _round_robin(split("eval_voices"), round(eval_pairs * voices_share), voice_family)
    picked += _round_robin(split("eval_family"), round(eval_pairs * family_share), voice_family)
    picked += split("eval_oos")[: round(eval_pairs * oos_share)]
    picked += _round_robin(split("eval_phrasings"), eval_pairs - len(picked), lambda r: r["intent"], rotate=True)
    if len(picked) < eval_pairs:
        raise ValueError(f"{corpus} has only {len(picked)} eval pairs, asked for {eval_pairs}: "
                         f"build it with more --eval-voices-pairs / --eval-phrasings-pairs")
    for sub in ("prompts", "answers"):
        shutil.rmtree(dest / sub, ignore_errors=True)
    out_rows = []

    def copy(source: str, target: Path) -> str:
        if not target.exists():
            x, sr = sf.read(str(corpus / source), dtype="int16")
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".flac", dir=target.parent)
            os.close(fd)
            sf.write(tmp, x, sr, subtype="PCM_16", format="FLAC")
            os.replace(tmp, target)
        return target.relative_to(dest).as_posix()

    for r in picked:
        out_rows.append({**r, "prompt_audio": copy(r["prompt_audio"], dest / "prompts" / f"{r['id']}.flac"),
                         "response_audio": copy(r["response_audio"], dest / "answers" / f"{r['intent']}.flac")})
    for r in rows:  # every intent's answer, picked or not: a fine-tune pairs a person's clips with them
        copy(r["response_audio"], dest / "answers" / f"{r['intent']}.flac")
    write_manifest(dest / "manifest.jsonl", out_rows)
    import pysptk.util

    arctic = Path(pysptk.util.example_audio_file())
    shutil.copyfile(arctic, dest / arctic.name)
    note = (f"{arctic.name}: CMU ARCTIC (speaker bdl, utterance a0007), 16 kHz real human speech,\n"
            "copied from the example data of the pysptk package (pysptk/example_audio_data/).\n"
            "Used for codec checks on real speech. Licence (pysptk/example_audio_data/COPYING):\n")
    (dest / f"{arctic.stem}.LICENSE.txt").write_text(note + (arctic.parent / "COPYING").read_text())
    return out_rows


def example_prompts(eval_dir: str | Path, n: int = 4) -> list[tuple[Path, str]]:
    """A few (prompt clip, label) pairs from the bundled eval set: one per intent from its
    manifest.jsonl (labelled with the prompt's text), else *prompt* audio files; [] when the
    folder is missing or its manifest is bad. Clips outside the folder are skipped."""
    eval_dir = Path(eval_dir).resolve()
    manifest = eval_dir / "manifest.jsonl"
    picked: list[tuple[Path, str]] = []
    if manifest.is_file():
        try:
            rows = read_manifest(manifest, check_audio=False)
        except ManifestError as e:
            log.warning("no example prompts: %s", e)
            return []
        seen = set()
        for r in rows:
            path = audio_path(manifest, r["prompt_audio"]).resolve()
            if r["intent"] not in seen and path.is_file() and path.is_relative_to(eval_dir):
                seen.add(r["intent"])
                picked.append((path, str(r["prompt_text"] or path.stem)))
            if len(picked) >= n:
                break
    elif eval_dir.is_dir():
        audio = sorted(p for p in eval_dir.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))
        named = [p for p in audio if "prompt" in str(p.relative_to(eval_dir)).lower()] or audio
        picked = [(p, p.stem.replace("_", " ")) for p in named[:n]]
    return picked
