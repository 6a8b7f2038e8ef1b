"""Bootstrap intervals, paired differences, Bradley-Terry (eval/stats.py) and their use on
utterance rows (eval/compare.py): checked against what the statistics must do."""

import math

import numpy as np
import pytest

from eval.compare import add_intervals, comparison_markdown, empty_groups, intervals, metric_columns, paired_rows
from eval.stats import (bootstrap_indices, bradley_terry, components, mean_inputs, paired_ratio_interval,
                        percentile_interval, ratio_interval)


def utterances(name, n, seed, p_correct=0.7, mcd=8.0, errors=1.0, split_of=lambda i: "s"):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words = int(rng.integers(4, 10))
        rows.append({"checkpoint": name, "id": f"u{i}", "split": split_of(i), "error": "",
                     "answer_correct": bool(rng.random() < p_correct), "ref_words": words,
                     "word_errors": int(rng.poisson(errors)), "wer": 0.0, "mcd": float(rng.normal(mcd, 1.0)),
                     "log_f0_rmse": float(rng.normal(0.4, 0.1)), "mcd_frames": 100, "total_ms": 5.0,
                     "transcript": "words"})
    return rows


def test_intervals_contain_the_point_and_shrink_with_more_data():
    widths = {}
    for n in (30, 300):
        rng = np.random.default_rng(n)
        values = rng.normal(5.0, 2.0, n)
        point, lo, hi = ratio_interval(*mean_inputs(values), bootstrap_indices(n))
        assert point == pytest.approx(values.mean()) and lo < point < hi
        correct = (rng.random(n) < 0.6).astype(float)
        acc, alo, ahi = ratio_interval(correct, np.ones(n), bootstrap_indices(n))
        assert acc == correct.mean() and alo < acc < ahi and 0 <= alo and ahi <= 1
        widths[n] = (hi - lo, ahi - alo)
    assert widths[300][0] < widths[30][0] / 2 and widths[300][1] < widths[30][1] / 2  # ~ 1 / sqrt(n)


def test_corpus_wer_resamples_utterances_not_words():
    errors, words = np.array([0.0, 0, 0, 10]), np.array([5.0, 5, 5, 5])
    idx = bootstrap_indices(4, 4000)
    wer, lo, hi = ratio_interval(errors, words, idx)
    assert wer == 0.5  # 10 errors / 20 words
    # corpus WER, not the mean of utterance WERs (which would be (1 + 0) / 2 here)
    assert ratio_interval(np.array([1.0, 0]), np.array([1.0, 9]), bootstrap_indices(2))[0] == 0.1
    # 2.5%: resamples without the bad utterance (p = 0.32); 97.5%: three of four draws it (p = 0.05)
    assert lo == 0.0 and hi == 1.5
    # the same seed gives the same interval: a report is reproducible
    assert ratio_interval(errors, words, bootstrap_indices(4, 4000)) == (wer, lo, hi)


def test_nothing_measured_gives_nan_not_a_crash():
    idx = bootstrap_indices(0)
    assert idx.shape == (2000, 0)
    assert all(math.isnan(v) for v in ratio_interval(np.zeros(0), np.zeros(0), idx))
    assert all(math.isnan(v) for v in ratio_interval(*mean_inputs([math.nan, math.nan]), bootstrap_indices(2)))
    assert all(math.isnan(v) for v in percentile_interval(np.array([math.nan])))
    with pytest.raises(ValueError, match=r"idx must be \[resamples, 3\]"):
        ratio_interval(np.ones(3), np.ones(3), bootstrap_indices(4))


def test_paired_difference_of_a_checkpoint_with_itself_is_exactly_zero():
    rows = utterances("a", 50, 0)
    twin = [{**r, "checkpoint": "b"} for r in rows]
    diffs = paired_rows(rows + twin, ["a", "b"])
    assert {d["metric"] for d in diffs} == {"answer_accuracy", "wer", "mcd_mean", "log_f0_rmse_mean"}
    for d in diffs:
        assert (d["diff"], d["diff_lo"], d["diff_hi"]) == (0.0, 0.0, 0.0) and not d["real"], d


