"""Evaluation rows -> CSV files, a Markdown report and plots, written atomically.

    from eval.report import write_report
    write_report("reports/run1", utterances=rows, latency=latency_rows, meta=settings)

Files in the report folder:
    utterances.csv   one row per utterance x checkpoint (transcript, WER, MCD, log-F0, timings)
    summary.csv      one row per checkpoint: status, quality aggregates with 95% intervals (X_lo, X_hi), latency
    groups.csv       the same per checkpoint x accent group and x split
    comparisons.csv  paired differences B - A of every two checkpoints, with intervals (eval/compare.py)
    votes.csv        blind A/B win rates and Bradley-Terry ranking, when a votes database is given
    latency.csv      one row per model preset and per checkpoint (eval/latency.py)
    run.json         the settings: ASR, metric parameters, sampling, device, threads, ...
    report.md        the tables above and the plots
    plots/           latency_vs_parameters.png, latency_stages.png, metric_distributions.png

The folder appears complete or not at all: everything is written to a temporary sibling
(.NAME.tmp-XXXX) that is renamed into place at the end (an existing report is swapped out).
Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from eval.compare import COMPARISON_COLUMNS, add_intervals, comparison_markdown, empty_groups, paired_rows
from s2s.models.checkpoint import replace_dir

UTTERANCE_COLUMNS = (
    "checkpoint", "id", "intent", "voice", "accent", "split", "prompt_seconds", "reference_seconds",
    "max_reply_seconds", "reply_seconds", "reply_frames", "response_text", "transcript", "wer",
    "word_errors", "ref_words", "answer_pred", "answer_correct", "mcd", "mcd_frames", "log_f0_rmse",
    "log_f0_rmse_cents", "vuv_error", "f0_frames", "speaker_sim", "encode_ms", "prefill_ms",
    "first_frame_ms", "time_to_first_audio_ms", "generate_ms", "decode_ms", "total_ms", "realtime_factor", "error",
    "metric_error",
)
QUALITY_COLUMNS = ("n", "n_failed", "wer", "mean_utterance_wer", "answer_accuracy", "mcd_mean", "mcd_median",
                   "log_f0_rmse_mean", "log_f0_rmse_cents_mean", "vuv_error_mean", "speaker_sim_mean",
                   "reply_seconds_mean")
SUMMARY_COLUMNS = (
    ("checkpoint", "path", "status", "preset", "parameters", "codec") + QUALITY_COLUMNS
    + ("eval_time_to_first_audio_ms", "eval_realtime_factor", "encode_ms", "prefill_ms",
       "decode_ms_per_frame", "decode_ms_p90", "time_to_first_audio_ms", "speech_end_to_audio_ms",
       "realtime_factor", "peak_memory_mb", "device", "threads", "asr")
)
GROUP_COLUMNS = ("checkpoint", "group_by", "group") + QUALITY_COLUMNS + ("note",)
GROUP_KEYS = ("accent", "split")


# ----------------------------------------------------------------------------- aggregation


def _floats(rows: list[dict], key: str) -> np.ndarray:
    values = [r.get(key) for r in rows]
    return np.array([v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                     and math.isfinite(v)], dtype=float)


def _mean(rows, key) -> float:
    v = _floats(rows, key)
    return float(v.mean()) if v.size else math.nan


def _median(rows, key) -> float:
    v = _floats(rows, key)
    return float(np.median(v)) if v.size else math.nan


def aggregate(rows: list[dict]) -> dict:
    """Quality of a set of utterance rows (QUALITY_COLUMNS); NaN where nothing was measured.

    wer is the corpus WER (sum of word errors / sum of reference words); answer_accuracy the
    share of utterances whose transcript is closest to their own intended answer.
    """
    scored = [r for r in rows if not r.get("error")]  # metric_error only blanks that metric
    errors, words = _floats(scored, "word_errors"), _floats(scored, "ref_words")
    correct = [bool(r["answer_correct"]) for r in scored if r.get("answer_correct") in (True, False)]
    return {
        "n": len(rows),
        "n_failed": len(rows) - len(scored),
        "wer": float(errors.sum() / words.sum()) if words.sum() > 0 else math.nan,
        "mean_utterance_wer": _mean(scored, "wer"),
        "answer_accuracy": float(np.mean(correct)) if correct else math.nan,
        "mcd_mean": _mean(scored, "mcd"),
        "mcd_median": _median(scored, "mcd"),
        "log_f0_rmse_mean": _mean(scored, "log_f0_rmse"),
        "log_f0_rmse_cents_mean": _mean(scored, "log_f0_rmse_cents"),
        "vuv_error_mean": _mean(scored, "vuv_error"),
        "speaker_sim_mean": _mean(scored, "speaker_sim"),
        "reply_seconds_mean": _mean(scored, "reply_seconds"),
    }


def group_rows(utterances: list[dict], keys: tuple[str, ...] = GROUP_KEYS) -> list[dict]:
    """Quality per checkpoint x value of each key (accent group, split)."""
    out = []
    checkpoints = list(dict.fromkeys(r["checkpoint"] for r in utterances))
    for key in keys:
        for ck in checkpoints:
            mine = [r for r in utterances if r["checkpoint"] == ck]
            for value in sorted({str(r.get(key, "")) for r in mine}):
                group = [r for r in mine if str(r.get(key, "")) == value]
                out.append({"checkpoint": ck, "group_by": key, "group": value, **aggregate(group)})
    return out


# ----------------------------------------------------------------------------- files


@contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `out` to fill; on success it replaces `out`, on any
    exception (KeyboardInterrupt included) it is removed and `out` is left as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_csv(path: str | Path, rows: list[dict], columns: tuple[str, ...]) -> Path:
    """Rows as CSV with exactly `columns` (missing values empty, NaN empty)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in columns])
    return Path(path)


