"""The Talk tab: record or upload a turn; the reply streams back while it is generated, with the
token grids of prompt and reply, where the reply listened (any layer and head, or their mean),
the topics nearest to what the model heard (a model trained with the text teacher), the timings
and (optionally) a transcript."""

from __future__ import annotations

import gradio as gr
import numpy as np

from s2s.serve.guard import readable
from tabs.common import MAX_PROMPT_SECONDS, SKIP, gpu, user_errors
from tabs.format import timing_table, wav_bytes
from tabs.plots import attention_figure, token_grid_figure


ALL = "all (mean)"
STREAMING_SKIPS = 9  # outputs other than the audio while it streams


def talk(wb, audio, checkpoint, temperature, top_k, top_p, seed, max_seconds, transcribe):
    """Generator: reply audio chunks as they are decoded, then grids, timings, transcript, where
    the reply listened, what it heard, and the state the layer / head pickers redraw from."""
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
                yield wav_bytes(chunk.audio, chunk.sample_rate), *(SKIP() for _ in range(STREAMING_SKIPS))
    if not reply.reply_codes.shape[1]:
        gr.Warning("The model ended its reply at once (0 frames): nothing to play.")
    sr, fr = reply.sample_rate, pipe.codec.frame_rate
    prompt_fig = token_grid_figure(reply.prompt_codes, fr, reply.prompt_audio, sr, title="Prompt")
    reply_fig = token_grid_figure(reply.reply_codes, fr, reply.audio, sr, title="Reply")
    view = listened(pipe, reply)
    n_layer, n_head = pipe.model.cfg.n_layer, pipe.model.cfg.n_head
    yield SKIP(), prompt_fig, reply_fig, timing_table(reply.timings, reply.seconds), \
        transcript(wb, reply.audio, sr) if transcribe else "", listened_figure(view, ALL, ALL), \
        heard_text(pipe, reply), view, \
        gr.update(choices=[ALL] + [str(i + 1) for i in range(n_layer)], value=ALL), \
        gr.update(choices=[ALL] + [str(i + 1) for i in range(n_head)], value=ALL)


def transcript(wb, audio: np.ndarray, sr: int) -> str:
    if not np.size(audio) or not np.any(audio):
        return "(the reply is silent)"
    try:
        return wb.models.asr().transcribe(audio, sr) or "(no words recognised)"
    except ValueError as e:
        return f"(no transcript: {e})"


def listened(pipe, reply) -> dict | None:
    """Where the reply listened, per layer and head, over the prompt's own part of the memory
    (features, else codes), with what the figure needs; None when the reply has no frames."""
    from s2s.models.attention import cross_attention_map, prompt_segments

    if not reply.reply_codes.shape[1]:
        return None
    model = pipe.model
    codes = reply.prompt_codes if model.cfg.uses_codes else None
    maps, _ = cross_attention_map(model, reply.reply_codes, prompt=codes, features=reply.prompt_features)
    segments = prompt_segments(model, codes, reply.prompt_features)
    part, rate = ("features", pipe.frontend.frame_rate) if "features" in segments else ("codes", pipe.codec.frame_rate)
    start, end = segments[part]
    return {"maps": maps[..., start:end].half().numpy(), "rate": rate, "reply_rate": pipe.codec.frame_rate,
            "audio": reply.prompt_audio, "sample_rate": reply.sample_rate, "frontend": pipe.frontend_desc["name"]}


def listened_figure(view: dict | None, layer: str = ALL, head: str = ALL):
    """The map of one layer and head (1-based strings) or their mean (ALL), under the prompt's
    spectrogram; None without a reply."""
    import torch

    from s2s.models.attention import pick_map

    if view is None:
        return None
    maps = torch.from_numpy(np.asarray(view["maps"], dtype=np.float32))
    n_layer, n_head = maps.shape[:2]
    li = None if layer in (None, ALL) or int(layer) > n_layer else int(layer) - 1
    hi = None if head in (None, ALL) or int(head) > n_head else int(head) - 1
    which = (f"{n_layer} layers averaged" if li is None else f"layer {li + 1}") + ", " + \
        (f"{n_head} heads averaged" if hi is None else f"head {hi + 1}")
    return attention_figure(pick_map(maps, li, hi), view["rate"], view["reply_rate"], view["audio"],
                            view["sample_rate"], title=f"Where the reply listened ({view['frontend']}, {which})")


def heard_text(pipe, reply) -> str:
    """The topics nearest to what the model heard (its meaning head against the checkpoint's
    topic centroids), or why there are none."""
    from s2s.models.meaning import load_topics, nearest_topics

    if not pipe.model.cfg.meaning_dim or reply.prompt_features is None:
        return "*What it heard:* this checkpoint has no meaning head (trained without `--teacher`)."
    try:
        topics = load_topics(pipe.checkpoint) if pipe.checkpoint else None
    except ValueError as e:
        return f"*What it heard:* {e}"
    if topics is None:
        return "*What it heard:* this checkpoint has no meaning_topics.safetensors."
    near = nearest_topics(pipe.model, reply.prompt_features, topics, k=3)
    return "**What it heard** (meaning head, cosine to each topic's wordings): " + \
        " · ".join(f"`{name}` {sim:.2f}" for name, sim in near)


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
        with gr.Row():
            layer = gr.Dropdown([ALL], value=ALL, label="layer", scale=1, elem_id="attention_layer")
            head = gr.Dropdown([ALL], value=ALL, label="head", scale=1, elem_id="attention_head")
            heard = gr.Markdown(elem_id="heard_topics")
        attention_plot = gr.Plot(label="Where the reply listened", show_label=False, elem_id="attention_plot")
        view = gr.State(None)
        for picker in (layer, head):
            picker.input(listened_figure, [view, layer, head], attention_plot, api_visibility="private")
        talk_in = [audio_in, ckpt, temperature, top_k, top_p, seed, max_len, transcribe]
        talk_out = [reply, prompt_plot, reply_plot, timings, transcript_box, attention_plot, heard, view, layer, head]
        handler = gpu(wb.talk)
        go.click(handler, talk_in, talk_out, concurrency_id="generate", concurrency_limit=concurrency,
                 api_name="talk")
        if examples is not None:
            examples.load_input_event.then(handler, talk_in, talk_out, concurrency_id="generate",
                                           concurrency_limit=concurrency, api_visibility="private")
    return temperature, top_k, top_p, seed, max_len
