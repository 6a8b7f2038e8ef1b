"""Training data: a corpus manifest tokenised once by a codec (cached), then length-bucketed batches.

    rows = select_rows(read_manifest("data/corpus/manifest.jsonl"), ["accent=en-gb"])
    codes = tokenise(manifest_path, rows, codec)        # {audio path: LongTensor [K, F]}, cached
    pairs = make_pairs(rows, codes)
    for batch in epoch_batches(pairs, epoch=0, batch_frames=6000, seed=0): ...

The cache lives beside the manifest in .codes/<codec>-<hash of codec params>.safetensors:
codes of every audio file ever tokenised with that codec, so a rerun, a resume or a fine-tune on
a subset encodes nothing again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from s2s import patterns
from s2s.audio import load_audio


@dataclass
class Pair:
    id: str
    prompt: torch.Tensor  # [K, S]
    reply: torch.Tensor  # [K, T]
    intent: str = ""
    split: str = ""


@dataclass
class Batch:
    prompt: torch.Tensor  # [B, K, S] codes, padded with 0
    prompt_mask: torch.Tensor  # [B, S] True = real frame
    reply_in: torch.Tensor  # [B, K, T+K] BOS column + delayed steps, padded with PAD
    target: torch.Tensor  # [B, K, T+K] delayed steps, PAD where there is nothing to predict

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in (self.prompt, self.prompt_mask, self.reply_in, self.target)))


def select_rows(rows: list[dict], filters: list[str] | None) -> list[dict]:
    """Keep rows matching every KEY=VALUE filter (e.g. accent=en-gb); bad filters raise ValueError."""
    for f in filters or []:
        key, sep, value = f.partition("=")
        if not sep or not key:
            raise ValueError(f"filter {f!r} must look like KEY=VALUE, e.g. accent=en-gb")
        if rows and key not in rows[0]:
            raise ValueError(f"filter key {key!r} is not a manifest field; fields: {sorted(rows[0])}")
        rows = [r for r in rows if str(r.get(key)) == value]
    return rows


def cache_path(manifest: Path, codec_desc: dict) -> Path:
    digest = hashlib.sha256(json.dumps(codec_desc, sort_keys=True).encode()).hexdigest()[:12]
    return manifest.parent / ".codes" / f"{codec_desc['name']}-{digest}.safetensors"


def load_cache(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        return {}
    flat = load_file(str(path))
    return {key: value.long() for key, value in flat.items()}


def save_cache(path: Path, codes: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".codes-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    save_file({k: v.to(torch.int16).contiguous() for k, v in codes.items()}, tmp)
    os.replace(tmp, path)


_worker_codec = None


def _init_worker(codec_desc: dict) -> None:
    global _worker_codec  # one codec per worker process (process-local, set once)
    from s2s.pipeline import codec_for

    torch.set_num_threads(1)
    _worker_codec = codec_for({"codec": codec_desc})


def _encode_file(path: str) -> torch.Tensor:
    return encode_file(_worker_codec, path)


def encode_file(codec, path: str) -> torch.Tensor:
    return codec.encode(load_audio(path, codec.sample_rate), codec.sample_rate).to(torch.int16)


def tokenise(manifest: str | os.PathLike, rows: list[dict], codec, workers: int = 2) -> dict[str, torch.Tensor]:
    """Codes [K, F] of every prompt and response audio in rows (relative path -> codes), cached.

    workers > 1 encodes in that many processes (the codec is rebuilt in each from describe()).
    """
    manifest = Path(manifest)
    path = cache_path(manifest, codec.describe())
    cache = load_cache(path)
    wanted = sorted({r[k] for r in rows for k in ("prompt_audio", "response_audio")})
    todo = [p for p in wanted if p not in cache]
    if todo:
        files = [str(manifest.parent / p) for p in todo]
        bar = tqdm(total=len(todo), desc=f"tokenising with {codec.name}", unit="file")
        if workers > 1 and len(todo) > 8:
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(codec.describe(),)) as pool:
                for rel, codes in zip(todo, pool.map(_encode_file, files, chunksize=8)):
                    cache[rel] = codes.long()
                    bar.update()
        else:
            for rel, file in zip(todo, files):
                cache[rel] = encode_file(codec, file).long()
                bar.update()
        bar.close()
        save_cache(path, cache)
    return {p: cache[p] for p in wanted}


def make_pairs(rows: list[dict], codes: dict[str, torch.Tensor]) -> list[Pair]:
    return [Pair(r["id"], codes[r["prompt_audio"]], codes[r["response_audio"]], r.get("intent", ""), r.get("split", ""))
            for r in rows]


def corrupt_reply_input(batch: Batch, cardinality: int, share: float, generator: torch.Generator) -> Batch:
    """The batch with some of the reply's input codes (teacher forcing) replaced by random codes:
    each pair draws a level in [0, share) and that part of its inputs is noised; targets unchanged.
    A decoder that can continue the reply from its own past learns to ignore the prompt; with a
    noisy past (up to none of it left) it must listen to know which answer it is giving."""
    level = share * torch.rand((batch.reply_in.shape[0], 1, 1), generator=generator)  # per pair
    noisy = torch.rand(batch.reply_in.shape, generator=generator) < level
    noisy &= batch.reply_in < cardinality  # codes only: BOS and PAD stay
    random_codes = torch.randint(0, cardinality, batch.reply_in.shape, generator=generator)
    return replace(batch, reply_in=torch.where(noisy, random_codes, batch.reply_in))


def augment_prompt(prompt: torch.Tensor, cardinality: int, stretch: float, mask_spans: int,
                   generator: torch.Generator, span_frames: int = 8) -> torch.Tensor:
    """Prompt codes [K, S] -> a perturbed copy for training: time-stretched by a random rate in
    [1 - stretch, 1 + stretch] (frames dropped or repeated) and `mask_spans` random spans of up to
    `span_frames` frames replaced by random codes, so that the model learns what was said rather
    than one recording's exact frames."""
    k, s = prompt.shape
    if stretch > 0:
        rate = 1 + stretch * (2 * torch.rand((), generator=generator).item() - 1)
        length = max(1, round(s / rate))
        prompt = prompt[:, (torch.arange(length) * rate).long().clamp(max=s - 1)]
    prompt = prompt.clone()
    for _ in range(mask_spans):
        width = int(torch.randint(1, span_frames + 1, (), generator=generator))
        start = int(torch.randint(0, max(1, prompt.shape[1] - width + 1), (), generator=generator))
        span = prompt[:, start : start + width]
        span.copy_(torch.randint(0, cardinality, span.shape, generator=generator))
    return prompt