def _fmt(value, spec: str) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if spec == "M":
        return f"{value / 1e6:.1f}M"
    if spec == "%":
        return f"{100 * value:.1f}%"
    if spec:
        return format(value, spec)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _cell_md(r: dict, key: str, spec: str) -> str:
    """The value, and its interval when the row has KEY_lo / KEY_hi: "77.0% [68.0, 85.0]"."""
    text = _fmt(r.get(key), spec)
    lo, hi = r.get(f"{key}_lo"), r.get(f"{key}_hi")
    if text == "-" or not isinstance(lo, float) or math.isnan(lo) or not isinstance(hi, float):
        return text
    if spec == "%":
        return f"{text} [{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{text} [{_fmt(lo, spec)}, {_fmt(hi, spec)}]"


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec: "" = str, "M" = millions, "%" = percent, else format());
    a cell whose row also has KEY_lo and KEY_hi shows that interval after the value."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell_md(r, k, s) for k, _, s in columns) + " |")
    return "\n".join(lines)


def _with_metrics(table: list[tuple[str, str, str]], rows: list[dict]) -> list[tuple[str, str, str]]:
    """The table's columns plus every metric with an interval that it lacks (a new metric shows up)."""
    have = {k for k, _, _ in table}
    extra = [k[:-3] for r in rows for k in r if k.endswith("_lo") and k[:-3] in r]
    return list(table) + [(k, k.removesuffix("_mean"), ".4g") for k in dict.fromkeys(extra) if k not in have]


QUALITY_TABLE = [("n", "n", ""), ("wer", "WER", "%"), ("answer_accuracy", "answer acc.", "%"),
                 ("mcd_mean", "MCD dB", ".2f"), ("log_f0_rmse_mean", "log-F0 RMSE", ".3f"),
                 ("vuv_error_mean", "V/UV err", "%"), ("speaker_sim_mean", "speaker sim", ".3f"),
                 ("reply_seconds_mean", "reply s", ".2f")]
SUMMARY_TABLE = ([("checkpoint", "checkpoint", ""), ("status", "status", ""), ("preset", "preset", ""),
                  ("parameters", "params", "M")] + QUALITY_TABLE
                 + [("time_to_first_audio_ms", "TTFA ms", ".0f"), ("realtime_factor", "RTF", ".2f")])
