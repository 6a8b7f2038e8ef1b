"""Train the turn head (s2s/models/turn_head.py) on the examples of `python -m s2s.data.turns`.

    python -m s2s.training.turn_head --data data/turns --out assets/turn_head

Both outputs learn together (a binary cross-entropy on each labelled one; dropout, and half the
time a long turn's start cut off). A tenth of the train split's wordings (and of its short clips'
voices) is kept aside as a dev set: the epoch with the lowest dev loss is kept, and the thresholds
are chosen there: P(finished) high enough that at most
--max-false-finished of the unfinished pauses there would end the turn (a person cut off is
worse than a person kept waiting for the fallback silence), and P(backchannel) so that at most
--max-false-backchannel of real speech over a reply is let through at its pause, and, at the
onset of speech over a reply, the P(backchannel) below which it is stopped at once (at most
--max-onset-stop of backchannels' onsets fall below it). The held-out split (other
voices, wordings, fillers, openers and backchannels) is scored once, at the end, and its figures
go into config.json with the thresholds. The folder is written only when training is complete.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from s2s.models.turn_head import TurnHead, TurnHeadConfig, clip_features, save_turn_head


def load_examples(folder: str | Path) -> tuple[list[torch.Tensor], torch.Tensor, list[dict], str]:
    """examples.npz + examples.jsonl -> (features [S, D] per example, labels [N, 2], meta, front-end sha256)."""
    folder = Path(folder)
    try:
        data = np.load(folder / "examples.npz")
        meta = [json.loads(line) for line in (folder / "examples.jsonl").read_text().splitlines()]
        feats, offsets = data["features"], data["offsets"]
        labels = torch.from_numpy(np.stack([data["finished"], data["backchannel"]], 1).astype(np.int64))
        sha = str(data["sha256"])
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{folder} holds no readable turn examples ({type(e).__name__}: {e}); "
                         "build them: python -m s2s.data.turns --out DIR") from None
    if len(meta) != len(labels) or len(offsets) != len(labels) + 1:
        raise ValueError(f"{folder}: examples.jsonl has {len(meta)} lines for {len(labels)} examples; rebuild it")
    xs = [clip_features(torch.from_numpy(feats[a:b].astype(np.float32))) for a, b in zip(offsets[:-1], offsets[1:])]
    return xs, labels, meta, sha


def dev_key(m: dict) -> str:
    return m["voice"] if m["kind"] in ("backchannel", "interruption") else m["text"]


def masked_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the labelled outputs (y >= 0) of [B, 2]."""
    keep = y >= 0
    return F.binary_cross_entropy_with_logits(logits[keep], y[keep].float())


