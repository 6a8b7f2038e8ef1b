"""The turn head: has the person finished their turn, and is what they say over a reply only a
backchannel ("mm-hm", "yeah")? Read off the Whisper tiny.en features of the turn so far, the
ones the front-end computes at each pause anyway (s2s/models/frontend.py).

    head = load_turn_head()                        # assets/turn_head (None: silence alone decides)
    p = head.p_finished(features)                  # features [S, 384] of the turn so far -> P(finished)
    q = head.p_backchannel(features)               # of speech heard over a reply -> P(backchannel)

Speech over a reply is weighed twice: at its onset (the pre-roll and the first ~0.1 s of speech:
below onset_threshold it is not a backchannel, and the reply stops at once) and, if it might be
one, at its pause (backchannel_threshold).

The net (the idea of Pipecat's Smart Turn, at our size, on frozen features): LayerNorm, a
projection to 128, a depthwise convolution over 5 frames (a little context per frame), one
self-attention layer, then two views of the turn, attention pooling over all of it and the mean
of its last 0.3 s (the end is where "finished" shows), and a 2-layer MLP to two logits
[finished, backchannel]. ~0.2M parameters, about a millisecond per call on the CPU. Only the
last MAX_SECONDS of a turn are read.

The folder holds config.json (the sizes, the front-end it reads with the weights' sha256, the
thresholds and the held-out figures of its training) and model.safetensors; it is trained by
`python -m s2s.training.turn_head` on the examples of `python -m s2s.data.turns`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "assets" / "turn_head"
FRAME_RATE = 50.0  # Whisper encoder frames per second
MAX_SECONDS = 4.0
TAIL_FRAMES = 15  # 0.3 s: the view of the turn's end


class TurnHeadError(ValueError):
    """A turn-head folder that cannot be used: missing, damaged, or made for another front-end."""


@dataclass
class TurnHeadConfig:
    dim: int = 384
    hidden: int = 128
    dropout: float = 0.2
    layers: int = 1  # self-attention layers over the frames (after the convolution)
    frontend: str = "whisper_tiny_en"
    frontend_sha256: str = ""
    finished_threshold: float = 0.5  # P(finished) at or above this ends the turn at the pause
    backchannel_threshold: float = 0.5  # P(backchannel) at or above this lets the reply go on
    onset_threshold: float = 0.1  # at the onset of speech over a reply, P(backchannel) below this stops it at once


class TurnHead(nn.Module):
    """features [B, S, D] (+ mask [B, S], True = a real frame) -> logits [B, 2] (finished, backchannel)."""

    def __init__(self, cfg: TurnHeadConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.norm = nn.LayerNorm(cfg.dim)
        self.proj = nn.Linear(cfg.dim, h)
        self.conv = nn.Conv1d(h, h, 5, padding=2, groups=h)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(h, 4, 2 * h, cfg.dropout, batch_first=True,
                                                               norm_first=True) for _ in range(cfg.layers))
        self.score = nn.Linear(h, 1)
        self.drop = nn.Dropout(cfg.dropout)
        self.mlp = nn.Sequential(nn.Linear(2 * h, h), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(h, 2))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        h = F.gelu(self.proj(self.drop(self.norm(x))))  # [B, S, H]
        h = h + self.conv((h * mask[..., None]).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h, src_key_padding_mask=~mask)
        scores = self.score(h).squeeze(-1).masked_fill(~mask, -math.inf)  # [B, S]
        pooled = (scores.softmax(-1)[..., None] * h).sum(1)  # [B, H]
        # the last TAIL_FRAMES real frames of each row (rows are left-aligned: padding at the end)
        lengths = mask.sum(1, keepdim=True)  # [B, 1]
        pos = torch.arange(x.shape[1], device=x.device)[None]
        tail = mask & (pos >= lengths - TAIL_FRAMES)
        end = (h * tail[..., None]).sum(1) / tail.sum(1, keepdim=True).clamp(min=1)
        return self.mlp(self.drop(torch.cat([pooled, end], -1)))


def clip_features(features: torch.Tensor) -> torch.Tensor:
    """[S, D] -> the last MAX_SECONDS of it, float32."""
    return features[-int(MAX_SECONDS * FRAME_RATE):].float()


class TurnHeadModel:
    """A loaded turn head: P(finished) and P(backchannel) for one turn's features."""

    def __init__(self, net: TurnHead, folder: Path | None = None, summary: dict | None = None):
        self.net, self.cfg, self.folder, self.summary = net.eval(), net.cfg, folder, summary or {}

    @torch.inference_mode()
    def probabilities(self, features: torch.Tensor) -> tuple[float, float]:
        """features [S, D] -> (P(finished), P(backchannel))."""
        if features.ndim != 2 or features.shape[1] != self.cfg.dim or not len(features):
            raise ValueError(f"turn features must be [S, {self.cfg.dim}] with S >= 1, got {tuple(features.shape)}")
        p = torch.sigmoid(self.net(clip_features(features)[None]))[0]
        return float(p[0]), float(p[1])

    def p_finished(self, features: torch.Tensor) -> float:
        return self.probabilities(features)[0]

    def p_backchannel(self, features: torch.Tensor) -> float:
        return self.probabilities(features)[1]


def save_turn_head(net: TurnHead, folder: str | Path, summary: dict) -> None:
    """Write config.json + model.safetensors into `folder` (created), each file atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.safetensors.tmp"
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.replace(folder / "model.safetensors")
    tmp = folder / "config.json.tmp"
    tmp.write_text(json.dumps({"config": asdict(net.cfg), "summary": summary}, indent=2) + "\n")
    tmp.replace(folder / "config.json")


def load_turn_head(folder: str | Path | None = None, *, frontend=None) -> TurnHeadModel:
    """The turn head in `folder` (default: the bundled assets/turn_head). frontend: the front-end
    whose features it will read; refused if the head was trained on another one."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder else DEFAULT_DIR
    try:
        meta = json.loads((folder / "config.json").read_text())
        cfg = TurnHeadConfig(**meta["config"])
        net = TurnHead(cfg)
        net.load_state_dict(load_file(str(folder / "model.safetensors")))
    except FileNotFoundError as e:
        raise TurnHeadError(f"no turn head in {folder}: {e.filename} is missing "
                            "(train one: python -m s2s.training.turn_head)") from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails in the reader's own way (SafetensorError, ...)
        raise TurnHeadError(f"the turn head in {folder} cannot be loaded: {type(e).__name__}: {e}") from None
    if frontend is not None:
        got = frontend.describe()
        if got["name"] != cfg.frontend or got["params"].get("sha256", "") != cfg.frontend_sha256:
            raise TurnHeadError(f"the turn head in {folder} reads {cfg.frontend} features "
                                f"(sha256 {cfg.frontend_sha256[:12]}); this front-end is {got['name']} "
                                f"(sha256 {got['params'].get('sha256', '')[:12]})")
    return TurnHeadModel(net, folder, meta.get("summary"))
