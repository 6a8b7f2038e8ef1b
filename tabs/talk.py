"""The Talk tab: record or upload a turn; the reply streams back while it is generated, with the
token grids of prompt and reply, where the reply listened, the timings and (optionally) a transcript."""

from __future__ import annotations

import gradio as gr
import numpy as np

from s2s.serve.guard import readable
from tabs.common import MAX_PROMPT_SECONDS, SKIP, gpu, user_errors
from tabs.format import timing_table, wav_bytes
from tabs.plots import attention_figure, token_grid_figure


def talk(wb, audio, checkpoint, temperature, top_k, top_p, seed, max_seconds, transcribe):
    """Generator: reply audio chunks as they are decoded, then grids, timings, transcript."""
    if audio is None:
        raise gr.Error("No audio: record or upload a clip first.", title="Nothing to reply to")
    reply = None
    with user_errors(audio):
        pipe = wb.pipeline(checkpoint)
        source = readable(audio, MAX_PROMPT_SECONDS)  # refused before decoding when longer
        options = wb.sampling(pipe, temperature, top_k, top_p, seed, max_seconds)
        for chunk in pipe.stream(source, prompt_max_seconds=MAX_PROMPT_SECONDS, **options):
            if chunk.reply is not None:
                reply = chunk.reply
            elif chunk.audio.size:
                yield wav_bytes(chunk.audio, chunk.sample_rate), SKIP(), SKIP(), SKIP(), SKIP(), SKIP()
    if not reply.reply_codes.shape[1]:
        gr.Warning("The model ended its reply at once (0 frames): nothing to play.")
    sr, fr = reply.sample_rate, pipe.codec.frame_rate
    prompt_fig = token_grid_figure(reply.prompt_codes, fr, reply.prompt_audio, sr, title="Prompt")
    reply_fig = token_grid_figure(reply.reply_codes, fr, reply.audio, sr, title="Reply")
    yield SKIP(), prompt_fig, reply_fig, timing_table(reply.timings, reply.seconds), \
        transcript(wb, reply.audio, sr) if transcribe else "", listened_figure(pipe, reply)


def transcript(wb, audio: np.ndarray, sr: int) -> str:
    if not np.size(audio) or not np.any(audio):
        return "(the reply is silent)"
    try:
        return wb.models.asr().transcribe(audio, sr) or "(no words recognised)"
    except ValueError as e:
        return f"(no transcript: {e})"


def listened_figure(pipe, reply):
    """The cross-attention map of the reply over what the model heard (averaged over heads and
    layers), under the prompt's spectrogram; None when the reply has no frames."""
    from s2s.models.attention import cross_attention_map, prompt_segments

    if not reply.reply_codes.shape[1]:
        return None
    model = pipe.model
    codes = reply.prompt_codes if model.cfg.uses_codes else None
    maps, _ = cross_attention_map(model, reply.reply_codes, prompt=codes, features=reply.prompt_features)
    segments = prompt_segments(model, codes, reply.prompt_features)
    part, rate = ("features", pipe.frontend.frame_rate) if "features" in segments else ("codes", pipe.codec.frame_rate)
    start, end = segments[part]
    title = f"Where the reply listened ({pipe.frontend_desc['name']}, {len(maps)} layers averaged)"
    return attention_figure(maps.mean(0)[:, start:end], rate, pipe.codec.frame_rate, reply.prompt_audio,
                            reply.sample_rate, title=title)


def build(wb, ckpt: gr.Dropdown, concurrency: int) -> tuple:
    """The tab's layout and events; returns the generation settings (Hands-free uses them too)."""
    with gr.Tab("Talk"):
        with gr.Row():
            with gr.Column(scale=2):
                audio_in = gr.Audio(sources=["microphone", "upload"], type="filepath",
                                    label="Your turn: record or upload (up to 60 s)", elem_id="talk_in")
                go = gr.Button("Reply", variant="primary")
                with gr.Accordion("Generation settings (also used by Hands-free)", open=False):
                    temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="temperature (0 = greedy)")
                    top_k = gr.Slider(0, 1024, value=50, step=1, label="top-k (0 = off)")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p (1 = off)")
                    seed = gr.Number(0, precision=0, label="seed (-1 = random)")
                    max_len = gr.Slider(0.5, 20.0, value=8.0, step=0.5, label="longest reply (s)")
                transcribe = gr.Checkbox(False, label="Transcribe the reply (Whisper)")
                examples = gr.Examples(
                    [[str(p)] for p, _ in wb.examples], inputs=[audio_in], label="Examples (click to run)",
                    example_labels=[label for _, label in wb.examples]) if wb.examples else None
            with gr.Column(scale=3):
                reply = gr.Audio(streaming=True, autoplay=True, interactive=False, elem_id="reply_audio",
                                 label="Reply (streams as it is generated)")
                transcript_box = gr.Textbox(label="Reply transcript (Whisper)", interactive=False, lines=1)
                timings = gr.Dataframe(headers=["stage", "time"], label="Timings", interactive=False,
                                       elem_id="timings")
        with gr.Row():
            prompt_plot = gr.Plot(label="Prompt tokens", show_label=False, elem_id="prompt_plot")
            reply_plot = gr.Plot(label="Reply tokens", show_label=False, elem_id="reply_plot")
        attention_plot = gr.Plot(label="Where the reply listened", show_label=False, elem_id="attention_plot")
        talk_in = [audio_in, ckpt, temperature, top_k, top_p, seed, max_len, transcribe]
        talk_out = [reply, prompt_plot, reply_plot, timings, transcript_box, attention_plot]
        handler = gpu(wb.talk)
        go.click(handler, talk_in, talk_out, concurrency_id="generate", concurrency_limit=concurrency,
                 api_name="talk")
        if examples is not None:
            examples.load_input_event.then(handler, talk_in, talk_out, concurrency_id="generate",
                                           concurrency_limit=concurrency, api_visibility="private")
    return temperature, top_k, top_p, seed, max_len
