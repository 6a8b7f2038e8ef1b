"""Confidence intervals and paired comparisons of scored utterance rows, for the eval report.

    from eval.compare import add_intervals, paired_rows, comparison_markdown
    add_intervals(summary, groups, utterances)     # adds X_lo / X_hi beside every metric X
    diffs = paired_rows(utterances, ["run1", "run2"])       # B - A on the same utterances
    print(comparison_markdown(diffs))

Metrics (eval/stats.py turns each into a ratio of sums and bootstraps it over utterances):
answer_accuracy, wer (corpus WER: resampled word errors / resampled reference words) and
`<column>_mean` for every other numeric column of the utterance rows (mcd, log_f0_rmse,
vuv_error, reply_seconds, ... and any column a new metric adds), except the bookkeeping and
timing columns in NOT_METRICS. Rows with an error are left out, as eval.report.aggregate does,
so the point estimates here are the summary's own.

Paired differences: for two checkpoints, the utterances both scored; each bootstrap resample
draws one set of utterance indices used for both, so B - A keeps what the utterances share.
A difference is "real" when its 95% interval excludes 0; with fewer than MIN_PAIRED (2) such
utterances there is no interval (nan) and nothing is real. Ceiling rows (codec only) get
intervals but are not paired: they are a bound, not a contender.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from eval.stats import (LEVEL, RESAMPLES, SEED, bootstrap_indices, mean_inputs, paired_ratio_interval,
                        ratio_interval)

CEILING_PREFIX = "ceiling: "  # eval/scoring.py names a codec's ceiling rows "ceiling: <codec>"
# Numeric utterance columns that are not quality metrics: the parts of the corpus WER, counts,
# lengths the eval chose, and timings (they follow the machine's load; eval/latency.py times them).
NOT_METRICS = {"wer", "word_errors", "ref_words", "mcd_frames", "f0_frames", "reply_frames", "prompt_seconds",
               "reference_seconds", "max_reply_seconds", "realtime_factor"}
LOWER_IS_BETTER = {"wer", "mcd_mean", "log_f0_rmse_mean", "log_f0_rmse_cents_mean", "vuv_error_mean"}
HIGHER_IS_BETTER = {"answer_accuracy", "speaker_sim_mean"}
MIN_PAIRED = 2  # utterances both measured, at least, for a paired interval
COMPARISON_COLUMNS = ("a", "b", "group_by", "group", "metric", "n", "a_value", "b_value", "diff", "diff_lo",
                      "diff_hi", "real", "better")


def _number(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, (bool, np.bool_))


def metric_columns(utterances: list[dict]) -> list[str]:
    """The numeric utterance columns that get a mean with an interval, in order of appearance."""
    seen: dict[str, bool] = {}
    for r in utterances:
        for k, v in r.items():
            if k in NOT_METRICS or k.endswith("_ms") or k.startswith("_") or v is None or v == "":
                continue
            seen[k] = seen.get(k, True) and _number(v)
    return [k for k, numeric in seen.items()
            if numeric and any(_number(r.get(k)) and math.isfinite(r[k]) for r in utterances)]


def _value(r: dict, key: str) -> float:
    v = r.get(key)
    return float(v) if _number(v) and math.isfinite(v) else math.nan


def metric_inputs(rows: list[dict], columns: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (num, den)} over `rows` (one entry per row, 0/0 where a row has no value)."""
    correct = [r.get("answer_correct") for r in rows]
    known = np.array([c in (True, False) for c in correct], dtype=float)
    errors = np.array([_value(r, "word_errors") for r in rows])
    words = np.array([_value(r, "ref_words") for r in rows])
    both = np.isfinite(errors) & np.isfinite(words)
    out = {"answer_accuracy": (np.array([c is True for c in correct], dtype=float), known),
           "wer": (np.where(both, errors, 0.0), np.where(both, words, 0.0))}
    for col in columns:
        out[f"{col}_mean"] = mean_inputs([_value(r, col) for r in rows])
    return out


def _scored(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("error")]  # as eval.report.aggregate


