"""The Conversation tab: talk and listen without pressing anything, with the reply's token grid
growing as it is generated and the per-turn latency measured in the page.

The audio does not go through Gradio's components: the page (tabs/converse.js, run by gr.HTML)
streams the microphone over a WebSocket on the app's own port (`/converse/ws`, s2s/serve/converse.py,
mounted on Gradio's FastAPI app by `routes()`) and plays the reply with an AudioWorklet. On a
Hugging Face Space the same route is served over wss, no second server.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from s2s.serve.converse import ConverseServer, Limits

PATH = "/converse/ws"
SCRIPT = Path(__file__).with_name("converse.js")
HTML = """
<div class="cv">
  <div class="cv-buttons"><button class="cv-start lg primary">Start conversation</button>
  <button class="cv-stop lg secondary" disabled>Stop</button></div>
  <p class="cv-status">Not started.</p>
  <p class="cv-grid-label">reply codes appear here as they are generated</p>
  <canvas class="cv-grid" width="900" height="64"></canvas>
  <table class="cv-turns"><thead><tr><th>turn</th><th>speech end (as the VAD heard it) → sound (ms, in this page)</th>
  <th>end-of-turn wait (ms)</th><th>server: end → audio sent (ms)</th><th>prepared before the end (ms)</th>
  <th>reply (s)</th><th></th></tr></thead><tbody></tbody></table>
</div>
"""
CSS = """
.cv button {padding: 0.4em 1.2em; margin-right: 0.6em; border-radius: 6px; border: 1px solid var(--border-color-primary)}
.cv .cv-start {background: var(--button-primary-background-fill); color: var(--button-primary-text-color)}
.cv canvas {width: 100%; height: 64px; background: #111; border-radius: 4px}
.cv table {width: 100%; font-size: 0.9em; margin-top: 0.6em}
.cv td, .cv th {padding: 2px 6px; text-align: right}
"""


def server(wb, limits: Limits | None = None) -> ConverseServer:
    """The conversation server of a workbench: the app's starting checkpoint, loaded on the
    first conversation (the Checkpoint box does not change it: one model serves everyone)."""
    return ConverseServer(lambda: wb.pipeline(wb.default), limits)


def build(wb) -> None:
    with gr.Tab("Conversation"):
        gr.Markdown(
            "Press **Start conversation** and talk: a short pause ends your turn, the reply plays as "
            "it is generated, and speaking over it stops it. The audio streams over a WebSocket and "
            "plays through an AudioWorklet (no buffering player), so what the table shows is what "
            "you hear. Uses the app's starting checkpoint. **Use headphones**: the browser's echo "
            "cancellation is on, but a reply heard by the microphone can still interrupt itself.")
        gr.HTML(HTML, css_template=CSS, js_on_load=SCRIPT.read_text(), elem_id="converse", apply_default_css=True)
