"""Where the reply listened: the decoder's cross-attention over the prompt, per layer.

    maps, logits = cross_attention_map(model, reply_codes, prompt=codes, features=feats)
    maps[layer, head]    # [T_reply_frames, S_prompt]: one head's attention weights
    pick_map(maps, layer=None, head=None)   # averaged over layers and/or heads (None = all)
    prompt_segments(model, codes, feats)   # which memory columns are features, which are codes

The reply is run teacher-forced (its own codes as input, as in training) through the same
blocks as S2SModel.decode, with the cross-attention weights computed explicitly; the logits
come back too, so a test can check that this path is the model's own.
"""

from __future__ import annotations

import math

import torch

from s2s.models import patterns
from s2s.models.model import S2SModel


@torch.no_grad()
def cross_attention_map(model: S2SModel, reply_codes: torch.Tensor, prompt: torch.Tensor | None = None,
                        features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """reply codes [K, T] (+ the prompt's codes [K, S] and/or features [S', D], as the model
    hears) -> (maps [L, H, T, S_memory] per layer and head, logits [K, T + K, V]).

    Row t is the reply step that predicts frame t's first codebook (delay pattern)."""
    cfg = model.cfg
    device = model.heads.device
    if reply_codes.dim() != 2 or reply_codes.shape[0] != cfg.n_codebooks or reply_codes.shape[1] == 0:
        raise ValueError(f"reply codes must be [K={cfg.n_codebooks}, T>0], got {tuple(reply_codes.shape)}")
    steps = patterns.build(reply_codes.long().cpu(), cfg.cardinality)  # [K, T+K]
    bos = torch.full((cfg.n_codebooks, 1), patterns.special_ids(cfg.cardinality)["bos"], dtype=torch.long)
    reply_in = torch.cat([bos, steps[:, :-1]], dim=1)[None].to(device)
    memory, _ = model.encode_prompt(
        None if prompt is None or not cfg.uses_codes else prompt[None].to(device), None,
        None if features is None or not cfg.uses_features else features[None].to(device), None,
    )
    x = model.embed(reply_in, torch.arange(reply_in.shape[-1], device=device))
    maps = []
    for block in model.blocks:
        h = block.ln1(x)
        k, v = block.self_attn.project_kv(h)
        x = x + block.self_attn.attend(h, k, v, is_causal=True)
        attn = block.cross_attn
        q = attn.heads(attn.query(block.ln2(x)))  # [1, H, T, D/H]
        ck, cv = attn.project_kv(memory)
        weights = torch.softmax(q @ ck.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # [1, H, T, S]
        y = (weights @ cv).transpose(1, 2).reshape(x.shape)
        x = x + attn.out(y)
        x = x + block.mlp(block.ln3(x))
        maps.append(weights[0, :, : reply_codes.shape[1]])
    return torch.stack(maps).cpu(), model.logits(x)[0].cpu()


def pick_map(maps: torch.Tensor, layer: int | None = None, head: int | None = None) -> torch.Tensor:
    """maps [L, H, T, S] -> [T, S]: one layer and head (0-based), or the mean over all (None)."""
    n_layer, n_head = maps.shape[:2]
    for value, n, what in ((layer, n_layer, "layer"), (head, n_head, "head")):
        if value is not None and not 0 <= value < n:
            raise ValueError(f"{what} must be in 0..{n - 1} (or None for all), got {value!r}")
    maps = maps.mean(0) if layer is None else maps[layer]
    return maps.mean(0) if head is None else maps[head]


def prompt_segments(model: S2SModel, prompt: torch.Tensor | None, features: torch.Tensor | None) -> dict:
    """Memory columns by what they hold: {"features": (start, end), "codes": (start, end)}."""
    out, start = {}, 0
    if model.cfg.uses_features and features is not None:
        out["features"] = (start, start + features.shape[0])
        start += features.shape[0]
    if model.cfg.uses_codes and prompt is not None:
        out["codes"] = (start, start + prompt.shape[1])
    return out
