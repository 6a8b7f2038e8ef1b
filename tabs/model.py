"""The Model tab: the live checkpoint's card (preset, size, codec, front-end, training summary)
and its loss curves."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from s2s.codecs.codec import CodecUnavailable
from tabs.format import card_markdown, device_line, loss_curves
from tabs.plots import loss_figure


def model_card(wb, checkpoint):
    try:
        pipe = wb.pipeline(checkpoint)
    except (ValueError, FileNotFoundError, CodecUnavailable, OSError) as e:
        return f"**No checkpoint loaded.** {e}\n\n{device_line(wb.models.device)}", None
    md, training = card_markdown(pipe, checkpoint), pipe.info()["training"] or {}
    curves = loss_curves(Path(pipe.checkpoint), training)
    if not curves:
        md += "\n\nNo loss curve: config.json's training section has no `log` file or `losses` list."
    return md + "\n\n" + device_line(wb.models.device), loss_figure(curves) if curves else None


def build(wb) -> tuple:
    """The tab's layout; returns (card, loss plot), which app.py refreshes when the checkpoint changes."""
    with gr.Tab("Model"):
        card = gr.Markdown()
        loss_plot = gr.Plot(label="Training loss", show_label=False)
    return card, loss_plot
