"""The Fine-tune flow, timed and scored: does it teach the model a voice it never heard?

    python scripts/finetune_bench.py [--clips 20] [--test 60] [--steps 60] [--out /tmp/ftbench] [--json]

The corpus's held-out voice family (flite's CMU voices, never spoken in the prototype's training)
stands in for a person: --clips questions of it, one per topic, are the recordings (a share held
out, as in the app); --test more prompts of the same family (other topics' turns, other voice
settings, none of them recorded) measure what the fine-tune taught. The whole flow (check, train,
before/after on the held-out clips and the bundled eval set, publish) runs as the app runs it
(s2s/finetune.py run) and is timed; then base and tuned answer the family test prompts. Prints
answer accuracy before / after, with 95% intervals and paired differences, per group.
Synthesis needs flite and sox (apt-get install flite sox) and Piper (requirements.txt).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval.before_after import answer_checkpoint, markdown  # noqa: E402
from eval.compare import add_intervals, paired_rows  # noqa: E402
from s2s.data.corpus import build_corpus  # noqa: E402
from s2s.data.recordings import topics  # noqa: E402
from s2s.io.manifest import audio_path, read_manifest  # noqa: E402


def family_prompts(folder: Path, n: int, seed: int) -> list[dict]:
    build_corpus(folder, pairs=1, seed=seed, eval_voices_pairs=0, eval_phrasings_pairs=0, eval_family_pairs=n,
                 augment_share=0.0, progress=False)
    rows = [r for r in read_manifest(folder / "manifest.jsonl") if r["split"] == "eval_family"]
    for r in rows:
        for key in ("prompt_audio", "response_audio"):
            r[key] = str(audio_path(folder / "manifest.jsonl", r[key]).resolve())
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--test", type=int, default=60)
    p.add_argument("--steps", type=int, default=None, help="default: the recipe's (s2s/training/finetune.py)")
    p.add_argument("--base", default="assets/prototype")
    p.add_argument("--out", default="/tmp/ftbench")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from s2s.finetune import run

    out = Path(args.out)
    shutil.rmtree(out / "tuned", ignore_errors=True)
    rows = family_prompts(out / "family", args.clips + args.test, args.seed)
    person, test = rows[: args.clips], rows[args.clips:]
    clips = out / "clips"
    shutil.rmtree(clips, ignore_errors=True)
    clips.mkdir(parents=True)
    for k, r in enumerate(person):
        shutil.copyfile(r["prompt_audio"], clips / f"{r['intent']}_{k}.wav")
    started = time.perf_counter()
    recipe = {} if args.steps is None else {"steps": args.steps}
    card = run(clips, args.base, out / "tuned", report=lambda stage, fraction, text: print(text, file=sys.stderr)
               if stage != "training" else None, **recipe)
    flow_s = time.perf_counter() - started
    utterances = []
    for name, path in (("before", args.base), ("after", out / "tuned")):
        rows = answer_checkpoint(path, name, test, topics(), workers=2)
        utterances += [{**r, "split": "family_test"} for r in rows]
    groups = [{"checkpoint": c, "group_by": "split", "group": "family_test",
               "n": sum(r["checkpoint"] == c for r in utterances)} for c in ("before", "after")]
    add_intervals([], groups, utterances)
    comparisons = [c for c in paired_rows(utterances, ["before", "after"]) if c["metric"] == "answer_accuracy"]
    flow_groups = card["before_after"]["summary"]
    result = {"machine_threads": torch.get_num_threads(), "clips": args.clips, "test_prompts": len(test),
              "flow_seconds": round(flow_s, 1), "train_seconds": card["train_seconds"], "steps": card["steps"],
              "recipe": card["recipe"],
              "accuracy": {f"{g['checkpoint']}_{g['group']}": round(g.get("answer_accuracy", float("nan")), 4)
                           for g in flow_groups + groups}}
    if args.json:
        print(json.dumps(result))
    else:
        print(card["markdown"])
        print("\nThe family's other prompts (never recorded):\n")
        print(markdown(groups, comparisons).split("\n\n")[0])
        print(f"\nthe whole flow: {flow_s:.0f} s (training {card['train_seconds']:.0f} s, {card['steps']} steps)")


if __name__ == "__main__":
    main()
