"""The training command line (`python -m s2s.training.train`): its flags, and every numeric flag's
allowed values, checked before anything is loaded (a bad value stops with the flag, the value
and what is allowed; 0 means "off" / "never" where a flag says so)."""

from __future__ import annotations

import argparse
import math

from s2s.models.model import MODEL_FRONTENDS, PRESETS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m s2s.training.train",
                                description="Train (or fine-tune) the speech-to-speech model on a corpus manifest.")
    p.add_argument("--data", required=True, help="corpus manifest.jsonl")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--preset", default="10m", choices=list(PRESETS))
    p.add_argument("--codec", default="world_vq", help="codec name (s2s.available_codecs())")
    p.add_argument("--codec-option", nargs="*", default=[], metavar="KEY=VALUE",
                   help="codec options, e.g. tables=PATH (world_vq) or bandwidth=6.0 (encodec_24khz)")
    p.add_argument("--frontend", default="whisper_tiny_en", choices=list(MODEL_FRONTENDS),
                   help="what the model hears of the prompt (s2s/models/frontend.py); --init/--resume keep theirs")
    p.add_argument("--init", default=None, help="fine-tune: start from this checkpoint's weights")
    p.add_argument("--resume", action="store_true", help="continue --out from its saved step")
    p.add_argument("--filter", nargs="*", default=[], help="KEY=VALUE manifest filters, e.g. accent=en-gb")
    p.add_argument("--steps", type=int, default=4000, help="total steps (sets the lr schedule)")
    p.add_argument("--stop-after", type=int, default=None, help="end this run after N steps (resume later)")
    p.add_argument("--batch-frames", type=int, default=8000, help="batch size x longest (prompt + reply) frames")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--onset-weight", type=float, default=1.0,
                   help="loss weight of the reply's first --onset-steps steps, where it must show it heard the prompt")
    p.add_argument("--onset-steps", type=int, default=48)
    p.add_argument("--crop-frames", type=int, default=0,
                   help="until --crop-until, train on the replies' first N frames only (where the answer is "
                        "chosen: listening is learnt several times faster); 0 = off")
    p.add_argument("--crop-until", type=int, default=0, help="the step where full replies take over")
    p.add_argument("--stretch", type=float, default=0.0, help="prompt augmentation: random time stretch +-this share")
    p.add_argument("--mask-spans", type=int, default=0, help="prompt augmentation: spans of random codes per prompt")
    p.add_argument("--reply-noise", type=float, default=0.0,
                   help="teacher-forcing noise: each pair has a share drawn from [0, this) of its reply's "
                        "input codes replaced by random codes")
    p.add_argument("--train-only", choices=["all", "prompt"], default="all",
                   help="prompt: train only the prompt side (front-end projection and encoder), the reply "
                        "side frozen (a fine-tune that should change what the model hears, not what it says)")
    p.add_argument("--rank-steps", type=int, default=48,
                   help="answer ranking at every validation: steps of each answer scored (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=250, help="validation loss and answer ranking (0 = never)")
    p.add_argument("--check-every", type=int, default=1000, help="spoken check (0 = off)")
    p.add_argument("--check-data", default=None, help="manifest for the spoken check (default: --data)")
    p.add_argument("--check-n", type=int, default=8)
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (0 = only at the end)")
    p.add_argument("--export", default=None, help="also write an fp16 copy without optimiser state here")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=2, help="processes for tokenising")
    p.add_argument("--teacher", choices=["none", "minilm"], default="none",
                   help="align the pooled prompt memory with all-MiniLM-L6-v2 embeddings of the prompt's text "
                        "(training only; s2s/training/teacher.py)")
    p.add_argument("--teacher-weight", type=float, default=1.0, help="weight of the teacher loss")
    p.add_argument("--teacher-tau", type=float, default=0.05, help="temperature of its in-batch contrastive term")
    args = p.parse_args(argv)
    for flag, (lo, hi, lo_open, meaning) in NUMERIC_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (hi is None or value <= hi)
        if not ok:
            allowed = f"{'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
            p.error(f"{flag} must be a finite number {allowed}{meaning}, got {value!r}")
    return args


# numeric flag: (lowest, highest or None, lowest excluded, what 0 means); argparse checks the types
NUMERIC_FLAGS = {
    "--steps": (1, None, False, ""), "--stop-after": (1, None, False, ""), "--batch-frames": (1, None, False, ""),
    "--lr": (0, None, True, ""), "--min-lr-ratio": (0, 1, False, ""), "--warmup": (0, None, False, ""),
    "--weight-decay": (0, None, False, ""), "--clip": (0, None, True, ""), "--dropout": (0, 0.9, False, ""),
    "--onset-weight": (0, None, False, ""), "--onset-steps": (0, None, False, ""),
    "--crop-frames": (0, None, False, " (0 = full replies)"), "--crop-until": (0, None, False, ""),
    "--stretch": (0, 0.9, False, ""), "--mask-spans": (0, None, False, ""), "--reply-noise": (0, 1, False, ""),
    "--rank-steps": (0, None, False, " (0 = off)"), "--seed": (0, 2**63 - 1, False, ""),
    "--log-every": (1, None, False, ""), "--eval-every": (0, None, False, " (0 = never)"),
    "--check-every": (0, None, False, " (0 = off)"), "--check-n": (1, None, False, ""),
    "--save-every": (0, None, False, " (0 = only at the end)"), "--threads": (1, None, False, ""),
    "--workers": (1, None, False, ""), "--teacher-weight": (0, None, False, ""), "--teacher-tau": (0, None, True, ""),
}


def codec_options(pairs: list[str]) -> dict:
    """["bandwidth=6.0", "tables=x.npz", "download=true"] -> {"bandwidth": 6.0, "tables": "x.npz",
    "download": True}: numbers become floats, true/false booleans, the rest stays text."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"codec option {pair!r} must look like KEY=VALUE, e.g. bandwidth=6.0")
        if value.lower() in ("true", "false"):
            options[key] = value.lower() == "true"
            continue
        try:
            options[key] = float(value)
        except ValueError:
            options[key] = value
    return options
