"""The Codec tab: any clip through every codec available here, with its tokens, its resynthesis
and how far that is from the original (MCD, log-F0 RMSE, Whisper WER: eval's metrics)."""

from __future__ import annotations

import math

import gradio as gr
import numpy as np

from eval.metrics import log_f0_rmse, mcd, wer
from s2s.codecs.codec import Codec, CodecUnavailable
from s2s.io.audio import load_audio
from s2s.serve.guard import readable
from tabs.common import MAX_PROMPT_SECONDS, user_errors
from tabs.plots import token_grid_figure

CODEC_VARIANTS = (  # label, codec name, EnCodec bandwidth
    ("EnCodec 1.5 kbps", "encodec_24khz", 1.5),
    ("EnCodec 3 kbps", "encodec_24khz", 3.0),
    ("EnCodec 6 kbps", "encodec_24khz", 6.0),
    ("WORLD-VQ", "world_vq", None),
)


def round_trip(codec: Codec, wav: np.ndarray, sr: int, asr=None, ref_text: str = "") -> tuple[list, object, np.ndarray]:
    """wav [T] at sr through the codec -> (table row, codes [K, F], resynthesis [T']): kbps,
    codebooks, frames, MCD dB, log-F0 RMSE cents, WER against ref_text, the transcript."""
    import torch

    codes = codec.encode(torch.from_numpy(wav), sr)  # [K, F]
    out = codec.decode(codes).numpy().astype(np.float32)
    row = [f"{codec.n_codebooks * math.log2(codec.cardinality) * codec.frame_rate / 1000:g}",
           codec.n_codebooks, int(codes.shape[1])]
    try:
        row += [round(mcd(wav, out, sr).mcd, 2), round(log_f0_rmse(wav, out, sr).rmse_cents, 1)]
    except ValueError as e:  # e.g. a silent resynthesis
        row += [f"n/a ({e})", "n/a"]
    if asr is None or not np.any(out):
        return row + ["-", ""], codes, out
    hyp = asr.transcribe(out, sr)
    try:
        return row + [f"{wer([hyp], [ref_text]).wer:.1%}", hyp], codes, out
    except ValueError:  # nothing recognised in the original
        return row + ["n/a", hyp], codes, out


def compare_codecs(wb, audio, with_wer):
    """The clip through every codec variant: table, then (visible, audio, grid) per variant."""
    if audio is None:
        raise gr.Error("No audio: record or upload a clip first.", title="Nothing to encode")
    with user_errors(audio):
        sr = 24000
        wav = load_audio(readable(audio, MAX_PROMPT_SECONDS), sr, max_seconds=MAX_PROMPT_SECONDS).numpy()
    asr, ref_text, note = None, "", ""
    if with_wer:
        try:
            asr = wb.models.asr()
            ref_text = asr.transcribe(wav, sr)
        except ValueError as e:
            note = f"WER skipped: {e}"
    rows, slots = [], []
    for label, name, bw in CODEC_VARIANTS:
        try:
            codec = wb.models.codec(name, bw)
        except (CodecUnavailable, ImportError, OSError, ValueError) as e:
            rows.append([label, "-", "-", "-", "-", "-", "-", f"not available: {str(e).splitlines()[0]}"])
            slots += [gr.update(visible=False), None, None]
            continue
        row, codes, out = round_trip(codec, wav, sr, asr, ref_text)
        rows.append([label] + row)
        slots += [gr.update(visible=True), (sr, (np.clip(out, -1, 1) * 32767).astype(np.int16)),
                  token_grid_figure(codes, codec.frame_rate, out, sr, title=label, cardinality=codec.cardinality)]
    text = f"Original transcript: *{ref_text or '(none)'}*" if with_wer else ""
    return [rows, "\n\n".join(t for t in (text, note) if t)] + slots


def build(wb):
    """The tab's layout and events."""
    with gr.Tab("Codec"):
        gr.Markdown("Any clip through each codec available here: tokens, resynthesis and how far it "
                    "is from the original (MCD, log-F0 RMSE, Whisper WER against the original's transcript).")
        with gr.Row():
            codec_in = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip", scale=3,
                                elem_id="codec_in")
            with gr.Column(scale=1):
                with_wer = gr.Checkbox(True, label="WER (Whisper)")
                codec_go = gr.Button("Run the codecs", variant="primary")
        codec_note = gr.Markdown()
        codec_table = gr.Dataframe(headers=["codec", "kbps", "codebooks", "frames", "MCD (dB)",
                                            "log-F0 RMSE (cents)", "WER", "transcript / note"],
                                   label="Round trip", interactive=False, wrap=True)
        slots = []
        for label, _, _ in CODEC_VARIANTS:
            with gr.Column(visible=False) as col:
                with gr.Row():
                    player = gr.Audio(label=f"{label}: resynthesis", interactive=False, scale=1)
                    grid = gr.Plot(label=f"{label}: tokens", show_label=False, scale=2)
            slots += [col, player, grid]
        codec_go.click(wb.compare_codecs, [codec_in, with_wer], [codec_table, codec_note] + slots,
                       concurrency_id="codec", concurrency_limit=1, api_name="codec")