LATENCY_TABLE = [("name", "model", ""), ("status", "status", ""), ("parameters", "params", "M"),
                 ("codec", "codec", ""), ("threads", "threads", ""), ("encode_ms", "encode ms", ".1f"),
                 ("prefill_ms", "prefill ms", ".1f"), ("decode_ms_per_frame", "decode ms/frame", ".2f"),
                 ("decode_ms_p90", "p90", ".2f"), ("time_to_first_audio_ms", "TTFA ms", ".0f"),
                 ("speech_end_to_audio_ms", "speech end to audio ms", ".0f"),
                 ("realtime_factor", "RTF", ".2f"), ("peak_memory_mb", "peak MB", ".0f"),
                 ("memory_scope", "memory", "")]


def format_summary(summary: list[dict]) -> str:
    """The summary as a plain-text table for the terminal."""
    cols = [("checkpoint", "checkpoint", "", 18), ("status", "status", "", 8), ("parameters", "params", "M", 7),
            ("n", "n", "", 4), ("wer", "WER", "%", 7), ("answer_accuracy", "ans.acc", "%", 7),
            ("mcd_mean", "MCD", ".2f", 6), ("log_f0_rmse_mean", "logF0", ".3f", 6),
            ("speaker_sim_mean", "spk", ".3f", 5),
            ("time_to_first_audio_ms", "TTFA ms", ".0f", 7), ("realtime_factor", "RTF", ".2f", 5)]
    lines = [" ".join(f"{h:>{w}}" for _, h, _, w in cols)]
    notes = []
    for r in summary:
        cells = []
        for k, _, spec, w in cols:
            text = _fmt(r.get(k), spec)
            if k == "status" and text != "ok":
                notes.append(f"  {r['checkpoint']}: {text}")
                text = "FAILED"
            cells.append(f"{text[-w:]:>{w}}")
        lines.append(" ".join(cells))
    return "\n".join(lines + notes)


# ----------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _label(row: dict) -> str:
    return Path(row["name"]).name if row.get("kind") == "checkpoint" else str(row["name"])


