"""The delay pattern: how K parallel codebooks become one sequence of steps for the model.

Codebook k is shifted right by k steps (MusicGen's "delay" pattern), so at step t the model
predicts codebook 0 of frame t, codebook 1 of frame t-1, ... and codebook k can be conditioned
on the codebooks < k of the same frame, generated at earlier steps. The reply ends with EOS:
codebook k carries EOS at step T + k. Cells before a codebook starts or after its EOS are PAD.

Worked example, K = 3 codebooks, T = 2 frames (a0 a1 / b0 b1 / c0 c1), E = EOS, P = PAD:

    codes [K=3, T=2]      build() -> steps [K=3, T+K=5]
      a0 a1                 a0 a1 E  P  P
      b0 b1                 P  b0 b1 E  P
      c0 c1                 P  P  c0 c1 E

Frame j is complete once step j + K - 1 has been generated. revert() undoes build(); the
model's input at step t is the step t - 1 column, with an all-BOS column before step 0.

Token ids per codebook: 0..card-1 are codec codes, then BOS = card, PAD = card + 1,
EOS = card + 2 (see special_ids()).
"""

from __future__ import annotations

import torch


def special_ids(cardinality: int) -> dict[str, int]:
    """The special token ids that follow the codec's `cardinality` code ids."""
    return {"bos": cardinality, "pad": cardinality + 1, "eos": cardinality + 2}


def vocab_size(cardinality: int) -> int:
    return cardinality + 3


def build(codes: torch.Tensor, cardinality: int) -> torch.Tensor:
    """codes [K, T] or [B, K, T] -> steps [K, T + K] or [B, K, T + K] (delay pattern + EOS)."""
    squeeze = codes.dim() == 2
    if squeeze:
        codes = codes.unsqueeze(0)
    if codes.dim() != 3:
        raise ValueError(f"codes must be [K, T] or [B, K, T], got shape {tuple(codes.shape)}")
    ids = special_ids(cardinality)
    b, k_total, t_total = codes.shape
    steps = codes.new_full((b, k_total, t_total + k_total), ids["pad"])
    for k in range(k_total):
        steps[:, k, k : k + t_total] = codes[:, k]
        steps[:, k, k + t_total] = ids["eos"]
    return steps[0] if squeeze else steps


def reply_length(steps: torch.Tensor, cardinality: int) -> int:
    """Frames in a [K, L] step sequence: the position of codebook 0's first EOS (or all of it)."""
    eos = (steps[0] == special_ids(cardinality)["eos"]).nonzero()
    if len(eos):
        return int(eos[0, 0])
    return max(steps.shape[1] - steps.shape[0] + 1, 0)


def revert(steps: torch.Tensor, cardinality: int) -> torch.Tensor:
    """steps [K, L] -> codes [K, T]: undo the delay; T is set by codebook 0's EOS.

    Without an EOS (a reply cut at its maximum length) every frame whose K codebooks are all
    present is returned: T = L - K + 1.
    """
    if steps.dim() != 2:
        raise ValueError(f"steps must be [K, L], got shape {tuple(steps.shape)}")
    k_total = steps.shape[0]
    t_total = reply_length(steps, cardinality)
    t_total = min(t_total, max(steps.shape[1] - k_total + 1, 0))
    return torch.stack([steps[k, k : k + t_total] for k in range(k_total)])


def build_reference(codes: list[list[int]], cardinality: int) -> list[list[int]]:
    """Naive cell-by-cell build(), for tests: the definition, written out."""
    ids = special_ids(cardinality)
    k_total, t_total = len(codes), len(codes[0])
    steps = []
    for k in range(k_total):
        row = []
        for t in range(t_total + k_total):
            if t < k or t > k + t_total:
                row.append(ids["pad"])
            elif t == k + t_total:
                row.append(ids["eos"])
            else:
                row.append(codes[k][t - k])
        steps.append(row)
    return steps
