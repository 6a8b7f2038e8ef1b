"""Training data: a corpus manifest tokenised once by a codec and heard once by the prompt
front-end (both cached), then length-bucketed batches.

    rows = select_rows(read_manifest("data/corpus/manifest.jsonl"), ["accent=en-gb"])
    codes = tokenise(manifest_path, rows, codec)        # {audio path: LongTensor [K, F]}, cached
    feats = featurise(manifest_path, rows, frontend)    # {prompt path: Tensor [S, D]}, cached
    pairs = make_pairs(rows, codes, feats)
    for batch in epoch_batches(pairs, epoch=0, batch_frames=6000, seed=0): ...

The caches live beside the manifest: .codes/<codec>-<hash of codec params>.safetensors holds
the codes of every audio file ever tokenised with that codec, .features/<front-end>-<hash>.safetensors
the features (fp16) of every prompt ever heard by that front-end; a rerun, a resume or a
fine-tune on a subset computes nothing again.
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

from s2s.io.audio import load_audio
from s2s.io.manifest import audio_path
from s2s.models import patterns


@dataclass
class Pair:
    id: str
    prompt: torch.Tensor | None  # [K, S] codes (None when the model hears features only)
    reply: torch.Tensor  # [K, T]
    intent: str = ""
    split: str = ""
    features: torch.Tensor | None = None  # [S', D] front-end features
    teacher: torch.Tensor | None = None  # [384] the text teacher's embedding of what was said (training only)


@dataclass
class Batch:
    prompt: torch.Tensor | None  # [B, K, S] codes, padded with 0
    prompt_mask: torch.Tensor | None  # [B, S] True = real frame
    reply_in: torch.Tensor  # [B, K, T+K] BOS column + delayed steps, padded with PAD
    target: torch.Tensor  # [B, K, T+K] delayed steps, PAD where there is nothing to predict
    features: torch.Tensor | None = None  # [B, S', D], padded with 0
    features_mask: torch.Tensor | None = None  # [B, S'] True = real frame
    teacher: torch.Tensor | None = None  # [B, 384] (every pair has one, or None)

    def to(self, device) -> "Batch":
        return Batch(*(None if t is None else t.to(device, non_blocking=True)
                       for t in (self.prompt, self.prompt_mask, self.reply_in, self.target, self.features,
                                 self.features_mask, self.teacher)))

    def model_inputs(self) -> dict:
        """Keyword arguments of S2SModel.forward / encode_prompt for the prompt side."""
        return {"prompt": self.prompt, "prompt_mask": self.prompt_mask, "features": self.features,
                "features_mask": self.features_mask}


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


def cache_path(manifest: Path, desc: dict, folder: str = ".codes") -> Path:
    """Where the cache of a codec (or, folder=".features", a front-end) described by desc lives."""
    digest = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]
    return manifest.parent / folder / f"{desc['name']}-{digest}.safetensors"


def read_cache(path: Path) -> dict[str, torch.Tensor]:
    """A cache file's tensors ({} if there is none); a damaged one raises ValueError naming it."""
    if not path.is_file():
        return {}
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or garbled files
        raise ValueError(f"the cache {path} cannot be read ({type(e).__name__}: {e}); delete it and run "
                         f"again to rebuild it") from None


def load_cache(path: Path) -> dict[str, torch.Tensor]:
    return {key: value.long() for key, value in read_cache(path).items()}


