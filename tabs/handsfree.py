"""The Hands-free tab: voice activity ends the person's turn (s2s/serve/vad.py), the reply streams
back, and speaking over it stops it (barge-in); shows the end-of-speech -> first-audio latency."""

from __future__ import annotations

import time

import gradio as gr

from tabs.common import SKIP, gpu, user_errors
from tabs.format import wav_bytes


def listen(wb, chunk, state):
    """Stream handler, one microphone chunk per call: runs the VAD, says when a turn ends
    (bumps `turn`) or when the person speaks over the reply (bumps `stop`)."""
    from s2s.serve.vad import TurnDetector

    now = time.perf_counter()
    if state is None:
        state = {"det": TurnDetector(), "turns": 0, "stops": 0, "replying": False, "play_until": 0.0}
    if chunk is None:
        return state, SKIP(), SKIP(), SKIP()
    sr, data = chunk
    turn = stop = status = SKIP()
    try:
        events = state["det"].push(data, sr)
    except ValueError as e:
        return state, turn, stop, f"Microphone audio not usable: {e}"
    for ev in events:
        if ev.kind == "start":
            if state["replying"] or now < state["play_until"]:
                state["stops"] += 1
                state["play_until"] = 0.0
                stop, status = state["stops"], "Interrupted: you spoke over the reply. Listening…"
            else:
                status = "Hearing you…"
        else:
            state.update(turn_audio=(ev.audio, ev.sample_rate), detected=now,
                         speech_end=now - (state["det"].seconds - ev.at))
            state["turns"] += 1
            turn, status = state["turns"], "End of turn: replying…"
    return state, turn, stop, status


def reply_turn(wb, state, checkpoint, temperature, top_k, top_p, seed, max_seconds):
    """Generator: the reply to the turn listen() just closed, streamed; shows the latency."""
    turn = state.pop("turn_audio", None) if state else None  # (audio [T], sample rate)
    if turn is None:
        return
    state["replying"] = True
    first, played = None, 0.0
    try:
        with user_errors():
            pipe = wb.pipeline(checkpoint)
            options = wb.sampling(pipe, temperature, top_k, top_p, seed, max_seconds)
            for chunk in pipe.stream(turn, prompt_codes=False, **options):
                if chunk.reply is not None or not chunk.audio.size:
                    continue
                now = time.perf_counter()
                latency = SKIP()
                if first is None:
                    first = now
                    latency = (f"End of speech → first reply audio: **{(now - state['speech_end']) * 1e3:.0f} ms** "
                               f"(waiting for silence {(state['detected'] - state['speech_end']) * 1e3:.0f} ms "
                               f"+ reply {(now - state['detected']) * 1e3:.0f} ms)")
                played += chunk.audio.size / chunk.sample_rate
                state["play_until"] = first + played + 1.0  # + the player's buffering
                yield wav_bytes(chunk.audio, chunk.sample_rate), latency
    finally:
        state["replying"] = False


def build(wb, ckpt: gr.Dropdown, settings: tuple, concurrency: int):
    """The tab's layout and events; settings: the Talk tab's (temperature, top-k, top-p, seed, longest reply)."""
    with gr.Tab("Hands-free"):
        gr.Markdown("Press **Record** and talk. A pause of about 0.6 s ends your turn and the reply "
                    "starts; speak while it plays to interrupt it. Uses the checkpoint and the "
                    "Talk tab's generation settings. Headphones avoid the reply being heard as you.")
        with gr.Row():
            mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone")
            hf_reply = gr.Audio(streaming=True, autoplay=True, interactive=False, label="Reply")
        hf_status = gr.Markdown("Not listening yet.")
        hf_latency = gr.Markdown()
        hf_state = gr.State(None)
        hf_turn = gr.Number(0, visible="hidden", label="turns")
        hf_stop = gr.Number(0, visible="hidden", label="interruptions")
        mic.stream(wb.listen, [mic, hf_state], [hf_state, hf_turn, hf_stop, hf_status], stream_every=0.25,
                   time_limit=900, concurrency_id="listen", concurrency_limit=16, api_visibility="private",
                   show_progress="hidden")
        answer = hf_turn.change(gpu(wb.reply_turn), [hf_state, ckpt, *settings],
                                [hf_reply, hf_latency], concurrency_id="generate",
                                concurrency_limit=concurrency, api_visibility="private")
        hf_stop.change(lambda: None, None, hf_reply, cancels=[answer], queue=False, api_visibility="private")
