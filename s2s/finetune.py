"""Fine-tune for your voice: recordings of the known questions in, a checkpoint that understands
you out, with honest before / after figures.

    python -m s2s.finetune --data my_clips/ --base assets/prototype --out ckpts/mine
    python -m s2s.finetune --data mine/manifest.jsonl --base assets/prototype --out ckpts/mine \\
        --steps 60 --holdout 0.3 --json

--data: a folder of clips named by topic (`capital_france.wav`, `capital_france_2.wav`, or files in
a folder `capital_france/`) or a manifest in the corpus format (its `intent` is the topic); every
clip is checked first (s2s/data/recordings.py). A share of them (--holdout) is kept out of the
training and answered, with the bundled eval set, by the base and by the tuned checkpoint
(eval/before_after.py): the table printed shows what was gained and what was lost, with 95%
intervals. --out is written atomically with card.json (base, recordings, steps, time, figures)
and before_after.md beside the weights; the base is never modified. --progress prints one JSON
line per step to stdout (the app's Fine-tune tab reads them); --json ends with the card (and the
table as markdown) on one line.

This command sits above training and eval (it runs both), so it lives at s2s/finetune.py under
its own rank (tests/test_imports.py): the name stays whatever the package layout becomes.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from eval.before_after import before_after
from eval.run import DEFAULT_MANIFEST
from s2s.data.recordings import RecordingError, manifest_rows, read_recordings, split_holdout
from s2s.training.finetune import RECIPE, FinetuneError, check_paths, discard, publish, train_staged

# where each stage's progress sits in the whole run's bar (training is about half the time)
STAGES = {"checking": (0.0, 0.02), "training": (0.02, 0.5), "before": (0.5, 0.6), "after": (0.6, 0.98),
          "writing": (0.98, 1.0)}


def run(data, base, out, *, steps: int = RECIPE["steps"], holdout: float = 0.3, seed: int = 0,
        eval_manifest="default", threads: int | None = 2, report=None, **recipe) -> dict:
    """The whole fine-tune: check, split, train, before/after, publish. report(stage, fraction,
    text) is told as it goes. Returns the card. Bad input raises RecordingError / FinetuneError
    before any training; any failure leaves nothing at `out`."""
    import torch

    from eval.asr import load_asr

    tell = report or (lambda stage, fraction, text: None)
    started = time.time()
    check_paths(base, out)
    tell("checking", 0.0, "checking the clips")
    recordings = read_recordings(data)
    train, held = split_holdout(recordings, holdout, seed)

    def on_step(step, total, loss):
        lo, hi = STAGES["training"]
        tell("training", lo + (hi - lo) * step / total, f"training: step {step} of {total}, loss {loss:.3f}")

    staged, card = train_staged(train, held, base, out, steps=steps, seed=seed, threads=threads, on_step=on_step,
                                 **recipe)
    try:
        asr = load_asr(cpu_threads=1)
        if threads:  # loading the ASR sets the process's OpenMP pool to its 1 thread
            torch.set_num_threads(threads)

        def on_stage(text):
            stage = text.split(":")[0]
            tell(stage, STAGES[stage][0], text)

        manifest = None if eval_manifest is None else (DEFAULT_MANIFEST if eval_manifest == "default" else eval_manifest)
        table = before_after(base, staged, manifest_rows(held, "heldout", "heldout"), asr=asr,
                             eval_manifest=manifest, on_stage=on_stage)
        tell("writing", STAGES["writing"][0], "writing the checkpoint")
        card["before_after"] = {"summary": table["summary"],
                                "comparisons": [c for c in table["comparisons"] if c["metric"] == "answer_accuracy"]}
        card["eval_set"] = None if manifest is None else str(manifest)
        card["seconds"] = round(time.time() - started, 1)
        (staged / "before_after.md").write_text(table["markdown"] + "\n")
        publish(staged, out, card)
    except BaseException:
        discard(out)
        raise
    tell("done", 1.0, f"done in {card['seconds']:.0f} s: {out}")
    card["markdown"] = table["markdown"]
    return card


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m s2s.finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a folder of clips named by topic, or a corpus-format manifest")
    p.add_argument("--base", default="assets/prototype", help="the checkpoint to start from (never modified)")
    p.add_argument("--out", required=True, help="the new checkpoint's folder (must not exist)")
    p.add_argument("--steps", type=int, default=RECIPE["steps"])
    p.add_argument("--lr", type=float, default=RECIPE["lr"])
    p.add_argument("--replay", type=int, default=RECIPE["replay"],
                   help="pairs of the base's own voices mixed in, so it keeps hearing them (0 = none)")
    p.add_argument("--train-only", choices=["all", "prompt"], default=RECIPE["train_only"],
                   help="prompt: only the prompt side learns (s2s/training/flags.py)")
    p.add_argument("--holdout", type=float, default=0.3, help="share of the clips kept out for before/after")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-set", default="default",
                   help="manifest scored before/after besides your held-out clips (default: the bundled "
                        "eval set; 'none' = only your clips)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--progress", action="store_true", help="one JSON line per step on stdout")
    p.add_argument("--json", action="store_true", help="print the card as JSON at the end")
    return p


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the fine-tune, which removes its staging folder


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # the app's Cancel
    shown = {"stage": None, "fraction": -1.0}

    def report(stage, fraction, text):
        if args.progress:
            print(json.dumps({"progress": {"stage": stage, "fraction": round(fraction, 4), "text": text}}), flush=True)
        elif stage != shown["stage"] or fraction >= shown["fraction"] + 0.05:  # a line per stage and per 5%
            shown.update(stage=stage, fraction=fraction)
            print(text, file=sys.stderr, flush=True)

    if not (args.lr > 0 and args.replay >= 0 and 0 <= args.holdout < 1 and args.threads >= 1):
        raise SystemExit(f"error: --lr must be > 0, --replay >= 0, --holdout in [0, 1) and --threads >= 1; "
                         f"got {args.lr}, {args.replay}, {args.holdout}, {args.threads}")
    try:
        card = run(args.data, args.base, args.out, steps=args.steps, holdout=args.holdout, seed=args.seed,
                   eval_manifest=None if args.eval_set == "none" else args.eval_set, threads=args.threads,
                   report=report, lr=args.lr, replay=args.replay, train_only=args.train_only)
    except (RecordingError, FinetuneError) as e:
        raise SystemExit(f"error: {e}") from None
    if args.json:  # the card, and the before / after table as markdown
        print(json.dumps(card, default=str))
    else:
        print(card["markdown"])
        print(f"\nwritten: {args.out} ({card['seconds']:.0f} s; card.json and before_after.md inside)")


if __name__ == "__main__":
    main()