def save_cache(path: Path, tensors: dict[str, torch.Tensor], dtype: torch.dtype = torch.int16) -> None:
    """Write a cache atomically (temporary sibling, then rename), its tensors cast to dtype."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.parent.name.strip('.')}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)


_worker_codec = None


def _init_worker(codec_desc: dict) -> None:
    global _worker_codec  # one codec per worker process (process-local, set once)
    from s2s.codecs.codec import codec_for

    torch.set_num_threads(1)
    _worker_codec = codec_for({"codec": codec_desc})


def _encode_file(path: str) -> torch.Tensor:
    return encode_file(_worker_codec, path)


def encode_file(codec, path: str) -> torch.Tensor:
    return codec.encode(load_audio(path, codec.sample_rate), codec.sample_rate).to(torch.int16)


def tokenise(manifest: str | os.PathLike, rows: list[dict], codec, workers: int = 2,
             keys: tuple[str, ...] = ("prompt_audio", "response_audio")) -> dict[str, torch.Tensor]:
    """Codes [K, F] of every audio in rows under `keys` (relative path -> codes), cached.

    workers > 1 encodes in that many processes (the codec is rebuilt in each from describe()).
    keys=("response_audio",) encodes the replies only (a model that hears features only).
    """
    manifest = Path(manifest)
    # The analysis can change without the codes' meaning changing (WORLD-VQ's F0 tracker):
    # checkpoints still pair, but codes made by another analysis must not be reused.
    path = cache_path(manifest, {**codec.describe(), "analysis": getattr(codec, "analysis", None)})
    cache = load_cache(path)
    wanted = sorted({r[k] for r in rows for k in keys})
    todo = [p for p in wanted if p not in cache]
    if todo:
        files = [str(audio_path(manifest, p)) for p in todo]
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


def featurise(manifest: str | os.PathLike, rows: list[dict], frontend) -> dict[str, torch.Tensor]:
    """Front-end features [S, D] of every prompt audio in rows (relative path -> float32), cached
    in fp16, in one process."""
    manifest = Path(manifest)
    path = cache_path(manifest, frontend.describe(), folder=".features")
    cache = read_cache(path)
    wanted = sorted({r["prompt_audio"] for r in rows})
    todo = [p for p in wanted if p not in cache]
    if todo:
        sr = 16000
        for rel in tqdm(todo, desc=f"features of {frontend.name}", unit="prompt"):
            try:
                feats = frontend.features(load_audio(str(audio_path(manifest, rel)), sr), sr)
            except ValueError as e:
                raise ValueError(f"{manifest}: prompt {rel!r}: {e}") from None
            cache[rel] = feats.to(torch.float16)
        save_cache(path, cache, torch.float16)
    return {p: cache[p].float() for p in wanted}


def make_pairs(rows: list[dict], codes: dict[str, torch.Tensor], features: dict[str, torch.Tensor] | None = None,
               use_codes: bool = True, teacher: dict[str, torch.Tensor] | None = None) -> list[Pair]:
    """Pairs of (prompt codes and/or features, reply codes); use_codes=False leaves the prompt
    codes out (a features-only model); teacher: {prompt_text: embedding} (s2s/training/teacher.py)."""
    return [Pair(r["id"], codes[r["prompt_audio"]] if use_codes else None, codes[r["response_audio"]],
                 r.get("intent", ""), r.get("split", ""),
                 None if features is None else features[r["prompt_audio"]],
                 None if teacher is None else teacher[r["prompt_text"]])
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
    prompt = stretch_time(prompt, stretch, generator).clone()
    for start, width in mask_positions(prompt.shape[1], mask_spans, span_frames, generator):
        span = prompt[:, start : start + width]
        span.copy_(torch.randint(0, cardinality, span.shape, generator=generator))
    return prompt


def augment_features(features: torch.Tensor, stretch: float, mask_spans: int, generator: torch.Generator,
                     span_frames: int = 5) -> torch.Tensor:
    """Front-end features [S, D] -> a perturbed copy: the same time stretch as augment_prompt,
    and `mask_spans` spans of up to `span_frames` frames set to zero (SpecAugment-style)."""
    features = stretch_time(features.T, stretch, generator).T.clone()
    for start, width in mask_positions(features.shape[0], mask_spans, span_frames, generator):
        features[start : start + width] = 0
    return features


def stretch_time(x: torch.Tensor, stretch: float, generator: torch.Generator) -> torch.Tensor:
    """[C, S] -> [C, S'] at a random rate in [1 - stretch, 1 + stretch] (frames dropped or repeated)."""
    if stretch <= 0:
        return x
    s = x.shape[1]
    rate = 1 + stretch * (2 * torch.rand((), generator=generator).item() - 1)
    return x[:, (torch.arange(max(1, round(s / rate))) * rate).long().clamp(max=s - 1)]


def mask_positions(length: int, spans: int, span_frames: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """`spans` random (start, width) spans of 1..span_frames frames inside [0, length)."""
    out = []
    for _ in range(spans):
        width = int(torch.randint(1, span_frames + 1, (), generator=generator))
        start = int(torch.randint(0, max(1, length - width + 1), (), generator=generator))
        out.append((start, width))
    return out


def pad_time(seqs: list[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors with time on `dim` (0 or 1) -> stacked and zero-padded [B, ...], mask [B, S_max]."""
    s = max(x.shape[dim] for x in seqs)
    out = seqs[0].new_zeros((len(seqs),) + tuple(s if d == dim else n for d, n in enumerate(seqs[0].shape)))
    mask = torch.zeros(len(seqs), s, dtype=torch.bool)
    for i, x in enumerate(seqs):
        out[i].narrow(dim, 0, x.shape[dim]).copy_(x)
        mask[i, : x.shape[dim]] = True
    return out, mask


def crop_replies(pairs: list[Pair], frames: int) -> list[Pair]:
    """Pairs with replies cut to their first `frames` frames, for training on the reply's onset
    (collate with max_steps=frames, so that the cut is not taught as an end: no EOS)."""
    return [replace(p, reply=p.reply[:, :frames]) for p in pairs]


def collate(pairs: list[Pair], cardinality: int, max_steps: int | None = None) -> Batch:
    """Pairs -> a padded batch; max_steps keeps only the first steps of the reply (see crop_replies)."""
    ids = patterns.special_ids(cardinality)
    steps = [patterns.build(p.reply, cardinality) for p in pairs]  # [K, T+K] each
    target, _ = pad_time(steps, dim=1)
    for i, x in enumerate(steps):
        target[i, :, x.shape[1] :] = ids["pad"]
    prompt = mask = features = features_mask = None
    if pairs[0].prompt is not None:
        prompt, mask = pad_time([p.prompt for p in pairs], dim=1)
    if pairs[0].features is not None:
        features, features_mask = pad_time([p.features for p in pairs], dim=0)
    bos = torch.full((len(pairs), target.shape[1], 1), ids["bos"], dtype=torch.long)
    reply_in = torch.cat([bos, target[:, :, :-1]], dim=2)
    if max_steps is not None:
        reply_in, target = reply_in[..., :max_steps], target[..., :max_steps]
    teacher = torch.stack([p.teacher for p in pairs]) if all(p.teacher is not None for p in pairs) else None
    return Batch(prompt, mask, reply_in, target, features, features_mask, teacher)


def prompt_length(pair: Pair) -> int:
    """The prompt's frames as the encoder sees them (codes and features together)."""
    return sum(x.shape[i] for x, i in ((pair.prompt, 1), (pair.features, 0)) if x is not None)


def length_batches(pairs: list[Pair], batch_frames: int) -> list[list[int]]:
    """Indices grouped by length so that batch size x (longest prompt + reply) <= batch_frames."""
    order = sorted(range(len(pairs)), key=lambda i: (prompt_length(pairs[i]) + pairs[i].reply.shape[1], i))
    batches, current, longest = [], [], 0
    for i in order:
        n = prompt_length(pairs[i]) + pairs[i].reply.shape[1]
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
