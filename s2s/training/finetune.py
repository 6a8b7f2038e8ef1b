"""Fine-tune a checkpoint on a person's recordings: the training half of `python -m s2s.finetune`.

    train, held = split_holdout(recordings, 0.3)                 # s2s/data/recordings.py
    staged, card = train_staged(train, held, base="assets/prototype", out="ckpts/mine")
    ... answer the held-out clips with base and staged (eval/before_after.py), add to card ...
    publish(staged, "ckpts/mine", card)                          # atomically in place

The clips the person recorded are paired with their topics' answers (the assistant's own answer
audio) and the base's weights are trained on them with RECIPE: short, at a low learning rate, the
prompt augmentation of the prototype's own training, so that a few minutes on 2 CPU cores teach
the model a voice without unlearning the others (the figures that chose it: README, "Fine-tune
for your voice").

Nothing is half-written: the run trains and exports in a hidden sibling of `out`
(.NAME.partial), which publish() renames into place with its card (card.json) beside the
weights, and discard() removes. `out` must not exist yet and must not be the base: the live
checkpoint is never modified.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from s2s.data.recordings import Recording, manifest_rows
from s2s.io.manifest import write_manifest
from s2s.models.checkpoint import read_config
from s2s.training.flags import parse_args
from s2s.training.train import Trainer, export

RECIPE = {"steps": 60, "lr": 1e-4, "warmup": 10, "batch_frames": 4000, "dropout": 0.1, "stretch": 0.1,
          "mask_spans": 2, "train_only": "all", "replay": 120}
CARD = "card.json"
MAX_STEPS = 2000


class FinetuneError(ValueError):
    """A fine-tune that cannot start (its base, its output folder, its settings), by name."""


def staging_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def check_paths(base: str | Path, out: str | Path) -> tuple[Path, Path]:
    base, out = Path(base).resolve(), Path(out).resolve()
    if not (base / "config.json").is_file():
        raise FinetuneError(f"base {str(base)!r} is not a checkpoint (no config.json)")
    if out == base or base in out.parents or out in base.parents:
        raise FinetuneError(f"--out {str(out)!r} overlaps the base {str(base)!r}: the base is never modified")
    if out.exists():
        raise FinetuneError(f"--out {str(out)!r} already exists: choose a new folder")
    return base, out


def train_staged(train: list[Recording], held: list[Recording], base: str | Path, out: str | Path, *,
                 steps: int = RECIPE["steps"], lr: float = RECIPE["lr"], seed: int = 0,
                 threads: int | None = None, on_step=None, train_only: str = RECIPE["train_only"],
                 replay: int = RECIPE["replay"]) -> tuple[Path, dict]:
    """Train the base on `train` in .OUT.partial; returns (the staged fp16 checkpoint, its card so
    far). on_step(step, steps, loss) is called after every step. On any error the staging folder
    is removed and the error raised."""
    base, out = check_paths(base, out)
    if not 1 <= steps <= MAX_STEPS:
        raise FinetuneError(f"--steps must be in [1, {MAX_STEPS}], got {steps}")
    if not train:
        raise FinetuneError("nothing to train on: every recording was held out")
    stage = staging_dir(out)
    shutil.rmtree(stage, ignore_errors=True)  # a run that was killed left it
    (stage / "data").mkdir(parents=True)
    started = time.time()
    try:
        manifest = stage / "data" / "manifest.jsonl"
        write_manifest(manifest, manifest_rows(train, "train", "train") + replay_rows(replay)
                       + manifest_rows(held, "heldout", "heldout"))
        argv = ["--data", str(manifest), "--out", str(stage / "train"), "--init", str(base),
                "--steps", str(steps), "--lr", str(lr), "--warmup", str(min(RECIPE["warmup"], max(1, steps // 4))),
                "--batch-frames", str(RECIPE["batch_frames"]), "--dropout", str(RECIPE["dropout"]),
                "--stretch", str(RECIPE["stretch"]), "--mask-spans", str(RECIPE["mask_spans"]),
                "--seed", str(seed), "--eval-every", "0", "--check-every", "0", "--save-every", "0",
                "--log-every", "10", "--rank-steps", "0", "--workers", "1", "--train-only", train_only]
        if threads:
            argv += ["--threads", str(threads)]
        trainer = Trainer(parse_args(argv))
        trainer.on_step = on_step
        result = trainer.run()
        staged = export(stage / "train", stage / "model")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    card = {
        "base": str(base), "base_training_steps": read_config(base).get("training", {}).get("steps"),
        "recordings": len(train) + len(held), "trained_on": len(train), "held_out": len(held),
        "topics": sorted({r.topic for r in train}), "steps": steps, "lr": lr, "seed": seed,
        "recipe": {**RECIPE, "steps": steps, "lr": lr, "train_only": train_only, "replay": replay},
        "final_loss": result.get("loss"),
        "train_seconds": round(time.time() - started, 1),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return staged, card


def replay_rows(n: int, seed: int = 0) -> list[dict]:
    """n training pairs of the base's own kind (espeak voices of the corpus's train split, its
    wordings), built once into $S2S_CACHE/finetune_replay: mixed into a fine-tune so that the
    model keeps hearing the voices it knew. Rows with absolute paths, split "train"."""
    if n <= 0:
        return []
    from s2s.data.corpus import build_corpus
    from s2s.io.manifest import audio_path, read_manifest
    from s2s.io.packages import cache_dir

    folder = cache_dir() / "finetune_replay" / f"n{n}-seed{seed}"
    if not (folder / "manifest.jsonl").is_file():
        build_corpus(folder, pairs=n, seed=seed, eval_voices_pairs=0, eval_phrasings_pairs=0, eval_family_pairs=0,
                     piper_share=0.0, progress=False)
    rows = [r for r in read_manifest(folder / "manifest.jsonl") if r["split"] == "train"]
    for r in rows:
        r["id"] = f"replay_{r['id']}"
        r["prompt_audio"] = str(audio_path(folder / "manifest.jsonl", r["prompt_audio"]).resolve())
        r["response_audio"] = str(audio_path(folder / "manifest.jsonl", r["response_audio"]).resolve())
    return rows


def publish(staged: str | Path, out: str | Path, card: dict) -> Path:
    """Write the card beside the staged weights and rename the checkpoint to `out` (atomic on
    one file system); the staging folder is then removed."""
    staged, out = Path(staged), Path(out)
    if out.exists():
        raise FinetuneError(f"--out {str(out)!r} appeared while the fine-tune ran: the result stays in {str(staged)!r}")
    tmp = staged / f"{CARD}.tmp"
    tmp.write_text(json.dumps(card, indent=1, default=str) + "\n")
    tmp.replace(staged / CARD)
    staged.replace(out)
    shutil.rmtree(staging_dir(out), ignore_errors=True)
    return out


def discard(out: str | Path) -> None:
    shutil.rmtree(staging_dir(out), ignore_errors=True)


def read_card(checkpoint: str | Path) -> dict | None:
    path = Path(checkpoint) / CARD
    return json.loads(path.read_text()) if path.is_file() else None
