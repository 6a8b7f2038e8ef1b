"""WORLD-VQ tables trained by k-means on a corpus, and the codec's commands.

    python -m s2s.codecs.world_vq train --data data/corpus/manifest.jsonl --out assets/world_vq/tables.npz
    python -m s2s.codecs.world_vq speed                                        # encode/decode x real time
    python -m eval.codec_quality [--data assets/eval/manifest.jsonl]           # WER / MCD / log-F0 RMSE

Training: the mel-cepstra and band aperiodicities of the train split (plus one altered copy of
every file: band-limited to 16 kHz, a noise floor, or warped formants) -> residual k-means in
the LAYOUT of s2s/codecs/world_vq.py. Resynthesis quality is scored with eval's metrics, so it is
eval's command (`python -m eval.codec_quality`): the library never imports eval.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from s2s.codecs import world_vq
from s2s.codecs.world import ORDER, SAMPLE_RATE, Features, analyse
from s2s.codecs.world_vq import DEFAULT_TABLES, N_CODES, ROOT, W_BAP, WorldVQCodec, _nearest, _sha256, save_tables
from s2s.io.audio import load_audio, resample
from s2s.io.manifest import audio_path, read_manifest


def kmeans(x: np.ndarray, k: int = N_CODES, iters: int = 15, seed: int = 0, log=print) -> np.ndarray:
    """Lloyd k-means of x [N, D] with k-means++ init on a subsample -> float32 [k, D].

    Deterministic for a seed. An empty cluster is re-seeded with the worst-fit point.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) < k:
        raise ValueError(f"k-means needs at least k={k} frames, got {len(x)}")
    rng = np.random.default_rng(seed)
    sub = x[rng.choice(len(x), min(len(x), 20 * k), replace=False)]
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = sub[rng.integers(len(sub))]
    d_min = ((sub - centres[0]) ** 2).sum(axis=1)
    for j in range(1, k):  # k-means++: next centre drawn in proportion to squared distance
        total = float(d_min.sum())  # 0 once every distinct point is a centre (duplicates)
        centres[j] = sub[rng.choice(len(sub), p=d_min / total) if total > 0 else rng.integers(len(sub))]
        d_min = np.minimum(d_min, ((sub - centres[j]) ** 2).sum(axis=1))
    for it in range(iters):
        idx, dist = np.empty(len(x), np.int64), np.empty(len(x), np.float32)
        norms = (centres**2).sum(axis=1)
        for s in range(0, len(x), 32768):  # chunks keep the [N, k] distance matrix small
            d = norms[None, :] - 2.0 * (x[s : s + 32768] @ centres.T)
            idx[s : s + 32768] = np.argmin(d, axis=1)
            dist[s : s + 32768] = d[np.arange(len(d)), idx[s : s + 32768]]
        dist += (x**2).sum(axis=1)
        count = np.bincount(idx, minlength=k)
        sums = np.stack([np.bincount(idx, weights=x[:, j], minlength=k) for j in range(x.shape[1])], axis=1)
        full = count > 0
        centres[full] = (sums[full] / count[full, None]).astype(np.float32)
        if (~full).any():
            centres[~full] = x[np.argsort(-dist)[: int((~full).sum())]]
        log(f"  k-means iter {it + 1}/{iters}: mse {float(dist.mean()):.4f}, empty {int((~full).sum())}")
    return centres


def _warp_matrix(beta: float) -> np.ndarray:
    """[40, 40] all-pass frequency warp of a mel-cepstrum (formants move by ~beta: a new 'voice')."""
    import pysptk  # already imported, its warnings silenced, by s2s.codecs.world
    return np.stack([pysptk.freqt(np.eye(ORDER + 1)[j], ORDER, beta) for j in range(ORDER + 1)])


