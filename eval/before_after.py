"""Before / after a fine-tune: the base and the tuned checkpoint answer the same prompts, scored
as eval.run scores them (reply -> Whisper transcript -> answer accuracy and WER), with 95%
intervals and paired differences (eval/compare.py).

    rows = answer(pipe, "base", eval_rows, asr)          # utterance rows, like eval.run's
    table = before_after("assets/prototype", "ckpts/mine", held_rows, asr=asr)
    print(table["markdown"])

Two groups of prompts: the person's held-out recordings (split "heldout": what was gained) and
the bundled eval set (its splits: what was lost, if anything). Only the answer is scored (no MCD /
F0 / speaker similarity: a fine-tune on questions does not change the voice it answers in), and
the eval set is answered by 2 single-thread processes, so that the whole before/after fits in
about two minutes on 2 CPU cores. The base's rows on the
bundled set are cached (keyed by the base's weights, the manifest, the ASR and the sampling) in
$S2S_CACHE/before_after: a person fine-tuning the same base twice waits for it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from eval.compare import add_intervals, comparison_markdown, paired_rows
from eval.run import DEFAULT_MANIFEST, load_clips, read_eval_set
from eval.scoring import REFERENCE_RATE, REPLY_MARGIN_S, REPLY_RATIO, _transcribe, score_transcript, utterance_row

SAMPLING = {"seed": 0, "temperature": 0.7, "top_k": 50, "top_p": 1.0}  # eval.run's defaults
COLUMNS = ("answer_accuracy", "wer")


def answer(pipe, name: str, rows: list[dict], asr, answers: dict[str, str], progress: bool = False) -> list[dict]:
    """Reply to every row (absolute audio paths) and score the transcript against `answers`
    ({intent: text}, the answers a reply may be matched to): utterance rows."""
    from tqdm import tqdm

    prompts, references = load_clips(rows)
    limit_s = pipe.model.cfg.max_reply_frames / pipe.codec.frame_rate
    out, pending = [], []
    with ThreadPoolExecutor(1, thread_name_prefix="asr") as listener:
        for row in tqdm(rows, desc=name, unit="utt", disable=not progress, file=sys.stderr):
            ref = references[row["response_audio"]]
            r = utterance_row(name, row, ref)
            out.append(r)
            cap = min(REPLY_RATIO * len(ref) / REFERENCE_RATE + REPLY_MARGIN_S, limit_s)
            try:
                reply = pipe.respond((prompts[row["id"]], REFERENCE_RATE), max_seconds=cap, prompt_codes=False,
                                     **SAMPLING)
            except ValueError as e:
                r["error"] = f"generation: {e}"
                continue
            audio = reply.audio
            if reply.sample_rate != REFERENCE_RATE and len(audio):
                from s2s.io.audio import resample

                audio = resample(audio, reply.sample_rate, REFERENCE_RATE)
            r["reply_seconds"] = reply.seconds
            pending.append((r, row, listener.submit(_transcribe, asr, audio)))
        for r, row, heard in pending:
            transcript, error = heard.result()
            if error:
                r["error"] = error
            score_transcript(r, row, transcript, answers)
    return out


def weights_digest(checkpoint: str | Path) -> str:
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with open(Path(checkpoint) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _cache_file(base: str | Path, manifest: Path, asr_name: str, mode: str) -> Path:
    """mode: how the replies were made (in this process, or in 1-thread worker processes): the
    thread count changes the arithmetic enough to change sampled replies, so the base is scored
    the way the tuned model will be."""
    from s2s.io.packages import cache_dir

    key = json.dumps([weights_digest(base), hashlib.sha256(manifest.read_bytes()).hexdigest(), asr_name,
                      SAMPLING, COLUMNS, mode])
    return cache_dir() / "before_after" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def answer_checkpoint(checkpoint: str | Path, name: str, rows: list[dict], answers: dict[str, str], *, asr=None,
                      workers: int = 2, progress: bool = False) -> list[dict]:
    """answer() with the checkpoint's replies; with workers >= 2 and enough rows, in that many
    processes of one thread each (a 10M model's decode steps are too small to use 2 threads well:
    2 processes answer ~1.6x faster on 2 cores). The rows come back in their order."""
    from s2s.serve.pipeline import load_pipeline

    if not rows:
        return []
    if _mode(rows, workers) == "in-process":
        if asr is None:
            from eval.asr import load_asr

            asr = load_asr(cpu_threads=1)
        return answer(load_pipeline(checkpoint, device="cpu"), name, rows, asr, answers, progress)
    parts = [rows[k::workers] for k in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(_answer_part, [str(checkpoint)] * workers, [name] * workers, parts, [answers] * workers))
    by_id = {r["id"]: r for part in done for r in part}
    return [by_id[r["id"]] for r in rows]


def _mode(rows: list[dict], workers: int) -> str:
    return "in-process" if workers < 2 or len(rows) < 4 * workers else f"{workers} one-thread processes"


def _answer_part(checkpoint: str, name: str, rows: list[dict], answers: dict[str, str]) -> list[dict]:
    import torch

    from eval.asr import load_asr
    from s2s.serve.pipeline import load_pipeline

    asr = load_asr(cpu_threads=1)
    torch.set_num_threads(1)
    return answer(load_pipeline(checkpoint, device="cpu"), name, rows, asr, answers)


def base_rows(base: str | Path, rows: list[dict], manifest: Path, answers: dict[str, str], *, asr=None,
              asr_name: str, workers: int = 2, progress: bool = False) -> list[dict]:
    """The base's rows on the eval set, from the cache when it has them."""
    path = _cache_file(base, manifest, asr_name, _mode(rows, workers))
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # a damaged cache is recomputed
    out = answer_checkpoint(base, "before", rows, answers, asr=asr, workers=workers, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(out, default=str))
    tmp.replace(path)
    return out


