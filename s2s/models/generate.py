"""Autoregressive generation of reply codes: static KV cache, prefill, decode_step, sampling.

    state = Session.allocate(model, batch=1, max_steps=...)   # preallocated self-attn caches
    logits = prefill(model, prompt, state, features)  # encode the prompt, cross K/V once, BOS step
    logits = decode_step(model, tokens, pos, state)   # one step; the only function compiled

generate() drives them through the delay pattern and yields each reply frame [K] as soon as
all its codebooks are known. Greedy generation with the cache equals greedy generation by full
recomputation (tests/test_generate.py checks it).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from s2s.models import patterns
from s2s.models.model import S2SModel


@dataclass
class Session:
    """Per-reply inference state: self-attention caches [B, H, L, D/H] and the prompt's cross K/V."""

    caches: list[tuple[torch.Tensor, torch.Tensor]]
    cross_kvs: list[tuple[torch.Tensor, torch.Tensor]]
    causal: torch.Tensor  # [L, L] bool, row p = the cache slots step p may attend to
    # static: attend over the whole cache with a mask (fixed shapes, for torch.compile);
    # otherwise slice the cache to the filled part (much faster in eager mode on the CPU).
    static: bool = False

    @classmethod
    def allocate(cls, model: S2SModel, batch: int, max_steps: int, static: bool = False) -> "Session":
        cfg = model.cfg
        p = model.heads
        shape = (batch, cfg.n_head, max_steps, cfg.d_model // cfg.n_head)
        dtype = torch.bfloat16 if p.device.type == "cuda" else p.dtype
        caches = [
            (torch.zeros(shape, dtype=dtype, device=p.device), torch.zeros(shape, dtype=dtype, device=p.device))
            for _ in range(cfg.n_layer)
        ]
        causal = torch.ones(max_steps, max_steps, dtype=torch.bool, device=p.device).tril()
        return cls(caches=caches, cross_kvs=[], causal=causal, static=static)

    @property
    def max_steps(self) -> int:
        return self.causal.shape[0]


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def prefill(model: S2SModel, prompt: torch.Tensor | None, session: Session,
            features: torch.Tensor | None = None) -> torch.Tensor:
    """prompt codes [B, K, S] and/or features [B, S', D] (what the model's front-end hears) ->
    logits [B, K, V] for reply step 0 (input: the all-BOS column)."""
    device = model.heads.device
    with autocast(device):
        memory, _ = model.encode_prompt(prompt, None, features, None)
        session.cross_kvs = model.cross_kv(memory)
    bos = patterns.special_ids(model.cfg.cardinality)["bos"]
    start = torch.full((memory.shape[0], model.cfg.n_codebooks, 1), bos, dtype=torch.long, device=device)
    return decode_step(model, start, torch.zeros(1, dtype=torch.long, device=device), session)


def decode_step(model: S2SModel, tokens: torch.Tensor, pos: torch.Tensor, session: Session):
    """tokens [B, K, 1] at position pos [1] -> logits [B, K, V] for the next step."""
    if session.static:
        caches, mask = session.caches, session.causal[pos][None, None]  # mask [1, 1, T, L]
    else:
        end = int(pos[-1]) + 1
        caches = [(k[:, :, :end], v[:, :, :end]) for k, v in session.caches]
        mask = None if tokens.shape[-1] == 1 else session.causal[pos, :end][None, None]
    with autocast(tokens.device):
        logits = model.decode(tokens, pos, session.cross_kvs, caches=caches, self_mask=mask)
    return logits[:, :, -1].float()


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits [N, V] -> token ids [N]. temperature 0 = greedy; top_k 0 and top_p 1 = off.

    Sampling works on the sorted top-k candidates only (cheap: multinomial over k, not V).
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        values, indices = torch.topk(logits, top_k, dim=-1)  # sorted, largest first
    elif top_p < 1.0:
        values, indices = torch.sort(logits, descending=True, dim=-1)
    else:
        values, indices = logits, None
    if top_p < 1.0:
        probs = values.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # the most likely token always stays
        values = values.masked_fill(drop, float("-inf"))
    probs = values.softmax(dim=-1)
    if probs.device.type != "cpu" and generator is not None and generator.device.type == "cpu":
        probs = probs.cpu()
    choice = torch.multinomial(probs, 1, generator=generator).to(logits.device)
    return (choice if indices is None else indices.gather(-1, choice)).squeeze(-1)


def validate_sampling(temperature: float, top_k: int, top_p: float, max_frames: int | None) -> None:
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be an int >= 1, got {max_frames!r}")


class StepRules:
    """What the delay pattern allows at each step (shared by generate() and its test reference).

    Codebook k is PAD before step k; while active it takes codec codes only, except codebook 0,
    which may also end the reply with EOS (from frame min_frames on; forced at max_frames). After
    codebook 0's EOS at step E, codebook k is EOS at E + k and PAD after.
    """

    def __init__(self, n_codebooks: int, cardinality: int, max_frames: int, min_frames: int = 1):
        self.k, self.card = n_codebooks, cardinality
        self.min_frames, self.max_frames = min_frames, max_frames
        self.ids = patterns.special_ids(cardinality)
        self.eos_step: int | None = None

    def choose(self, logits: torch.Tensor, step: int, sample) -> torch.Tensor:
        """logits [K, V] for this step -> tokens [K], through `sample(masked_logits) -> [K]`."""
        masked = logits.clone()
        masked[:, self.card :] = float("-inf")
        if step >= self.min_frames and self.eos_step is None:
            masked[0, self.ids["eos"]] = logits[0, self.ids["eos"]]
        tokens = sample(masked)
        for k in range(self.k):
            if step < k:
                tokens[k] = self.ids["pad"]
            elif k == 0 and self.eos_step is None and step >= self.max_frames:
                tokens[0] = self.ids["eos"]
            elif self.eos_step is not None and step >= self.eos_step + k:
                tokens[k] = self.ids["eos"] if step == self.eos_step + k else self.ids["pad"]
        if self.eos_step is None and int(tokens[0]) == self.ids["eos"]:
            self.eos_step = step
        return tokens

    def done(self, step: int) -> bool:
        return self.eos_step is not None and step >= self.eos_step + self.k - 1

    def frame_ready(self, step: int) -> int | None:
        """Index of the frame completed by `step`, or None."""
        frame = step - self.k + 1
        if frame < 0 or (self.eos_step is not None and frame >= self.eos_step):
            return None
        return frame


@torch.inference_mode()
def generate(
    model: S2SModel,
    prompt: torch.Tensor | None,
    *,
    features: torch.Tensor | None = None,
    max_frames: int | None = None,
    min_frames: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    compile: bool = False,
    timings: dict | None = None,
) -> Iterator[torch.Tensor]:
    """prompt codes [K, S] and/or front-end features [S', D] (as the model's config.frontend
    says) -> yields reply frames [K] (codes) as each frame completes.

    The reply has between min_frames and max_frames frames; it ends where codebook 0 emits EOS.
    compile=True runs the decode step through torch.compile(mode="reduce-overhead") over a
    static cache (worth it on a GPU; the first call compiles for tens of seconds).
    timings: a dict that receives "prefill" (ms).
    """
    cfg = model.cfg
    max_frames = cfg.max_reply_frames if max_frames is None else max_frames
    validate_sampling(temperature, top_k, top_p, max_frames)
    if not isinstance(min_frames, int) or not 1 <= min_frames <= max_frames:
        raise ValueError(f"min_frames must be an int in [1, max_frames={max_frames}], got {min_frames!r}")
    if max_frames > cfg.max_reply_frames:
        raise ValueError(f"max_frames {max_frames} exceeds the model's max_reply_frames {cfg.max_reply_frames}")
    if cfg.uses_codes:
        check_prompt(prompt, cfg)
    if cfg.uses_features:
        check_features(features, cfg)
    device = model.heads.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(int(seed))

    def sample(masked: torch.Tensor) -> torch.Tensor:
        return sample_next(masked, temperature, top_k, top_p, generator)

    rules = StepRules(cfg.n_codebooks, cardinality=cfg.cardinality, max_frames=max_frames, min_frames=min_frames)
    session = Session.allocate(model, batch=1, max_steps=max_frames + cfg.n_codebooks, static=compile)
    decode_fn = compiled_decode_step() if compile else decode_step
    t0 = time.perf_counter()
    logits = prefill(model, None if prompt is None or not cfg.uses_codes else prompt[None].to(device), session,
                     None if features is None or not cfg.uses_features else features[None].to(device))[0]
    if timings is not None:
        timings["prefill"] = (time.perf_counter() - t0) * 1e3
    history = torch.empty(cfg.n_codebooks, session.max_steps, dtype=torch.long, device=device)
    pos = torch.zeros(1, dtype=torch.long, device=device)
    codebooks = torch.arange(cfg.n_codebooks, device=device)
    step = 0
    while True:
        tokens = rules.choose(logits, step, sample)
        history[:, step] = tokens
        frame = rules.frame_ready(step)
        if frame is not None:
            yield history[codebooks, frame + codebooks].cpu()
        if rules.done(step):
            return
        pos.fill_(step + 1)
        logits = decode_fn(model, tokens.view(1, -1, 1), pos, session)[0]
        step += 1


def check_prompt(prompt: torch.Tensor, cfg) -> None:
    if prompt.dim() != 2 or prompt.shape[0] != cfg.n_codebooks:
        raise ValueError(f"prompt codes must be [K={cfg.n_codebooks}, S], got shape {tuple(prompt.shape)}")
    if prompt.shape[1] == 0:
        raise ValueError("prompt codes are empty (0 frames)")
    if prompt.dtype != torch.long or int(prompt.min()) < 0 or int(prompt.max()) >= cfg.cardinality:
        raise ValueError(
            f"prompt codes must be int64 in [0, {cfg.cardinality}), got {prompt.dtype} "
            f"in [{int(prompt.min())}, {int(prompt.max())}]"
        )


def check_features(features: torch.Tensor | None, cfg) -> None:
    if features is None:
        raise ValueError(f"this model hears front-end {cfg.frontend!r}: pass its features [S, {cfg.feature_dim}]")
    if features.dim() != 2 or features.shape[1] != cfg.feature_dim:
        raise ValueError(f"features must be [S, D={cfg.feature_dim}], got shape {tuple(features.shape)}")
    if features.shape[0] == 0:
        raise ValueError("features are empty (0 frames)")
    if not torch.isfinite(features).all():
        raise ValueError("features contain NaN or inf")


@functools.cache
def compiled_decode_step():
    """decode_step through torch.compile (static shapes: preallocated cache, pos a tensor)."""
    return torch.compile(decode_step, mode="reduce-overhead", fullgraph=True, dynamic=False)