def test_paired_intervals_are_narrower_than_unpaired_and_find_a_real_difference():
    n = 60
    rng = np.random.default_rng(1)
    hard = rng.normal(0, 3, n)  # what the utterances share: some are hard for every model
    a, b = 8 + hard + rng.normal(0, 0.3, n), 8.5 + hard + rng.normal(0, 0.3, n)
    idx = bootstrap_indices(n)
    ones = np.ones(n)
    d, lo, hi = paired_ratio_interval(b, a, ones, idx)
    assert d == pytest.approx(b.mean() - a.mean()) and 0 < lo < d < hi
    _, alo, ahi = ratio_interval(a, ones, idx)
    _, blo, bhi = ratio_interval(b, ones, idx)
    assert alo < bhi and blo < ahi  # unpaired, the two intervals overlap: no conclusion
    assert hi - lo < (ahi - alo) / 3


def test_rows_get_intervals_per_checkpoint_and_group_and_the_report_says_what_is_real():
    split = lambda i: "eval_voices" if i % 2 else "eval_family"  # noqa: E731
    good = utterances("good", 80, 2, p_correct=0.9, mcd=7.0, errors=0.2, split_of=split)
    bad = utterances("bad", 80, 3, p_correct=0.2, mcd=7.0, errors=3.0, split_of=split)
    for r in bad:
        r["speaker_sim"] = 0.5  # a column a new metric adds gets its mean and interval unchanged
    bad[0]["error"] = "generation: too long"
    ceiling = [{**r, "checkpoint": "ceiling: world_vq"} for r in good]
    rows = good + bad + ceiling
    assert metric_columns(rows) == ["mcd", "log_f0_rmse", "speaker_sim"]  # counts, timings, text left out
    summary = [{"checkpoint": c, "status": "ok"} for c in ("good", "bad", "ceiling: world_vq")]
    summary.append({"checkpoint": "broken", "status": "error: CheckpointError: bad file"})
    groups = [{"checkpoint": c, "group_by": "split", "group": g} for c in ("good", "bad")
              for g in ("eval_voices", "eval_family", "eval_phrasings")]
    add_intervals(summary, groups, rows)
    s_good, s_bad = summary[0], summary[1]
    for s in summary[:3]:
        for m in ("answer_accuracy", "wer", "mcd_mean", "log_f0_rmse_mean"):
            assert s[f"{m}_lo"] <= s[m] <= s[f"{m}_hi"], (s["checkpoint"], m)
    assert s_bad["speaker_sim_mean"] == s_bad["speaker_sim_mean_lo"] == 0.5
    assert math.isnan(s_good["speaker_sim_mean"])
    assert "answer_accuracy_lo" not in summary[3]  # a failed checkpoint has no figures
    scored_bad = [r for r in bad if not r["error"]]
    assert s_bad["wer"] == pytest.approx(sum(r["word_errors"] for r in scored_bad) / sum(r["ref_words"] for r in scored_bad))
    empty = [g for g in groups if g["group"] == "eval_phrasings"]
    assert all(math.isnan(g["answer_accuracy"]) and "no scored utterances" in g["note"] for g in empty)
    voices = groups[0]
    assert voices["answer_accuracy_lo"] <= voices["answer_accuracy"] <= voices["answer_accuracy_hi"]
    assert voices["answer_accuracy_hi"] - voices["answer_accuracy_lo"] > s_good["answer_accuracy_hi"] - s_good["answer_accuracy_lo"]

    diffs = paired_rows(rows, ["good", "bad", "ceiling: world_vq"])
    assert {(d["a"], d["b"]) for d in diffs} == {("good", "bad")}  # ceilings are not paired
    overall = {d["metric"]: d for d in diffs if d["group_by"] == "all"}
    assert overall["answer_accuracy"]["n"] == 79  # the utterance bad failed is left out of both
    assert overall["answer_accuracy"]["real"] and overall["answer_accuracy"]["better"] == "good"
    assert overall["wer"]["real"] and overall["wer"]["diff"] > 0 and overall["wer"]["better"] == "good"
    assert overall["speaker_sim_mean"]["n"] == 0 and not overall["speaker_sim_mean"]["real"]
    assert {d["group"] for d in diffs if d["group_by"] == "split"} == {"eval_voices", "eval_family"}
    md = comparison_markdown(diffs)
    assert "answer_accuracy `bad` - `good` = " in md and "(better: `good`)" in md
    assert "| `good` | `bad` | wer |" in md and "**real**" in md
    missing = empty_groups(groups, ["good"], {"eval_voices": 40, "eval_extra": 3})
    assert missing == [{"checkpoint": "good", "group_by": "split", "group": "eval_extra", "n": 0,
                        "note": "no utterances evaluated (3 in the manifest, none in the evaluated subset)"}]


