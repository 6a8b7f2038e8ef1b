"""The speech-to-speech transformer: a GPT over reply codes that cross-attends to the prompt.

Input at each step is the sum of the K codebook embeddings of the previous step (delay pattern,
see patterns.py) plus a sinusoidal position; decoder blocks are causal self-attention over the
reply, cross-attention to the prompt memory, and an MLP; K output heads give the next token of
every codebook. The prompt memory comes from what the config's front-end hears (s2s/models/frontend.py):
- "codes": the prompt's codec codes, embedded like the reply's;
- "whisper_tiny_en": a pretrained speech encoder's features, projected to d_model;
- "whisper_tiny_en+codes": both, concatenated along time, each with its own type embedding;
each with sinusoidal positions, then the prompt-encoder layers, minus the mean over time.
Shapes: prompt codes [B, K, S], features [B, S', D_in], reply steps [B, K, T], logits
[B, K, T, V] with V = cardinality + 3 (codes, then BOS, PAD, EOS).

    python -m s2s.models.model            # table of the presets: layers, width, heads, parameters
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from s2s.models import patterns

MODEL_FRONTENDS = ("codes", "whisper_tiny_en", "whisper_base", "whisper_tiny_en+codes")


@dataclass
class ModelConfig:
    n_codebooks: int = 4
    cardinality: int = 1024
    d_model: int = 256
    n_layer: int = 8
    n_head: int = 8
    d_ff: int = 1024
    n_encoder_layer: int = 0
    max_prompt_frames: int = 4500  # 60 s at 75 frames/s
    max_reply_frames: int = 1500  # 20 s at 75 frames/s
    frontend: str = "codes"  # see MODEL_FRONTENDS
    feature_dim: int = 0  # the front-end's feature width (0 for "codes")
    max_feature_frames: int = 3000  # 60 s at 50 frames/s
    dropout: float = 0.0
    preset: str = "custom"
    meaning_dim: int = 0  # > 0: a head pools the prompt memory to this width (the text teacher's, 384)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or value < 0):
                raise ValueError(f"ModelConfig.{f.name} must be a non-negative int, got {value!r}")
        if self.d_model % self.n_head or self.n_head == 0:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.frontend not in MODEL_FRONTENDS:
            raise ValueError(f"frontend must be one of {list(MODEL_FRONTENDS)}, got {self.frontend!r}")
        if self.uses_features != (self.feature_dim > 0):
            raise ValueError(f"feature_dim must be > 0 exactly when the front-end has features "
                             f"(frontend {self.frontend!r}, feature_dim {self.feature_dim})")

    @property
    def uses_codes(self) -> bool:
        return "codes" in self.frontend.split("+")

    @property
    def uses_features(self) -> bool:
        return self.frontend != "codes"

    @property
    def vocab_size(self) -> int:
        return patterns.vocab_size(self.cardinality)

    @property
    def max_steps(self) -> int:
        """Reply steps the position table covers: frames + the K-step delay tail."""
        return self.max_reply_frames + self.n_codebooks

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


# Parameter counts within 10% of the name (python -m s2s.models.model prints them). 300m is the seed's
# model: 12 decoder layers. 10m puts half its layers in the prompt encoder, which runs once per
# turn, so that each reply frame costs 3 decoder layers: >= 4x real time on 2 CPU cores (4 + 2
# layers measured ~290 frames/s, 3 + 3 ~400), and the prompt gets more listening capacity.
PRESETS: dict[str, ModelConfig] = {
    "10m": ModelConfig(d_model=320, n_layer=3, n_head=5, d_ff=1024, n_encoder_layer=3, preset="10m"),
    "50m": ModelConfig(d_model=640, n_layer=7, n_head=10, d_ff=2560, preset="50m"),
    "100m": ModelConfig(d_model=768, n_layer=10, n_head=12, d_ff=3072, preset="100m"),
    "300m": ModelConfig(d_model=1280, n_layer=12, n_head=20, d_ff=4608, preset="300m"),
}


def preset_config(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {list(PRESETS)}")
    return ModelConfig(**{**PRESETS[name].to_dict(), **overrides})


def sinusoids(length: int, dim: int) -> torch.Tensor:
    """[length, dim] fixed sinusoidal positions (Vaswani et al.)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class Attention(nn.Module):
    """Multi-head attention; keys/values come from `source` (self: x itself, cross: the prompt)."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key_value = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # [B, T, D] -> [B, H, T, D/H]
        return x.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.key_value(source).chunk(2, dim=-1)
        return self.heads(k), self.heads(v)

    def attend(self, x, k, v, mask=None, is_causal=False) -> torch.Tensor:
        q = self.heads(self.query(x))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        b, h, t, hd = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * hd))


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff)
        self.proj = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class EncoderBlock(nn.Module):
    """Bidirectional self-attention + MLP over the prompt."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_head)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg.d_model, cfg.d_ff)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        h = self.ln1(x)
        k, v = self.attn.project_kv(h)
        x = x + self.drop(self.attn.attend(h, k, v, mask=key_mask))
        return x + self.drop(self.mlp(self.ln2(x)))


