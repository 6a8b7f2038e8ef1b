"""What the model heard, by meaning: the meaning head's pooled vector against topic centroids.

    names, vectors = load_topics("ckpts/v3")          # None for a model trained without --teacher
    nearest_topics(model, features, (names, vectors)) # [("capital_france", 0.81), ...]

A model trained with the text teacher (s2s/training/teacher.py) has a meaning head
(S2SModel.meaning) whose output lives in all-MiniLM-L6-v2's space. At training time each
intent's centroid (the mean of its training wordings' text embeddings) is stored beside the
weights in meaning_topics.safetensors; at inference only those vectors are read, never text: the
Talk tab lists the topics nearest to what the model heard, so a wrong answer can be traced to a
wrong hearing (or to a right hearing and a wrong reply).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import safe_open, save

TOPICS_FILE = "meaning_topics.safetensors"


def topics_bytes(teacher: dict[str, torch.Tensor], rows: list[dict]) -> bytes:
    """Unit centroids [N, D] of the teacher embeddings of each intent's prompt texts in rows, as
    the content of TOPICS_FILE (the intent names in its metadata, in the rows' order)."""
    groups: dict[str, list[torch.Tensor]] = {}
    for r in rows:
        groups.setdefault(r["intent"], []).append(teacher[r["prompt_text"]])
    if not groups:
        raise ValueError("no rows to make topic centroids from")
    names = list(groups)
    vectors = F.normalize(torch.stack([torch.stack(groups[n]).mean(0) for n in names]), dim=-1)
    return save({"vectors": vectors.float().contiguous()}, metadata={"names": json.dumps(names)})


def load_topics(checkpoint: str | Path) -> tuple[list[str], torch.Tensor] | None:
    """(names, vectors [N, D]) from a checkpoint folder; None when it has none; ValueError if damaged."""
    path = Path(checkpoint) / TOPICS_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:  # one read: the names in the metadata, then the vectors
            names = json.loads(f.metadata()["names"])
            vectors = f.get_tensor("vectors")
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as e:
        raise ValueError(f"{path} cannot be read ({e}); retrain or export the checkpoint again") from None
    if vectors.dim() != 2 or len(names) != vectors.shape[0]:
        raise ValueError(f"{path}: {len(names)} names for vectors of shape {tuple(vectors.shape)}")
    return names, vectors


@torch.no_grad()
def nearest_topics(model, features: torch.Tensor, topics: tuple[list[str], torch.Tensor],
                   k: int = 3) -> list[tuple[str, float]]:
    """The k topics whose centroids are nearest (cosine) to the meaning of a prompt's features [S, D]."""
    names, vectors = topics
    if vectors.shape[1] != model.cfg.meaning_dim:
        raise ValueError(f"topic vectors are {vectors.shape[1]}-d, the model's meaning head {model.cfg.meaning_dim}-d")
    device = next(model.parameters()).device
    memory, mask = model.encode_prompt(features=features[None].to(device))
    heard = F.normalize(model.meaning(memory, mask).float(), dim=-1)[0].cpu()
    sims = vectors.float() @ heard
    top = sims.topk(min(k, len(names)))
    return [(names[i], float(s)) for s, i in zip(top.values, top.indices)]
