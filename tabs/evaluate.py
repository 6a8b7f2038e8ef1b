"""The Evaluate tab: eval.run over a checkpoints folder on the bundled eval set; the summary,
latency table, plots and report of the run. It writes reports/ and queues long jobs, so on a
public Space it is off unless the owner turns it on (tabs/common.py optional_tabs)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import gradio as gr

from tabs.common import user_errors
from tabs.format import frame

SUMMARY_COLUMNS = ("checkpoint", "status", "preset", "parameters", "n", "wer", "answer_accuracy", "mcd_mean",
                   "log_f0_rmse_cents_mean", "time_to_first_audio_ms", "realtime_factor")
LATENCY_COLUMNS = ("kind", "name", "status", "parameters", "encode_ms", "prefill_ms", "decode_ms_per_frame",
                   "time_to_first_audio_ms", "x_realtime", "peak_memory_mb")


def run_eval(wb, folder, presets, limit, latency, progress=gr.Progress(track_tqdm=True)):
    with user_errors():
        path = wb.guard.resolve(folder, "checkpoints folder")
        evaluate = wb.evaluate_fn
        if evaluate is None:
            try:
                from eval.run import evaluate
            except ImportError as e:
                raise gr.Error(f"the evaluation (eval/run.py) is not available here: {e}") from None
        progress(0, desc="loading the eval set and the speech recogniser")
        out = wb.reports / f"app-eval-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        result = evaluate(path, out=out, presets=list(presets or []), latency=bool(latency),
                          limit=int(limit), device=str(wb.models.device), workers=1, progress=True)
    from PIL import Image

    out = Path(result["out"])
    plots = [(Image.open(p).copy(), p.stem.replace("_", " ")) for p in sorted((out / "plots").glob("*.png"))]
    report = (out / "report.md").read_text() if (out / "report.md").is_file() else ""
    summary = frame(result["summary"], SUMMARY_COLUMNS)
    latency_rows = frame(result["latency"], LATENCY_COLUMNS)
    return summary, latency_rows, plots, f"Report written to `{wb.guard.label(out)}`\n\n{report}"


def build(wb) -> gr.Dropdown:
    """The tab's layout and events; returns the checkpoints-folder dropdown (the Rescan button refreshes it)."""
    with gr.Tab("Evaluate"):
        gr.Markdown("Runs `eval.run` (`python -m eval.run --checkpoints FOLDER`) on the bundled eval "
                    "set: every checkpoint in the folder replies, Whisper transcribes, the report is "
                    "written under `reports/`.")
        with gr.Row():
            folder = gr.Dropdown(wb.guard.checkpoint_folders(), label="Checkpoints folder",
                                 allow_custom_value=True, scale=3)
            presets = gr.CheckboxGroup(["10m", "50m", "100m", "300m"], label="Also time these presets", scale=2)
        with gr.Row():
            limit = gr.Slider(1, 200, value=5, step=1, label="utterances")
            with_latency = gr.Checkbox(True, label="Latency table")
            eval_go = gr.Button("Evaluate", variant="primary")
        eval_summary = gr.Dataframe(headers=list(SUMMARY_COLUMNS), label="Summary", interactive=False)
        eval_latency = gr.Dataframe(headers=list(LATENCY_COLUMNS), label="Latency", interactive=False)
        eval_plots = gr.Gallery(label="Plots", columns=3, height="auto")
        eval_report = gr.Markdown()
        eval_go.click(wb.run_eval, [folder, presets, limit, with_latency],
                      [eval_summary, eval_latency, eval_plots, eval_report],
                      concurrency_id="eval", concurrency_limit=1, api_name="evaluate")
    return folder


def folder_choices(wb, folder):
    """After a rescan: the folders eval.run can take now."""
    return gr.update(choices=wb.guard.checkpoint_folders(), value=folder)