class DecoderBlock(nn.Module):
    """Causal self-attention over the reply, cross-attention to the prompt, MLP."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.self_attn = Attention(cfg.d_model, cfg.n_head)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.cross_attn = Attention(cfg.d_model, cfg.n_head)
        self.ln3 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg.d_model, cfg.d_ff)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cross_kv, cross_mask, cache=None, pos=None, self_mask=None):
        """x [B, T, D]; cross_kv: (k, v) [B, H, S, D/H]; cache: KV tensors written at `pos`."""
        h = self.ln1(x)
        k, v = self.self_attn.project_kv(h)
        if cache is None:
            y = self.self_attn.attend(h, k, v, is_causal=True)
        else:
            k_cache, v_cache = cache
            if pos.dim() == 2:  # [B, 1]: each row at its own step (sessions batched by s2s/serve/scheduler.py)
                rows = torch.arange(k.shape[0], device=k.device)
                k_cache[rows, :, pos[:, 0]] = k[:, :, 0].to(k_cache.dtype)
                v_cache[rows, :, pos[:, 0]] = v[:, :, 0].to(v_cache.dtype)
            else:
                k_cache.index_copy_(2, pos, k.to(k_cache.dtype))
                v_cache.index_copy_(2, pos, v.to(v_cache.dtype))
            y = self.self_attn.attend(h, k_cache, v_cache, mask=self_mask)
        x = x + self.drop(y)
        x = x + self.drop(self.cross_attn.attend(self.ln2(x), *cross_kv, mask=cross_mask))
        return x + self.drop(self.mlp(self.ln3(x)))


class S2SModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        k, v, d = cfg.n_codebooks, cfg.vocab_size, cfg.d_model
        # One table for all codebooks: codebook k's token i is row k * V + i; a step's input is
        # the sum of its K rows.
        self.embedding = nn.Embedding(k * v, d)
        self.register_buffer("codebook_offsets", torch.arange(k) * v, persistent=False)
        self.register_buffer(
            "positions", sinusoids(max(cfg.max_prompt_frames, cfg.max_feature_frames, cfg.max_steps), d),
            persistent=False,
        )
        if cfg.uses_features:
            self.feature_proj = nn.Linear(cfg.feature_dim, d)
        if cfg.uses_features and cfg.uses_codes:
            self.prompt_type = nn.Parameter(torch.zeros(2, d))  # [features, codes] type embeddings
        self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_encoder_layer))
        self.prompt_norm = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.heads = nn.Parameter(torch.empty(k, v, d))  # K output heads, [K, V, D]
        if cfg.meaning_dim:  # trained towards the text teacher (s2s/training/teacher.py); unused by generation
            self.meaning_score = nn.Linear(d, 1)
            self.meaning_proj = nn.Linear(d, cfg.meaning_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        residual_std = 0.02 / math.sqrt(2 * max(self.cfg.n_layer, 1))
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            std = residual_std if name.endswith(("out.weight", "proj.weight")) else 0.02
            nn.init.normal_(p, mean=0.0, std=std)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        # The sum of the K codebook embeddings gets unit variance per dimension, like the
        # sinusoidal positions it is added to (variance 0.5): at std 0.02 the positions drowned
        # the prompt's content and a 10m model learned to ignore what it was asked.
        nn.init.normal_(self.embedding.weight, mean=0.0, std=1.0 / math.sqrt(self.cfg.n_codebooks))
        # Projected features get unit variance too (the front-end's features are layer-normed).
        if self.cfg.uses_features:
            nn.init.normal_(self.feature_proj.weight, mean=0.0, std=1.0 / math.sqrt(self.cfg.feature_dim))
        if self.cfg.uses_features and self.cfg.uses_codes:
            nn.init.normal_(self.prompt_type, mean=0.0, std=0.5)

    def embed(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tokens [B, K, T], pos [T] (or [B, 1]: a position per row) -> [B, T, D]."""
        x = self.embedding(tokens + self.codebook_offsets[None, :, None]).sum(dim=1)
        return self.drop(x + self.positions[pos])

    def prompt_inputs(self, prompt, prompt_mask, features, features_mask):
        """The encoder's input [B, S_total, D] and its mask [B, S_total] (or None): the embedded
        codes and/or the projected features, each with positions (and a type when both)."""
        cfg = self.cfg
        parts = []
        if cfg.uses_features:
            if features is None:
                raise ValueError(f"this model hears front-end {cfg.frontend!r}: pass its features [B, S, {cfg.feature_dim}]")
            if features.dim() != 3 or features.shape[-1] != cfg.feature_dim:
                raise ValueError(f"features must be [B, S, {cfg.feature_dim}], got {tuple(features.shape)}")
            s = features.shape[1]
            if s > cfg.max_feature_frames:
                raise ValueError(f"prompt has {s} feature frames; this model takes at most {cfg.max_feature_frames}")
            x = self.feature_proj(features.to(self.feature_proj.weight.dtype)) + self.positions[:s]
            parts.append((x, features_mask, 0))
        if cfg.uses_codes:
            if prompt is None:
                raise ValueError("this model hears the prompt's codec codes: pass them [B, K, S]")
            s = prompt.shape[-1]
            if s > cfg.max_prompt_frames:
                raise ValueError(f"prompt has {s} frames; this model takes at most {cfg.max_prompt_frames}")
            x = self.embedding(prompt + self.codebook_offsets[None, :, None]).sum(dim=1) + self.positions[:s]
            parts.append((x, prompt_mask, 1))
        if len(parts) == 1:
            return self.drop(parts[0][0]), parts[0][1]
        xs, masks = [], []
        for x, mask, kind in parts:
            xs.append(x + self.prompt_type[kind])
            masks.append(torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask)
        return self.drop(torch.cat(xs, dim=1)), torch.cat(masks, dim=1)

    def encode_prompt(self, prompt=None, prompt_mask=None, features=None, features_mask=None):
        """prompt codes [B, K, S] and/or features [B, S', D_in] (+ masks, True = real frame) ->
        (memory [B, S_total, D], memory mask [B, S_total] or None)."""
        x, mask = self.prompt_inputs(prompt, prompt_mask, features, features_mask)
        key_mask = None if mask is None else mask[:, None, None, :]
        for block in self.encoder:
            x = block(x, key_mask)
        # Subtract the prompt's mean over its real frames (cepstral-mean-normalisation style):
        # what is the same in every frame says nothing about what was asked, and without this a
        # large constant grew in the memory, drowned the content, and the decoder stopped
        # listening (16 prompts were learnt in 80 steps with it, 62% of them after 200 without).
        if mask is None:
            mean = x.mean(dim=1, keepdim=True)
        else:
            weights = mask[..., None].to(x.dtype)
            mean = (x * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp(min=1)
        return self.prompt_norm(x - mean), mask

    def meaning(self, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The prompt memory [B, S, D] (mask [B, S], True = real frame) attention-pooled and projected
        -> [B, meaning_dim]: what was asked, in the text teacher's space (cfg.meaning_dim > 0)."""
        if not self.cfg.meaning_dim:
            raise ValueError("this model has no meaning head (trained without --teacher)")
        score = self.meaning_score(memory).squeeze(-1)  # [B, S]
        if mask is not None:
            score = score.masked_fill(~mask, float("-inf"))
        pooled = (score.softmax(dim=-1)[..., None] * memory).sum(dim=1)
        return self.meaning_proj(pooled)

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, the cross-attention keys/values of the prompt (computed once)."""
        return [block.cross_attn.project_kv(memory) for block in self.blocks]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, K, T, V]."""
        b, t, _ = x.shape
        k, v, d = self.heads.shape
        logits = F.linear(self.ln_f(x), self.heads.view(k * v, d))  # one matmul for all K heads
        return logits.view(b, t, k, v).transpose(1, 2)

    def decode(self, steps, pos, cross_kvs, cross_mask=None, caches=None, self_mask=None):
        """steps [B, K, T] at positions pos [T] -> logits [B, K, T, V]. pos [B, 1]: one step,
        each row at its own position (its KV cache slot written there; self_mask says what it sees)."""
        x = self.embed(steps, pos)
        for i, block in enumerate(self.blocks):
            cache = None if caches is None else caches[i]
            x = block(x, cross_kvs[i], cross_mask, cache=cache, pos=pos, self_mask=self_mask)
        return self.logits(x)

    def forward(self, prompt, reply_in, prompt_mask=None, features=None, features_mask=None,
                with_meaning: bool = False):
        """Teacher forcing: prompt codes [B, K, S] and/or features [B, S', D_in], reply_in
        [B, K, T] -> logits [B, K, T, V] (with_meaning: (logits, meaning [B, meaning_dim]))."""
        t = reply_in.shape[-1]
        if t > self.cfg.max_steps:
            raise ValueError(f"reply has {t} steps; this model takes at most {self.cfg.max_steps}")
        memory, mask = self.encode_prompt(prompt, prompt_mask, features, features_mask)
        cross_mask = None if mask is None else mask[:, None, None, :]
        pos = torch.arange(t, device=reply_in.device)
        logits = self.decode(reply_in, pos, self.cross_kv(memory), cross_mask)
        return (logits, self.meaning(memory, mask)) if with_meaning else logits


def count_parameters(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        model = S2SModel(cfg)
    return sum(p.numel() for p in model.parameters())


def preset_table() -> list[dict]:
    rows = []
    for name, cfg in PRESETS.items():
        rows.append(
            {
                "preset": name,
                "layers": cfg.n_layer,
                "encoder_layers": cfg.n_encoder_layer,
                "d_model": cfg.d_model,
                "heads": cfg.n_head,
                "d_ff": cfg.d_ff,
                "parameters": count_parameters(cfg),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)
    print(f"{'preset':>7} {'layers':>6} {'enc':>4} {'d_model':>7} {'heads':>5} {'d_ff':>5} {'params':>12}")
    for r in preset_table():
        print(
            f"{r['preset']:>7} {r['layers']:>6} {r['encoder_layers']:>4} {r['d_model']:>7} "
            f"{r['heads']:>5} {r['d_ff']:>5} {r['parameters'] / 1e6:>11.1f}M"
        )


if __name__ == "__main__":
    main()