def plot_latency_vs_parameters(latency: list[dict], path: Path) -> Path:
    """Decode ms per frame, TTFA and peak memory against parameter count (log x)."""
    plt = _pyplot()
    ok = [r for r in latency if r["status"] == "ok"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    memory = "peak memory (MB)"
    if any(r.get("memory_scope") == "in-process" for r in ok):
        memory += "\nin-process rows: the whole process's peak"
    for ax, key, title in zip(axes, ("decode_ms_per_frame", "time_to_first_audio_ms", "peak_memory_mb"),
                              ("decode ms per frame (median)", "time to first audio (ms)", memory)):
        for kind, marker, line in (("preset", "o", "-"), ("checkpoint", "s", "none")):
            rows = sorted((r for r in ok if r["kind"] == kind), key=lambda r: r["parameters"])
            if rows:
                ax.plot([r["parameters"] / 1e6 for r in rows], [r[key] for r in rows], marker=marker,
                        linestyle=line, label=kind + "s")
                for r in rows:
                    ax.annotate(_label(r), (r["parameters"] / 1e6, r[key]), fontsize=7,
                                textcoords="offset points", xytext=(3, 3))
        if key == "decode_ms_per_frame":
            ax.axhline(1000 / 75, color="grey", linestyle=":", label="real time (13.3 ms)")
        ax.set_xscale("log")
        ax.set_xlabel("parameters (M)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_latency_stages(latency: list[dict], path: Path) -> Path:
    """Grouped bars per model: encode, prefill, time to first audio, 1 s of decode."""
    plt = _pyplot()
    ok = [r for r in latency if r["status"] == "ok"]
    stages = [("encode_ms", "prompt encode"), ("prefill_ms", "prefill"),
              ("time_to_first_audio_ms", "time to first audio"), ("decode_1s_ms", "decode 1 s (75 frames)")]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(ok) + 2), 4))
    x = np.arange(len(ok))
    width = 0.8 / len(stages)
    for i, (key, label) in enumerate(stages):
        values = [r["decode_ms_per_frame"] * 75 if key == "decode_1s_ms" else r[key] for r in ok]
        ax.bar(x + (i - (len(stages) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, [_label(r) for r in ok], rotation=20, fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title("per-stage latency (medians)", fontsize=10)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_metric_distributions(utterances: list[dict], path: Path) -> Path:
    """Box plots per checkpoint of utterance WER, MCD and log-F0 RMSE."""
    plt = _pyplot()
    checkpoints = list(dict.fromkeys(r["checkpoint"] for r in utterances))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, title in zip(axes, ("wer", "mcd", "log_f0_rmse"),
                              ("utterance WER", "MCD (dB)", "log-F0 RMSE (ln Hz)")):
        data = [_floats([r for r in utterances if r["checkpoint"] == ck], key) for ck in checkpoints]
        labels = [f"{ck}\n(n={len(d)})" for ck, d in zip(checkpoints, data)]
        if any(len(d) for d in data):
            ax.boxplot([d if len(d) else [np.nan] for d in data], showmeans=True)
            ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set_title(title, fontsize=10)
    return _save(plt, fig, path)


# ----------------------------------------------------------------------------- report


def _settings_md(meta: dict) -> str:
    s = meta.get("sampling", {})
    lines = [
        f"- manifest: `{meta.get('manifest')}` ({meta.get('n_utterances')} of {meta.get('manifest_rows')} "
        "utterances evaluated)",
        f"- checkpoints folder: `{meta.get('checkpoints')}`",
        f"- ASR: {meta.get('asr')}",
        f"- speaker similarity: {meta.get('speaker_model', 'none')} (cosine of the speaker embeddings of "
        "the reply and of the reference answer, the assistant's voice)",
        f"- device: {meta.get('device')}; torch threads: {meta.get('threads')}; torch {meta.get('torch')}",
        "- sampling: " + ", ".join(f"{k}={v}" for k, v in s.items()),
        f"- answer accuracy: {meta.get('answer_rule', '')}",
        f"- MCD_PARAMS: `{json.dumps(meta.get('mcd_params', {}))}`",
        f"- F0_PARAMS: `{json.dumps(meta.get('f0_params', {}))}`",
        f"- latency: {meta.get('latency_settings', 'skipped')}",
        f"- wall time: {meta.get('wall_seconds', math.nan):.1f} s; command: `{meta.get('command', '')}`",
    ]
    return "\n".join(lines)


def render_markdown(summary: list[dict], groups: list[dict], latency: list[dict], meta: dict,
                    plots: dict[str, str], comparisons: str = "", preference: str = "") -> str:
    parts = [f"# Evaluation report: {meta.get('title', '')}", "", f"Generated {meta.get('date', '')}.", "",
             "## Settings", "", _settings_md(meta), "",
             "## Quality per checkpoint", "",
             "WER: corpus WER of the Whisper transcript of the reply vs the reference answer text "
             "(Whisper's English normaliser). MCD and log-F0 RMSE: reply vs reference answer audio. "
             "Speaker sim: cosine of their speaker embeddings (1 = the same voice). "
             "TTFA / RTF: the dedicated latency run (eval/latency.py), if any. In brackets: 95% "
             f"bootstrap intervals ({meta.get('bootstrap', 'percentile method, utterances resampled')}).", "",
             markdown_table(summary, _with_metrics(SUMMARY_TABLE[:-2], summary) + SUMMARY_TABLE[-2:]), ""]
    failed = [r for r in summary if r.get("status") != "ok"]
    if failed:
        parts += ["Checkpoints that failed to load (skipped):", ""]
        parts += [f"- `{r['path']}`: {r['status']}" for r in failed] + [""]
    for key, title in (("accent", "Quality per accent group"), ("split", "Quality per split")):
        rows = [r for r in groups if r["group_by"] == key]
        if rows:
            parts += [f"## {title}", "", markdown_table(
                rows, [("checkpoint", "checkpoint", ""), ("group", key, "")] + _with_metrics(QUALITY_TABLE, rows)), ""]
            parts += [f"- `{r['checkpoint']}` {key} {r['group'] or '(none)'}: {r['note']}" for r in rows
                      if r.get("note")] + ([""] if any(r.get("note") for r in rows) else [])
    if comparisons:
        parts += ["## Paired differences between checkpoints", "", comparisons]
    if preference:
        parts += ["## Blind A/B preference (votes)", "", preference]
    parts += ["## Latency per model size", ""]
    if latency:
        parts += ["Presets have random weights (timing only). Medians after a warm-up; "
                  "decode ms/frame below 13.3 is faster than real time. TTFA: prompt encoded -> first "
                  "audio chunk ready; speech end to audio: the same plus the prompt's encode.", "",
                  markdown_table(latency, LATENCY_TABLE), ""]
    else:
        parts += ["Skipped (--no-latency or no presets/checkpoints to time).", ""]
    if plots:
        parts += ["## Plots", ""] + [f"![{name}]({rel})" for name, rel in plots.items()] + [""]
    parts += ["## Files", "", "utterances.csv (per utterance x checkpoint), summary.csv, groups.csv, "
              "comparisons.csv, latency.csv, run.json (settings)" + (", votes.csv" if preference else "") + ".", ""]
    return "\n".join(parts)


def _interval_columns(base: tuple[str, ...], metrics: list[str]) -> tuple[str, ...]:
    """base + the metrics it lacks + each metric's _lo / _hi."""
    return base + tuple(m for m in metrics if m not in base) + tuple(f"{m}_{e}" for m in metrics for e in ("lo", "hi"))


def write_report(out: str | Path, *, utterances: list[dict], summary: list[dict], latency: list[dict],
                 meta: dict, preference: dict | None = None) -> Path:
    """Write every artefact into `out` atomically; returns the report folder.

    Adds 95% bootstrap intervals to the summary rows (in place) and the groups; meta["splits"]
    ({split: rows in the manifest}) names the splits to report even when no row was evaluated.
    preference: {"path", "n_votes", "rows"} from eval.votes, for the votes section and votes.csv.
    """
    from eval.votes import PREFERENCE_COLUMNS, preference_markdown

    out = Path(out)
    groups = group_rows(utterances)
    ok = [s["checkpoint"] for s in summary if s.get("status") == "ok"]
    groups += empty_groups(groups, ok, meta.get("splits") or {})
    metrics = add_intervals(summary, groups, utterances)
    comparisons = paired_rows(utterances, ok)
    votes_md = ""
    if preference is not None:
        by_name = {s["checkpoint"]: s for s in summary if s.get("status") == "ok"}
        votes_md = preference_markdown(preference["rows"], preference["n_votes"], preference["path"], by_name)
    with atomic_dir(out) as tmp:
        write_csv(tmp / "utterances.csv", utterances, UTTERANCE_COLUMNS)
        write_csv(tmp / "summary.csv", summary, _interval_columns(SUMMARY_COLUMNS, metrics))
        write_csv(tmp / "groups.csv", groups, _interval_columns(GROUP_COLUMNS, metrics))
        write_csv(tmp / "comparisons.csv", comparisons, COMPARISON_COLUMNS)
        if preference is not None:
            write_csv(tmp / "votes.csv", preference["rows"], PREFERENCE_COLUMNS)
        from eval.latency import COLUMNS as LATENCY_COLUMNS

        write_csv(tmp / "latency.csv", latency, LATENCY_COLUMNS)
        (tmp / "run.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (tmp / "plots").mkdir()
        plots = {}
        if any(r["status"] == "ok" for r in latency):
            plot_latency_vs_parameters(latency, tmp / "plots" / "latency_vs_parameters.png")
            plot_latency_stages(latency, tmp / "plots" / "latency_stages.png")
            plots["latency vs parameters"] = "plots/latency_vs_parameters.png"
            plots["per-stage latency"] = "plots/latency_stages.png"
        if utterances:
            plot_metric_distributions(utterances, tmp / "plots" / "metric_distributions.png")
            plots["metric distributions"] = "plots/metric_distributions.png"
        (tmp / "report.md").write_text(render_markdown(summary, groups, latency, meta, plots,
                                                       comparison_markdown(comparisons), votes_md))
    return out
