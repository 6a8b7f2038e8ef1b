"""The bundled eval set: a small held-out set copied from a built corpus (FLAC, its own manifest).

    python -m s2s.corpus --out data/corpus --pairs 2000 --seed 0 --bundle-eval assets/eval --eval-pairs 70
    rows = bundle_eval("data/corpus", "assets/eval", eval_pairs=100)

eval.run scores checkpoints on it by default; the app takes its example prompts from it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import soundfile as sf

from s2s.manifest import read_manifest, write_manifest


def _round_robin(rows: list[dict], n: int, group) -> list[dict]:
    """Up to n rows taken in turn from each group(row) (sorted), in the rows' order within a group."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(group(r), []).append(r)
    picked: list[dict] = []
    while len(picked) < n and any(groups.values()):
        for g in sorted(groups):
            if groups[g] and len(picked) < n:
                picked.append(groups[g].pop(0))
    return picked


def bundle_eval(corpus: str | os.PathLike, dest: str | os.PathLike, eval_pairs: int = 100,
                voices_share: float = 0.4, family_share: float = 0.3) -> list[dict]:
    """Copy a small held-out set from a built corpus into dest/ as FLAC, with its own manifest.

    Takes round(eval_pairs * voices_share) eval_voices pairs round-robin over the held-out
    voices, round(eval_pairs * family_share) eval_family pairs round-robin over the held-out
    family's voices, the rest from eval_phrasings round-robin over intents; copies the pysptk
    CMU ARCTIC recording (16 kHz, real human speech) with its licence for codec checks.
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
    picked += _round_robin(split("eval_phrasings"), eval_pairs - len(picked), lambda r: r["intent"])
    if len(picked) < eval_pairs:
        raise ValueError(f"{corpus} has only {len(picked)} eval pairs, asked for {eval_pairs}: "
                         f"build it with more --eval-voices-pairs / --eval-phrasings-pairs")
    for sub in ("prompts", "answers"):
        shutil.rmtree(dest / sub, ignore_errors=True)
    out_rows = []
    for r in picked:
        row = dict(r)
        for key, sub, stem in (("prompt_audio", "prompts", r["id"]), ("response_audio", "answers", r["intent"])):
            target = dest / sub / f"{stem}.flac"
            if not target.exists():
                x, sr = sf.read(str(corpus / r[key]), dtype="int16")
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(suffix=".flac", dir=target.parent)
                os.close(fd)
                sf.write(tmp, x, sr, subtype="PCM_16", format="FLAC")
                os.replace(tmp, target)
            row[key] = target.relative_to(dest).as_posix()
        out_rows.append(row)
    write_manifest(dest / "manifest.jsonl", out_rows)
    import pysptk.util

    arctic = Path(pysptk.util.example_audio_file())
    shutil.copyfile(arctic, dest / arctic.name)
    note = (f"{arctic.name}: CMU ARCTIC (speaker bdl, utterance a0007), 16 kHz real human speech,\n"
            "copied from the example data of the pysptk package (pysptk/example_audio_data/).\n"
            "Used for codec checks on real speech. Licence (pysptk/example_audio_data/COPYING):\n")
    (dest / f"{arctic.stem}.LICENSE.txt").write_text(note + (arctic.parent / "COPYING").read_text())
    return out_rows
