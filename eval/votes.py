"""Blind A/B preference votes, analysed: win rates and the Bradley-Terry ranking of what the vote
store (eval/vote_store.py) holds.

    python -m eval.votes reports/votes.sqlite          # print the win rates and the ranking
    python -m eval.run --checkpoints ckpts/ --votes reports/votes.sqlite   # ... beside the metrics

Models are ranked only against models they are joined to by votes (directly or through others):
votes in separate groups warn and are ranked within each group.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np

from eval.stats import RESAMPLES, SEED, bootstrap_indices, bradley_terry, components, percentile_interval
from eval.vote_store import VotesError, VoteStore

PREFERENCE_COLUMNS = ("group", "rank", "model", "games", "wins", "losses", "ties", "win_rate", "win_rate_lo",
                      "win_rate_hi", "bt_score", "bt_score_lo", "bt_score_hi")


def _wins_matrix(votes: list[dict], models: list[str]) -> np.ndarray:
    at = {m: i for i, m in enumerate(models)}
    w = np.zeros((len(models), len(models)))
    for v in votes:
        i, j = at[v["a"]], at[v["b"]]
        if v["choice"] == "A":
            w[i, j] += 1
        elif v["choice"] == "B":
            w[j, i] += 1
        else:  # a tie: half a win each
            w[i, j] += 0.5
            w[j, i] += 0.5
    return w


def preference(votes: list[dict], resamples: int = RESAMPLES, seed: int = SEED) -> list[dict]:
    """PREFERENCE_COLUMNS rows, best first: per model its games, wins / losses / ties, win rate
    ((wins + ties / 2) / games) and Bradley-Terry score (log-strength, mean 0; a difference of
    1 = e:1 odds), each with a 95% bootstrap interval over votes (resampled with replacement).

    Models that never met, directly or through others, cannot be ranked against each other:
    when the votes fall into separate groups this warns, and scores and ranks are within each
    group (the group column, numbered in the order of the models' names). A resample in which
    a model has no votes leaves it out of that resample's intervals; each resample's scores
    are centred like the full fit's over the models it has, so the resamples share one scale.
    """
    models = sorted({v["a"] for v in votes} | {v["b"] for v in votes})
    if not models:
        return []
    w = _wins_matrix(votes, models)
    scores = bradley_terry(w)
    groups = components(w)
    group_of = {int(i): g for g, piece in enumerate(groups, 1) for i in piece}
    if len(groups) > 1:
        warnings.warn(f"the votes form {len(groups)} groups of models that never met, directly or through others "
                      f"({'; '.join(', '.join(models[i] for i in piece) for piece in groups)}): Bradley-Terry "
                      "scores and ranks compare models only within a group", stacklevel=2)
    idx = bootstrap_indices(len(votes), resamples=min(resamples, 500), seed=seed)  # BT per resample: 500 suffice
    boot_scores = np.empty((len(idx), len(models)))
    boot_rates = np.empty((len(idx), len(models)))
    for k, rows in enumerate(idx):
        wk = _wins_matrix([votes[i] for i in rows], models)
        sk = bradley_terry(wk)  # nan for a model this resample has no votes of
        for piece in components(wk):  # each piece on the full fit's scale: its models' mean as there
            if len(piece) > 1:
                sk[piece] += scores[piece].mean() - sk[piece].mean()
        boot_scores[k] = sk
        games = (wk + wk.T).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot_rates[k] = np.where(games > 0, wk.sum(axis=1) / np.where(games > 0, games, 1), np.nan)
    out = []
    for i, m in enumerate(models):
        mine = [v for v in votes if m in (v["a"], v["b"])]
        wins = sum(1 for v in mine if (v["choice"] == "A" and v["a"] == m) or (v["choice"] == "B" and v["b"] == m))
        ties = sum(1 for v in mine if v["choice"] == "tie")
        games = len(mine)
        out.append({"model": m, "group": group_of[i], "games": games, "wins": wins, "losses": games - wins - ties,
                    "ties": ties, "win_rate": (wins + ties / 2) / games if games else math.nan,
                    **dict(zip(("win_rate_lo", "win_rate_hi"), percentile_interval(boot_rates[:, i]))),
                    "bt_score": float(scores[i]),
                    **dict(zip(("bt_score_lo", "bt_score_hi"), percentile_interval(boot_scores[:, i])))})
    out.sort(key=lambda r: (r["group"], -r["bt_score"]))
    for group in range(1, len(groups) + 1):
        for rank, r in enumerate((r for r in out if r["group"] == group), 1):
            r["rank"] = rank
    return out


def preference_markdown(rows: list[dict], n_votes: int, path: str, objective: dict[str, dict] | None = None) -> str:
    """The report's section: the ranking table, with the run's answer accuracy and WER beside
    each model that this run also evaluated (objective: {model name: summary row})."""
    if not rows:
        return f"No votes in `{path}` yet (the app's A/B tab collects them).\n"
    cols = objective is not None  # the run's figures beside the votes (eval.run), else votes only
    objective = objective or {}
    lines = [f"{n_votes} blind A/B votes from `{path}`. Win rate: (wins + ties / 2) / games. Bradley-Terry "
             "score: log-strength by the MM algorithm (ties half a win each, one virtual tie per pair of "
             "models that met), mean 0; P(i beats j) = 1 / (1 + e^(s_j - s_i)). Intervals: 95% bootstrap "
             "over votes.", ""]
    n_groups = max(r.get("group", 1) for r in rows)
    if n_groups > 1:
        lines += [f"**The votes form {n_groups} groups of models that never met** (directly or through others): "
                  "scores and ranks compare models only within a group; rank g.r is rank r in group g.", ""]
    lines += ["| rank | model | games | W / L / T | win rate [95% CI] | Bradley-Terry [95% CI] |"
              + (" answer acc. | WER |" if cols else ""), "|---" * (8 if cols else 6) + "|"]
    for r in rows:
        s = objective.get(Path(r["model"]).name, {})
        acc, wer = s.get("answer_accuracy", math.nan), s.get("wer", math.nan)
        rank = f"{r.get('group', 1)}.{r['rank']}" if n_groups > 1 else r["rank"]
        lines.append(f"| {rank} | `{r['model']}` | {r['games']} | {r['wins']} / {r['losses']} / {r['ties']} | "
                     f"{100 * r['win_rate']:.1f}% [{100 * r['win_rate_lo']:.1f}, {100 * r['win_rate_hi']:.1f}] | "
                     f"{r['bt_score']:+.2f} [{r['bt_score_lo']:+.2f}, {r['bt_score_hi']:+.2f}] |"
                     + (f" {_pct(acc)} | {_pct(wer)} |" if cols else ""))
    return "\n".join(lines) + "\n"


def _pct(v) -> str:
    return "-" if not isinstance(v, float) or math.isnan(v) else f"{100 * v:.1f}%"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m eval.votes", description="Win rates and Bradley-Terry ranking "
                                "of the blind A/B votes in a votes database.")
    p.add_argument("db", help="the votes database (the app writes reports/votes.sqlite)")
    args = p.parse_args(argv)
    try:
        store = VoteStore(args.db, create=False)
        votes = store.votes()
        print(f"{store.counts()['served']} pairs served, {len(votes)} voted")
        print(preference_markdown(preference(votes), len(votes), args.db))
    except VotesError as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
