"""Answer ranking: which of the corpus's known answers does the model find most likely for a prompt?

A check of whether the model listens that needs no ASR and no generation: for each prompt, the
teacher-forced log-likelihood per token of the first `steps` steps of every distinct answer's
codes; the prompt counts as understood when its own answer scores highest. The corpus's answers
part within their first few frames, so a short prefix decides, and it is cheap enough to run
during training (whole answers would cost ~4x).

    accuracy = answer_ranking_accuracy(model, pairs, answers, steps=48)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2s.data.dataset import Pair, collate
from s2s.models import patterns


@torch.no_grad()
def answer_scores(model, pair: Pair, answers: list[torch.Tensor], steps: int) -> torch.Tensor:
    """pair: its prompt codes [K, S] and/or features [S', D]; answers: codes [K, T_i] ->
    [len(answers)] mean log-likelihood per token of each answer's first `steps` delay-pattern
    steps (a shorter answer's EOS counts; the mean keeps answers of different lengths comparable)."""
    cfg = model.cfg
    device = model.embedding.weight.device
    batch = collate([Pair("", pair.prompt, a, features=pair.features) for a in answers], cfg.cardinality, steps)
    reply_in, target = batch.reply_in.to(device), batch.target.to(device)
    length, pad = target.shape[-1], patterns.special_ids(cfg.cardinality)["pad"]
    one = collate([pair], cfg.cardinality).to(device)
    memory, _ = model.encode_prompt(one.prompt, None, one.features, None)
    n = len(answers)
    cross = [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in model.cross_kv(memory)]
    logits = model.decode(reply_in, torch.arange(length, device=device), cross).float()
    nll = F.cross_entropy(logits.flatten(0, 2), target.flatten(), ignore_index=pad, reduction="none")
    real = (target != pad).view(n, -1).sum(dim=1)
    return (-nll.view(n, -1).sum(dim=1) / real).cpu()


def answer_ranking_accuracy(model, pairs, answers: dict[str, torch.Tensor], steps: int = 48) -> float:
    """pairs: Pairs (prompt codes and/or features, intent); answers: intent -> answer codes [K, T].
    The share of prompts whose own intent's answer the model scores highest."""
    if not pairs:
        raise ValueError("answer ranking needs at least one prompt")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    intents = sorted(answers)
    codes = [answers[i] for i in intents]
    was_training = model.training
    model.eval()
    try:
        right = sum(intents[int(answer_scores(model, p, codes, steps).argmax())] == p.intent for p in pairs)
    finally:
        model.train(was_training)
    return right / len(pairs)
