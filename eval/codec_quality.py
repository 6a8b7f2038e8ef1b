"""WORLD-VQ resynthesis quality: `python -m eval.codec_quality`.

    python -m eval.codec_quality [--data assets/eval/manifest.jsonl] [--splits eval_voices] [--tables T] [--verbose]

Each clip of the chosen splits (and the CMU ARCTIC recording, real 16 kHz speech) goes through
the codec; the table gives the corpus WER of the original and of the resynthesis (the offline
Whisper), the mean MCD and the mean log-F0 RMSE of the resynthesis against the original
(eval.metrics).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from eval.asr import load_asr
from eval.metrics import log_f0_rmse, mcd, wer
from s2s.codecs.world import SAMPLE_RATE
from s2s.codecs.world_vq import ROOT, WorldVQCodec
from s2s.codecs.world_vq_tools import arctic_path
from s2s.io.audio import load_audio
from s2s.io.manifest import audio_path, read_manifest

ARCTIC_TEXT = "And you always want to see it in the superlative degree."


def _eval_rows(manifest: Path, splits: list[str]) -> list[tuple[Path, str]]:
    rows = [(audio_path(manifest, r["prompt_audio"]), r["prompt_text"])
            for r in read_manifest(manifest, check_audio=False) if r["split"] in splits]
    if not rows:
        raise ValueError(f"{manifest} has no rows with split in {splits}")
    return rows


def score(codec: WorldVQCodec, items: list[tuple[Path, str]], asr, metrics_sr: int | None = 24000) -> dict:
    """Resynthesise each (audio, text): corpus WER of original and resynthesis, mean MCD and log-F0 RMSE."""
    import pysptk.util  # already imported (its warnings silenced) by s2s.codecs.world

    hyp0, hyp1, refs, mcds, f0s = [], [], [], [], []
    for path, text in items:
        x = load_audio(path, SAMPLE_RATE).numpy()
        y = codec.decode(codec.encode(x, SAMPLE_RATE)).numpy()[: len(x)]
        hyp0.append(asr.transcribe(x, SAMPLE_RATE))
        hyp1.append(asr.transcribe(y, SAMPLE_RATE))
        refs.append(text)
        opts = {}
        if metrics_sr not in (None, SAMPLE_RATE):  # band-limited reference: score its own band only
            opts = {"sample_rate": metrics_sr, "alpha": pysptk.util.mcepalpha(metrics_sr)}
        mcds.append(float(mcd(x, y, SAMPLE_RATE, **opts)))
        f0s.append(float(log_f0_rmse(x, y, SAMPLE_RATE, **opts)))
    return {"n": len(items), "wer_orig": float(wer(hyp0, refs)) * 100, "wer_resynth": float(wer(hyp1, refs)) * 100,
            "mcd": float(np.mean(mcds)), "log_f0_rmse": float(np.nanmean(f0s)), "hyps": list(zip(refs, hyp0, hyp1))}


def cmd_quality(args) -> None:
    """The `quality` command: a Markdown table, one row per set (args: data, splits, tables, verbose)."""
    codec = WorldVQCodec(args.tables)
    asr = load_asr()
    splits = args.splits.split(",")
    sets = [(f"{args.data} [{args.splits}]", _eval_rows(Path(args.data), splits), 24000),
            ("CMU ARCTIC a0007 (real, 16 kHz; MCD at 16 kHz)", [(arctic_path(), ARCTIC_TEXT)], 16000)]
    print(f"WORLD-VQ {codec.params}, ASR {getattr(asr, 'name', type(asr).__name__)}")
    print("| set | clips | WER orig % | WER resynth % | delta | MCD dB | log-F0 RMSE |")
    print("|---|---|---|---|---|---|---|")
    for name, items, msr in sets:
        r = score(codec, items, asr, metrics_sr=msr)
        print(f"| {name} | {r['n']} | {r['wer_orig']:.1f} | {r['wer_resynth']:.1f} | "
              f"{r['wer_resynth'] - r['wer_orig']:+.1f} | {r['mcd']:.2f} | {r['log_f0_rmse']:.3f} |", flush=True)
        if args.verbose:
            for ref, h0, h1 in r["hyps"]:
                print(f"    {ref!r}: orig {h0!r} / resynth {h1!r}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m eval.codec_quality", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT / "assets" / "eval" / "manifest.jsonl"))
    p.add_argument("--splits", default="eval_voices", help="comma-separated manifest splits (held-out voices)")
    p.add_argument("--tables", default=None, help="WORLD-VQ tables (.npz); default: the shipped ones")
    p.add_argument("--verbose", action="store_true", help="print every transcript")
    cmd_quality(p.parse_args(argv))


if __name__ == "__main__":
    main()
