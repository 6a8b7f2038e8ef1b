"""Where the model runs: CUDA when there is a GPU, else the CPU; codecs always run on the CPU."""

from __future__ import annotations

import torch


def pick_device(device: str | torch.device | None) -> torch.device:
    """None = CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'cpu'")
    return device
