"""Figures for the app and reports: a clip's spectrogram above its codec token grid, where the
reply listened (cross-attention under the prompt's spectrogram), loss curves.

Built with matplotlib's object API (Figure, no pyplot), so figures can be made from several
threads at once and nothing is drawn on screen.

    fig = token_grid_figure(codes, 75.0, audio=wav, sample_rate=24000, title="reply")  # codes [K, F]
    fig.savefig("grid.png")
    fig = attention_figure(maps, 50.0, 75.0, prompt_wav, 24000)   # maps [T_reply, S_prompt]
    fig = loss_figure({"train": (steps, losses)})

In the token grid, row k is codebook k + 1 (codebook 1 is the coarsest), one cell per frame,
coloured by code id; the time axis is in seconds and shared with the spectrogram above.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

SPEC_MAX_HZ = 8000.0  # speech lives below this; the rest of a 24 kHz spectrum is mostly empty
GRID_CMAP = "viridis"  # perceptually uniform, readable in grey and for red-green colour blindness
SPEC_CMAP = "magma"


def spectrogram_db(audio: np.ndarray, sample_rate: int, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Magnitude STFT in dB re the clip's peak, floored at -80 dB: [n_fft // 2 + 1, frames]."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]  # [frames, n_fft]
    mag = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft).astype(np.float32), axis=1)).T
    db = 20.0 * np.log10(np.maximum(mag, 1e-10))
    return np.maximum(db - db.max(), -80.0)


def token_grid_figure(
    codes,
    frame_rate: float,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    title: str = "",
    cardinality: int = 1024,
) -> Figure:
    """Spectrogram (if audio is given) above the token grid of codes [K, F], on one time axis."""
    codes = np.asarray(codes.cpu() if hasattr(codes, "cpu") else codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [K, F], got shape {codes.shape}")
    n_cb, n_frames = codes.shape
    seconds = max(n_frames / frame_rate, 1e-3)
    has_audio = audio is not None and sample_rate is not None and np.size(audio) > 0
    if has_audio:
        seconds = max(seconds, np.size(audio) / sample_rate)
    rows = [2.2, 0.32 * n_cb + 0.5] if has_audio else [0.32 * n_cb + 0.5]
    fig = Figure(figsize=(7.2, sum(rows) + 0.9), dpi=100, layout="constrained")
    gs = fig.add_gridspec(len(rows), 2, height_ratios=rows, width_ratios=[40, 1])
    ax_grid = fig.add_subplot(gs[-1, 0])
    if has_audio:
        spectrogram_axes(fig, gs, audio, sample_rate, title).sharex(ax_grid)
    elif title:
        ax_grid.set_title(title, loc="left", fontsize=11, fontweight="bold")
    if n_frames:
        im = ax_grid.imshow(codes, aspect="auto", cmap=GRID_CMAP, vmin=0, vmax=cardinality - 1,
                            extent=[0, n_frames / frame_rate, n_cb - 0.5, -0.5], interpolation="nearest")
        cb = fig.colorbar(im, cax=fig.add_subplot(gs[-1, 1]))
        cb.set_label("code id")
    else:
        ax_grid.text(0.5, 0.5, "no frames", ha="center", va="center", transform=ax_grid.transAxes)
        fig.add_subplot(gs[-1, 1]).set_axis_off()
    ax_grid.set_xlim(0, seconds)
    ax_grid.set_ylim(n_cb - 0.5, -0.5)
    ax_grid.set_yticks(range(n_cb), [f"cb {k + 1}" for k in range(n_cb)])
    ax_grid.set_xlabel(f"time (s) - {n_frames} frames at {frame_rate:g} frames/s")
    return fig


def spectrogram_axes(fig: Figure, gs, audio: np.ndarray, sample_rate: int, title: str = ""):
    """The clip's spectrogram (0-8 kHz, dB) in gs[0, 0] with its colour bar in gs[0, 1]."""
    ax = fig.add_subplot(gs[0, 0])
    db = spectrogram_db(audio, sample_rate)
    top = min(sample_rate / 2, SPEC_MAX_HZ)
    db = db[: int(round(top / (sample_rate / 2) * (db.shape[0] - 1))) + 1]
    im = ax.imshow(db, origin="lower", aspect="auto", cmap=SPEC_CMAP, vmin=-80, vmax=0,
                   extent=[0, np.size(audio) / sample_rate, 0, top / 1000], interpolation="nearest")
    ax.set_ylabel("kHz")
    ax.tick_params(labelbottom=False)
    fig.colorbar(im, cax=fig.add_subplot(gs[0, 1])).set_label("dB")
    if title:
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    return ax


def attention_figure(maps, prompt_rate: float, reply_rate: float, audio: np.ndarray, sample_rate: int,
                     title: str = "Where the reply listened") -> Figure:
    """The prompt's spectrogram above the cross-attention map [T_reply, S_prompt] (averaged over
    heads and layers), on the prompt's time axis: x = prompt time, y = reply time."""
    maps = np.asarray(maps.cpu() if hasattr(maps, "cpu") else maps, dtype=np.float32)
    if maps.ndim != 2:
        raise ValueError(f"maps must be [T_reply, S_prompt], got shape {maps.shape}")
    t_reply, s_prompt = maps.shape
    fig = Figure(figsize=(7.2, 5.2), dpi=100, layout="constrained")
    gs = fig.add_gridspec(2, 2, height_ratios=[2.0, 3.0], width_ratios=[40, 1])
    ax_map = fig.add_subplot(gs[1, 0])
    ax_spec = spectrogram_axes(fig, gs, audio, sample_rate, title)
    ax_spec.sharex(ax_map)
    im = ax_map.imshow(maps, origin="upper", aspect="auto", cmap="Blues", vmin=0, interpolation="nearest",
                       extent=[0, s_prompt / prompt_rate, t_reply / reply_rate, 0])
    fig.colorbar(im, cax=fig.add_subplot(gs[1, 1])).set_label("attention")
    ax_map.set_xlim(0, max(np.size(audio) / sample_rate, s_prompt / prompt_rate))
    ax_map.set_xlabel(f"prompt time (s) - {s_prompt} front-end frames at {prompt_rate:g}/s")
    ax_map.set_ylabel("reply time (s)")
    return fig


def loss_figure(curves: dict[str, tuple], title: str = "training loss") -> Figure:
    """Loss curves {label: (steps, values)} on one axis (log scale when the range is wide)."""
    fig = Figure(figsize=(7.2, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    lows, highs = [], []
    for label, (steps, values) in curves.items():
        v = np.asarray(values, dtype=float)
        ax.plot(np.asarray(steps), v, label=label, linewidth=1.5)
        if np.any(v > 0):
            lows.append(v[v > 0].min())
            highs.append(v.max())
    if lows and max(highs) / min(lows) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.grid(True, alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    return fig