def crop_start(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Half the time, drop up to half of a long turn's start: the end must say it."""
    if len(x) > 50 and rng.random() < 0.5:
        return x[rng.randint(0, len(x) // 2):]
    return x


def batches(xs: list[torch.Tensor], idx: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """idx shuffled into batches of similar lengths (little padding), the batches shuffled."""
    order = idx[:]
    rng.shuffle(order)
    out = []
    for i in range(0, len(order), 32 * size):
        chunk = sorted(order[i:i + 32 * size], key=lambda j: len(xs[j]))
        out += [chunk[k:k + size] for k in range(0, len(chunk), size)]
    rng.shuffle(out)
    return out


def batch(xs: list[torch.Tensor], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples idx -> (features [B, S, D] padded at the end, mask [B, S])."""
    n = max(len(xs[i]) for i in idx)
    x = torch.zeros(len(idx), n, xs[idx[0]].shape[1])
    mask = torch.zeros(len(idx), n, dtype=torch.bool)
    for row, i in enumerate(idx):
        x[row, : len(xs[i])] = xs[i]
        mask[row, : len(xs[i])] = True
    return x, mask


@torch.inference_mode()
def logits_of(net: TurnHead, xs: list[torch.Tensor], idx: list[int], size: int = 256) -> torch.Tensor:
    """Logits [len(idx), 2] for examples idx."""
    net.eval()
    out = [net(*batch(xs, idx[i:i + size])) for i in range(0, len(idx), size)]
    return torch.cat(out) if out else torch.zeros(0, 2)


def predict(net: TurnHead, xs: list[torch.Tensor], idx: list[int]) -> torch.Tensor:
    """P [len(idx), 2] for examples idx."""
    return torch.sigmoid(logits_of(net, xs, idx))


def threshold_for(p_negative: torch.Tensor, max_false: float) -> float:
    """The lowest threshold that lets at most max_false of the negatives through (at least 0.5)."""
    if not len(p_negative):
        return 0.5
    q = float(torch.quantile(p_negative, 1.0 - max_false))
    return round(min(0.99, max(0.5, q + 1e-4)), 4)


def figures(p: torch.Tensor, labels: torch.Tensor, thresholds: tuple[float, float]) -> dict:
    """Per output: n, accuracy, and its two error rates at the thresholds."""
    out = {}
    for col, name, pos, neg in ((0, "finished", "finished", "unfinished"), (1, "backchannel", "backchannel", "speech")):
        y = labels[:, col]
        keep = y >= 0
        if not keep.any():
            continue
        guess = p[keep, col] >= thresholds[col]
        truth = y[keep] == 1
        out[name] = {"n": int(keep.sum()), "positives": int(truth.sum()),
                     "accuracy": round(float((guess == truth).float().mean()), 4),
                     f"false_{pos}_rate": round(float(guess[~truth].float().mean()) if (~truth).any() else 0.0, 4),
                     f"false_{neg}_rate": round(float((~guess[truth]).float().mean()) if truth.any() else 0.0, 4)}
    return out


def train(data: str | Path, out: str | Path, *, epochs: int = 12, lr: float = 2e-3, batch_size: int = 64,
          seed: int = 0, max_false_finished: float = 0.05, max_false_backchannel: float = 0.05,
          max_onset_stop: float = 0.1, config: dict | None = None, progress: bool = True) -> dict:
    from s2s.models.frontend import load_frontend

    torch.manual_seed(seed)
    rng = random.Random(seed)
    xs, labels, meta, sha = load_examples(data)
    fe = load_frontend("whisper_tiny_en").describe()
    if fe["params"]["sha256"] != sha:
        raise ValueError(f"{data} was built with another Whisper front-end (sha256 {sha[:12]}, this one "
                         f"{fe['params']['sha256'][:12]}); rebuild it: python -m s2s.data.turns")
    # dev: a tenth of the questions' wordings, and a tenth of the short clips (by voice: their words are few)
    keys = sorted({dev_key(m) for m in meta if m["split"] == "train"})
    dev_keys = set(rng.sample(keys, max(1, len(keys) // 10)))
    tr = [i for i, m in enumerate(meta) if m["split"] == "train" and dev_key(m) not in dev_keys]
    dev = [i for i, m in enumerate(meta) if m["split"] == "train" and dev_key(m) in dev_keys]
    held = [i for i, m in enumerate(meta) if m["split"] == "eval"]
    if not tr or not held:
        raise ValueError(f"{data}: needs train and eval examples, got {len(tr)} and {len(held)}")
    net = TurnHead(TurnHeadConfig(dim=xs[0].shape[1], frontend_sha256=sha, **(config or {})))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * -(-len(tr) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    started = time.perf_counter()
    best = (math.inf, None, 0)
    for epoch in range(epochs):
        net.train()
        total = 0.0
        for idx in batches(xs, tr, batch_size, rng):
            x, mask = batch([crop_start(xs[i], rng) for i in idx], list(range(len(idx))))
            loss = masked_bce(net(x, mask), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        dev_loss = float(masked_bce(logits_of(net, xs, dev), labels[dev]))
        if dev_loss < best[0]:  # keep the epoch that did best on the dev wordings
            best = (dev_loss, {k: v.clone() for k, v in net.state_dict().items()}, epoch + 1)
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: loss {total / len(tr):.4f}, dev {dev_loss:.4f} "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    net.load_state_dict(best[1])
    net.eval()
    onset = torch.tensor([m.get("event") == "start" for m in meta])
    p_dev, y_dev, o_dev = predict(net, xs, dev), labels[dev], onset[dev]
    thresholds = (threshold_for(p_dev[y_dev[:, 0] == 0, 0], max_false_finished),
                  threshold_for(p_dev[(y_dev[:, 1] == 0) & ~o_dev, 1], max_false_backchannel))
    bc_onsets = p_dev[(y_dev[:, 1] == 1) & o_dev, 1]
    onset_threshold = round(float(torch.quantile(bc_onsets, max_onset_stop)), 4) if len(bc_onsets) else 0.0
    net.cfg.finished_threshold, net.cfg.backchannel_threshold = thresholds
    net.cfg.onset_threshold = onset_threshold
    p_held, y_held, o_held = predict(net, xs, held), labels[held], onset[held]

    def report(p, y, o):
        at_pause = figures(p[~o], y[~o], thresholds)
        starts = y[o, 1]
        stop_now = p[o, 1] < onset_threshold
        at_pause["onset"] = {"n": int(o.sum()), "speech_stopped_at_once_rate":
                             round(float(stop_now[starts == 0].float().mean()), 4) if (starts == 0).any() else None,
                             "backchannels_stopped_at_once_rate":
                             round(float(stop_now[starts == 1].float().mean()), 4) if (starts == 1).any() else None}
        return at_pause

    summary = {"data": str(data), "examples": {"train": len(tr), "dev": len(dev), "held_out": len(held)},
               "epochs": epochs, "best_epoch": best[2], "lr": lr, "seed": seed,
               "train_seconds": round(time.perf_counter() - started, 1),
               "params": sum(p.numel() for p in net.parameters()),
               "thresholds": {"finished": thresholds[0], "backchannel": thresholds[1], "onset": onset_threshold},
               "dev": report(p_dev, y_dev, o_dev), "held_out": report(p_held, y_held, o_held)}
    save_turn_head(net, out, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m s2s.training.turn_head", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a folder built by python -m s2s.data.turns")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-false-finished", type=float, default=0.05)
    p.add_argument("--max-false-backchannel", type=float, default=0.05)
    p.add_argument("--max-onset-stop", type=float, default=0.1)
    args = p.parse_args(argv)
    if args.epochs < 1 or not 0 < args.lr < 1:
        p.error(f"--epochs must be >= 1 and --lr in (0, 1), got {args.epochs} and {args.lr}")
    for name in ("max_false_finished", "max_false_backchannel", "max_onset_stop"):
        if not 0 < getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be in (0, 1), got {getattr(args, name)}")
    try:
        summary = train(args.data, args.out, epochs=args.epochs, lr=args.lr, seed=args.seed,
                        max_false_finished=args.max_false_finished, max_false_backchannel=args.max_false_backchannel,
                        max_onset_stop=args.max_onset_stop)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