def test_an_empty_checkpoint_gets_nan_intervals():
    ci = intervals([{"checkpoint": "x", "id": "u", "error": "asr: failed"}], ["mcd"])
    assert math.isnan(ci["wer"]) and math.isnan(ci["answer_accuracy_lo"]) and math.isnan(ci["mcd_mean_hi"])


def test_bradley_terry_ranks_a_clearly_better_model_first():
    # strong beats mid 9 of 10, mid beats weak 8 of 10, strong beats weak 10 of 10
    wins = np.array([[0, 9, 10], [1, 0, 8], [0, 2, 0]], dtype=float)
    s = bradley_terry(wins)
    assert s[0] > s[1] > s[2] and abs(s.sum()) < 1e-9
    p = 1 / (1 + np.exp(s[1] - s[0]))
    assert 0.7 < p < 0.97  # P(strong beats mid): near the observed 0.9, pulled in by the prior
    assert np.allclose(bradley_terry(np.array([[0, 5], [5, 0]], dtype=float)), 0)  # all even
    # the MM fixed point: each model's expected wins equal its (prior-smoothed) wins
    w = wins + 0.25 * ((wins + wins.T) > 0)
    prob = np.exp(s)[:, None] / (np.exp(s)[:, None] + np.exp(s)[None, :])
    assert np.allclose(((w + w.T) * prob).sum(1), w.sum(1), atol=1e-6)
    with pytest.raises(ValueError, match="square"):
        bradley_terry(np.ones((2, 3)))


def test_bradley_terry_fits_separate_pieces_on_their_own_and_leaves_out_who_never_played():
    # {0, 1} and {2, 3} never met; 4 played nobody
    wins = np.zeros((5, 5))
    wins[0, 1], wins[1, 0], wins[2, 3], wins[3, 2] = 9, 1, 6, 4
    assert [list(p) for p in components(wins)] == [[0, 1], [2, 3], [4]]
    s = bradley_terry(wins)
    assert np.allclose(s[:2], bradley_terry(wins[:2, :2])) and np.allclose(s[2:4], bradley_terry(wins[2:4, 2:4]))
    assert abs(s[0] + s[1]) < 1e-9 and abs(s[2] + s[3]) < 1e-9  # each piece centred on its own
    assert np.isnan(s[4])  # no games, no strength
    chain = np.array([[0, 3, 0], [1, 0, 2], [0, 2, 0]], dtype=float)  # 0-1 and 1-2 met: one piece
    assert [list(p) for p in components(chain)] == [[0, 1, 2]] and np.isfinite(bradley_terry(chain)).all()


def overall(rows, metric):
    return next(d for d in rows if d["metric"] == metric and d["group_by"] == "all")


def test_a_paired_difference_of_one_utterance_is_never_real():
    one_a = utterances("a", 1, 0, mcd=8.0)
    one_b = [{**r, "checkpoint": "b", "mcd": r["mcd"] + 5.0} for r in one_a]
    mcd = overall(paired_rows(one_a + one_b, ["a", "b"]), "mcd_mean")
    assert mcd["n"] == 1 and mcd["diff"] == pytest.approx(5.0)
    assert not mcd["real"] and math.isnan(mcd["diff_lo"]) and math.isnan(mcd["diff_hi"]) and mcd["better"] == ""
    assert "Real differences over all utterances: none." in comparison_markdown([mcd | {"a": "a", "b": "b"}])
    two_a = utterances("a", 2, 0, mcd=8.0)  # two utterances that agree: an interval, and a real difference
    two_b = [{**r, "checkpoint": "b", "mcd": r["mcd"] + 5.0} for r in two_a]
    mcd2 = overall(paired_rows(two_a + two_b, ["a", "b"]), "mcd_mean")
    assert mcd2["n"] == 2 and mcd2["real"] and mcd2["better"] == "a"