def before_after(base: str | Path, tuned: str | Path, held: list[dict], *, asr=None,
                 eval_manifest: str | Path | None = DEFAULT_MANIFEST, progress: bool = False,
                 on_stage=None, workers: int = 2) -> dict:
    """held: manifest rows (absolute paths, split "heldout") of the person's held-out clips.
    eval_manifest None: the held-out clips only. workers: processes answering the eval set
    (answer_checkpoint). Returns {"summary": rows per checkpoint x group, "comparisons": paired
    rows (after - before), "markdown": the table, "utterances"}."""
    from s2s.data.recordings import topics

    if asr is None:
        from eval.asr import load_asr

        asr = load_asr(cpu_threads=1)
    stage = on_stage or (lambda name: None)
    eval_rows = read_eval_set(eval_manifest) if eval_manifest is not None else []
    # as eval.run: a bundled reply is matched among the eval set's answers; a held-out clip's
    # among every answer the model knows
    eval_answers = {r["intent"]: r["response_text"] for r in eval_rows}
    asr_name = getattr(asr, "name", type(asr).__name__)
    utterances = []
    for name, path in (("before", base), ("after", tuned)):
        stage(f"{name}: answering")
        rows = answer_checkpoint(path, name, held, topics(), asr=asr, workers=1, progress=progress)
        if eval_rows:
            bundled = (base_rows(base, eval_rows, Path(eval_manifest), eval_answers, asr=asr, asr_name=asr_name,
                                 workers=workers, progress=progress) if name == "before"
                       else answer_checkpoint(path, name, eval_rows, eval_answers, asr=asr, workers=workers,
                                              progress=progress))
            rows += [{**r, "checkpoint": name} for r in bundled]
        utterances += rows
    groups = []
    for name in ("before", "after"):
        for split in dict.fromkeys(r["split"] for r in utterances):
            groups.append({"checkpoint": name, "group_by": "split", "group": split,
                           "n": sum(r["checkpoint"] == name and r["split"] == split for r in utterances)})
    add_intervals([], groups, utterances)
    comparisons = [c for c in paired_rows(utterances, ["before", "after"]) if c["metric"] in COLUMNS]
    return {"summary": groups, "comparisons": comparisons, "utterances": utterances,
            "markdown": markdown(groups, comparisons)}


def _pct(v) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}%"


def markdown(groups: list[dict], comparisons: list[dict]) -> str:
    """One line per group: n, accuracy before and after with intervals, the paired difference."""
    lines = ["| prompts | n | answer accuracy before | after | after - before (95% CI) | reply WER before | after |",
             "|---|---|---|---|---|---|---|"]
    by = {(g["checkpoint"], g["group"]): g for g in groups}
    diff = {c["group"]: c for c in comparisons if c["metric"] == "answer_accuracy" and c["group_by"] == "split"}
    for split in dict.fromkeys(g["group"] for g in groups):
        b, a = by.get(("before", split), {}), by.get(("after", split), {})
        d = diff.get(split)
        change = "-" if d is None else f"{100 * d['diff']:+.1f} " + (
            f"({100 * d['diff_lo']:+.1f} .. {100 * d['diff_hi']:+.1f})" if d["diff_lo"] == d["diff_lo"]
            else "(too few for an interval)")
        label = ("your held-out clips" if split == "heldout"
                 else f"bundled {split}" if split.startswith("eval_") else split)
        lines.append(f"| {label} | {b.get('n', 0)} | {_interval(b, 'answer_accuracy')} | "
                     f"{_interval(a, 'answer_accuracy')} | {change} | {_pct(b.get('wer'))} | {_pct(a.get('wer'))} |")
    return "\n".join(lines) + "\n\n" + comparison_markdown([c for c in comparisons if c["group_by"] == "all"])


def _interval(g: dict, key: str) -> str:
    v, lo, hi = g.get(key), g.get(f"{key}_lo"), g.get(f"{key}_hi")
    if v is None or v != v:
        return "-"
    return f"{100 * v:.1f}% [{100 * lo:.0f}, {100 * hi:.0f}]" if lo == lo else f"{100 * v:.1f}%"