def _augment(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Input conditions the synthetic corpus lacks: band-limited (16 kHz) audio, a noise floor."""
    if kind == "band16k":
        return resample(resample(x.astype(np.float32), SAMPLE_RATE, 16000), 16000, SAMPLE_RATE)[: len(x)]
    if kind == "noise":
        rms = math.sqrt(float(np.mean(x**2))) + 1e-9
        return x + rng.standard_normal(len(x)) * rms * 10 ** (-rng.uniform(25.0, 45.0) / 20.0)
    raise ValueError(f"unknown augmentation {kind!r}; valid: band16k, noise")


def training_files(manifest: Path, split: str = "train") -> list[Path]:
    """Prompt and (unique) response audio of the manifest's rows in split."""
    rows = [r for r in read_manifest(manifest, check_audio=False) if r["split"] == split]
    if not rows:
        raise ValueError(f"{manifest} has no rows with split={split!r}")
    files = [audio_path(manifest, r["prompt_audio"]) for r in rows]
    files += sorted({audio_path(manifest, r["response_audio"]) for r in rows})
    return files


def collect_features(files: list[Path], max_frames: int, seed: int, augment: bool = True, log=print):
    """Analyse files in a seeded random order until max_frames -> (mc [N, 40], bap [N, 3]).

    With augment, every file also gives one altered copy (band-limited, noisy, or a
    frequency-warped mel-cepstrum, in turn).
    """
    rng = np.random.default_rng(seed)
    kinds = ["band16k", "noise", "warp"]
    mcs, baps, total = [], [], 0
    for n, i in enumerate(rng.permutation(len(files))):
        x = load_audio(files[i], SAMPLE_RATE).numpy().astype(np.float64)
        feats = [analyse(x)]
        if augment:
            kind = kinds[n % len(kinds)]
            if kind == "warp":
                f = feats[0]
                feats.append(Features(f0=f.f0, mc=f.mc @ _warp_matrix(rng.uniform(-0.08, 0.08)), bap=f.bap))
            else:
                feats.append(analyse(_augment(x, kind, rng)))
        for f in feats:
            mcs.append(f.mc)
            baps.append(f.bap)
            total += len(f.mc)
        if (n + 1) % 100 == 0:
            log(f"  analysed {n + 1} files, {total} frames")
        if total >= max_frames:
            break
    mc, bap = np.concatenate(mcs)[:max_frames], np.concatenate(baps)[:max_frames]
    return mc.astype(np.float32), bap.astype(np.float32)


def train_tables(mc: np.ndarray, bap: np.ndarray, iters: int = 15, seed: int = 0, log=print):
    """Residual k-means: shape stage 1, stage 2, then [c0, W_BAP * bap, shape residual] -> (mc0, mc1, cb3)."""
    log(f"stage 1 (shape c1..c39) on {len(mc)} frames")
    shape = np.ascontiguousarray(mc[:, 1:])
    mc0 = kmeans(shape, iters=iters, seed=seed, log=log)
    r = shape - mc0[_nearest(shape, mc0, (mc0**2).sum(1))]
    log("stage 2 (residual)")
    mc1 = kmeans(r, iters=iters, seed=seed + 1, log=log)
    r = r - mc1[_nearest(r, mc1, (mc1**2).sum(1))]
    log("codebook 3 (c0 + band aperiodicity + shape residual)")
    cb3 = kmeans(np.concatenate([mc[:, :1], W_BAP * bap, r], axis=1), iters=iters, seed=seed + 2, log=log)
    return mc0, mc1, cb3


def cmd_train(args) -> None:
    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", flush=True)  # noqa: E731
    files = training_files(Path(args.data), split=args.split)
    log(f"{len(files)} files in split {args.split!r} of {args.data}; analysing up to {args.max_frames} frames")
    mc, bap = collect_features(files, args.max_frames, args.seed, augment=not args.no_augment, log=log)
    mc0, mc1, cb3 = train_tables(mc, bap, iters=args.iters, seed=args.seed, log=log)
    out = save_tables(args.out, mc0, mc1, cb3)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, sha256 {_sha256(out)[:16]})")


def arctic_path() -> Path:
    """CMU ARCTIC a0007 (real speech, 16 kHz): the bundled copy, else pysptk's."""
    import pysptk.util  # already imported, its warnings silenced, by s2s.codecs.world

    bundled = ROOT / "assets" / "eval" / "arctic_a0007.wav"
    return bundled if bundled.is_file() else Path(pysptk.util.example_audio_file())


def cmd_speed(args) -> None:
    codec = WorldVQCodec(args.tables)
    x = load_audio(arctic_path(), SAMPLE_RATE).numpy()
    x = np.tile(x, max(1, math.ceil(args.seconds * SAMPLE_RATE / len(x))))[: int(args.seconds * SAMPLE_RATE)]
    seconds = len(x) / SAMPLE_RATE
    enc, dec = [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        codes = codec.encode(x, SAMPLE_RATE)
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        codec.decode(codes)
        dec.append(time.perf_counter() - t)
    e, d = float(np.median(enc)), float(np.median(dec))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"WORLD-VQ speed on {seconds:.1f} s of speech, median of {args.runs} runs "
          f"({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load:.1f}):")
    print(f"  encode  {e * 1000:7.1f} ms  {seconds / e:6.1f}x real time")
    print(f"  decode  {d * 1000:7.1f} ms  {seconds / d:6.1f}x real time")
    print(f"  both    {(e + d) * 1000:7.1f} ms  {seconds / (e + d):6.1f}x real time")


def main(argv: list[str] | None = None) -> None:
    """The commands of `python -m s2s.codecs.world_vq`: train, speed."""
    p = argparse.ArgumentParser(prog="python -m s2s.codecs.world_vq", description=world_vq.__doc__.split("\n")[0],
                                epilog="resynthesis quality (WER / MCD / log-F0 RMSE): python -m eval.codec_quality")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="k-means tables from a corpus manifest's train split")
    t.add_argument("--data", default="data/corpus/manifest.jsonl")
    t.add_argument("--out", default=str(DEFAULT_TABLES))
    t.add_argument("--split", default="train")
    t.add_argument("--max-frames", type=int, default=200_000)
    t.add_argument("--iters", type=int, default=15)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-augment", action="store_true", help="skip the band-limited/noisy/warped copies")
    sub.add_parser("quality", help="moved: python -m eval.codec_quality", add_help=False, prefix_chars="\0")
    s = sub.add_parser("speed", help="encode/decode real-time factors")
    s.add_argument("--tables", default=None)
    s.add_argument("--seconds", type=float, default=10.0)
    s.add_argument("--runs", type=int, default=5)
    args, rest = p.parse_known_args(argv)
    if args.command == "quality":  # an old spelling: say where it went, with the arguments given
        p.error("quality scores with eval's metrics and is eval's command now: "
                f"python -m eval.codec_quality {' '.join(rest)}".rstrip())
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    {"train": cmd_train, "speed": cmd_speed}[args.command](args)