def intervals(rows: list[dict], columns: list[str], resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """{metric: point, metric_lo: ..., metric_hi: ...} of the scored rows; nan when none is."""
    scored = _scored(rows)
    idx = bootstrap_indices(len(scored), resamples, seed)
    out: dict = {}
    for name, (num, den) in metric_inputs(scored, columns).items():
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = ratio_interval(num, den, idx)
    return out


def add_intervals(summary: list[dict], groups: list[dict], utterances: list[dict],
                  resamples: int = RESAMPLES, seed: int = SEED) -> list[str]:
    """Add X_lo / X_hi (and X itself where the row lacks it) for every metric X to the ok
    summary rows and to the group rows (group_by / group name the utterance field and value).
    A group with no scored utterances gets nan and a note. Returns the metric names."""
    columns = metric_columns(utterances)
    names: list[str] = []
    for s in summary:
        if s.get("status", "ok") != "ok":
            continue
        ci = intervals([r for r in utterances if r["checkpoint"] == s["checkpoint"]], columns, resamples, seed)
        names = names or [k for k in ci if not k.endswith(("_lo", "_hi"))]
        _merge(s, ci)
    for g in groups:
        rows = [r for r in utterances if r["checkpoint"] == g["checkpoint"]
                and str(r.get(g["group_by"], "")) == str(g["group"])]
        ci = intervals(rows, columns, resamples, seed)
        names = names or [k for k in ci if not k.endswith(("_lo", "_hi"))]
        _merge(g, ci)
        if not _scored(rows) and not g.get("note"):
            g["note"] = "no scored utterances in this group: no figures, no intervals"
    return names


def _merge(row: dict, ci: dict) -> None:
    for k, v in ci.items():
        if k.endswith(("_lo", "_hi")) or not _number(row.get(k)):
            row[k] = v


def empty_groups(groups: list[dict], checkpoints: list[str], expected: dict[str, int], key: str = "split") -> list[dict]:
    """Group rows for the values of `key` the manifest has (expected: {value: rows}) that no
    evaluated utterance has (e.g. cut off by --limit): n = 0 and a note saying so."""
    have = {(g["checkpoint"], str(g["group"])) for g in groups if g["group_by"] == key}
    return [{"checkpoint": ck, "group_by": key, "group": value, "n": 0,
             "note": f"no utterances evaluated ({count} in the manifest, none in the evaluated subset)"}
            for ck in checkpoints for value, count in sorted(expected.items()) if (ck, str(value)) not in have]


# ----------------------------------------------------------------------------- paired differences


def paired(rows_a: list[dict], rows_b: list[dict], columns: list[str], resamples: int = RESAMPLES,
           seed: int = SEED) -> list[dict]:
    """B - A for every metric, on the utterances (by id) both scored, with one set of resample
    indices for both sides; for a mean, only the utterances where both have a value count."""
    a_by = {r["id"]: r for r in _scored(rows_a)}
    b_by = {r["id"]: r for r in _scored(rows_b)}
    ids = [i for i in a_by if i in b_by]
    a_in = metric_inputs([a_by[i] for i in ids], columns)
    b_in = metric_inputs([b_by[i] for i in ids], columns)
    idx = bootstrap_indices(len(ids), resamples, seed)
    out = []
    for name in a_in:
        (num_a, den_a), (num_b, den_b) = a_in[name], b_in[name]
        # only utterances measured on both sides; den_a: 1 for a mean or an accuracy, the
        # reference words for WER (the same for both: one reference answer per utterance)
        den = np.where((den_a > 0) & (den_b > 0), den_a, 0.0)
        num_a, num_b = np.where(den > 0, num_a, 0.0), np.where(den > 0, num_b, 0.0)
        a_val, _, _ = ratio_interval(num_a, den, idx)
        b_val, _, _ = ratio_interval(num_b, den, idx)
        n = int((den > 0).sum())
        diff, lo, hi = paired_ratio_interval(num_b, num_a, den, idx)
        if n < MIN_PAIRED:  # every resample of one utterance is that utterance: a zero-width "interval"
            lo = hi = math.nan
        real = bool(lo > 0 or hi < 0)  # nan compares False: no interval, not real
        out.append({"metric": name, "n": n, "a_value": a_val, "b_value": b_val,
                    "diff": diff, "diff_lo": lo, "diff_hi": hi, "real": real, "_better": _better(name, diff, real)})
    return out


def _better(metric: str, diff: float, real: bool) -> str:
    if not real or (metric not in LOWER_IS_BETTER and metric not in HIGHER_IS_BETTER):
        return ""
    return "b" if (diff < 0) == (metric in LOWER_IS_BETTER) else "a"


def paired_rows(utterances: list[dict], checkpoints: list[str], key: str = "split",
                resamples: int = RESAMPLES, seed: int = SEED) -> list[dict]:
    """COMPARISON_COLUMNS rows: every two checkpoints (ceilings left out), over all utterances
    and per value of `key`; "better" names the checkpoint whose difference is real and in its favour."""
    names = [c for c in checkpoints if not c.startswith(CEILING_PREFIX)]
    columns = metric_columns(utterances)
    out = []
    for a, b in combinations(names, 2):
        rows_a = [r for r in utterances if r["checkpoint"] == a]
        rows_b = [r for r in utterances if r["checkpoint"] == b]
        groups = [("all", "all", rows_a, rows_b)]
        for value in sorted({str(r.get(key, "")) for r in rows_a + rows_b}):
            groups.append((key, value, [r for r in rows_a if str(r.get(key, "")) == value],
                           [r for r in rows_b if str(r.get(key, "")) == value]))
        for group_by, group, ra, rb in groups:
            for d in paired(ra, rb, columns, resamples, seed):
                better = {"a": a, "b": b, "": ""}[d.pop("_better")]
                out.append({"a": a, "b": b, "group_by": group_by, "group": group, **d, "better": better})
    return out


# ----------------------------------------------------------------------------- markdown


def _num(v: float, metric: str, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    sign = "+" if signed else ""
    if metric in ("answer_accuracy", "wer") or metric.endswith("error_mean"):
        return f"{100 * v:{sign}.1f}" + ("" if signed else "%")
    return f"{v:{sign}.3g}" if abs(v) < 1 else f"{v:{sign}.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows])


def comparison_markdown(rows: list[dict], resamples: int = RESAMPLES) -> str:
    """The report's paired-difference section ("" when fewer than two checkpoints)."""
    if not rows:
        return ""
    pct = int(round(100 * LEVEL))
    lines = [f"B - A on the utterances both scored, with a {pct}% bootstrap interval ({resamples} "
             "resamples of utterances, one set of indices for both checkpoints; accuracy, WER and "
             "V/UV error in percentage points). **real**: the interval excludes 0 (n >= 2). With many "
             f"metrics and pairs, about 1 in {round(1 / (1 - LEVEL))} intervals excludes 0 by chance alone.", ""]
    body = []
    for r in rows:
        if r["group_by"] != "all":
            continue
        verdict = ("**real**" + (f", better: `{r['better']}`" if r["better"] else "")) if r["real"] else "not shown"
        body.append([f"`{r['a']}`", f"`{r['b']}`", r["metric"], str(r["n"]), _num(r["a_value"], r["metric"]),
                     _num(r["b_value"], r["metric"]),
                     f"{_num(r['diff'], r['metric'], True)} [{_num(r['diff_lo'], r['metric'], True)}, "
                     f"{_num(r['diff_hi'], r['metric'], True)}]", verdict])
    lines += _table(["A", "B", "metric", "n", "A", "B", "B - A [95% CI]", "difference"], body) + [""]
    split = [r for r in rows if r["group_by"] != "all" and r["metric"] in ("answer_accuracy", "wer")]
    if split:
        lines += ["Per split (answer accuracy and WER; every metric is in comparisons.csv):", ""]
        lines += _table(["A", "B", "split", "metric", "n", "B - A [95% CI]", "difference"], [
            [f"`{r['a']}`", f"`{r['b']}`", r["group"] or "(none)", r["metric"], str(r["n"]),
             f"{_num(r['diff'], r['metric'], True)} [{_num(r['diff_lo'], r['metric'], True)}, "
             f"{_num(r['diff_hi'], r['metric'], True)}]", "**real**" if r["real"] else "not shown"]
            for r in split]) + [""]
    real = [r for r in rows if r["group_by"] == "all" and r["real"]]
    lines.append("Real differences over all utterances: " + ("; ".join(
        f"{r['metric']} `{r['b']}` - `{r['a']}` = {_num(r['diff'], r['metric'], True)}"
        + (f" (better: `{r['better']}`)" if r["better"] else "") for r in real) if real else "none") + ".")
    return "\n".join(lines) + "\n"