def collate(pairs: list[Pair], cardinality: int) -> Batch:
    ids = patterns.special_ids(cardinality)
    k = pairs[0].prompt.shape[0]
    s = max(p.prompt.shape[1] for p in pairs)
    steps = [patterns.build(p.reply, cardinality) for p in pairs]  # [K, T+K] each
    length = max(x.shape[1] for x in steps)
    prompt = torch.zeros(len(pairs), k, s, dtype=torch.long)
    mask = torch.zeros(len(pairs), s, dtype=torch.bool)
    target = torch.full((len(pairs), k, length), ids["pad"], dtype=torch.long)
    for i, (p, x) in enumerate(zip(pairs, steps)):
        prompt[i, :, : p.prompt.shape[1]] = p.prompt
        mask[i, : p.prompt.shape[1]] = True
        target[i, :, : x.shape[1]] = x
    bos = torch.full((len(pairs), k, 1), ids["bos"], dtype=torch.long)
    reply_in = torch.cat([bos, target[:, :, :-1]], dim=2)
    return Batch(prompt, mask, reply_in, target)


def length_batches(pairs: list[Pair], batch_frames: int) -> list[list[int]]:
    """Indices grouped by length so that batch size x (longest prompt + reply) <= batch_frames."""
    order = sorted(range(len(pairs)), key=lambda i: (pairs[i].prompt.shape[1] + pairs[i].reply.shape[1], i))
    batches, current, longest = [], [], 0
    for i in order:
        n = pairs[i].prompt.shape[1] + pairs[i].reply.shape[1]
        if current and max(longest, n) * (len(current) + 1) > batch_frames:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches


def epoch_batches(pairs: list[Pair], epoch: int, batch_frames: int, seed: int) -> list[list[int]]:
    """The length batches in an order that depends only on (seed, epoch): resumable."""
    batches = length_batches(pairs, batch_frames)
    random.Random(seed * 100_003 + epoch).shuffle(batches)
    return batches
