"""The s2s workbench app: talk to a checkpoint, look inside it, compare codecs, run the eval.

    python app.py                                   # http://127.0.0.1:7860, the bundled prototype
    python app.py --checkpoint ckpts/run1 --device cpu --port 7861
    python app.py --host 0.0.0.0 --root /data/ckpts # serve on the network; allow another folder
    python app.py --share                           # a public gradio.live link (off by default)

Tabs: Talk (record or upload, the reply streams back while it is generated, token grids and
timings beside it), Hands-free (voice activity ends your turn, speaking over the reply stops
it), Codec (a clip through every codec available, with MCD / log-F0 RMSE / WER), Evaluate
(eval.run over a checkpoints folder), Model (the live checkpoint's card and loss curve).

UI only: models load on first use (or in main() before launching), never at import; all state
lives in the Workbench that build_ui() creates. Visitors can only name folders under the
configured roots (assets/ and ckpts/ by default, plus --checkpoint); see s2s/serving.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import numpy as np

from s2s.audio import load_audio
from s2s.codec import CodecUnavailable
from s2s.pipeline import PROTOTYPE
from s2s.plots import attention_figure, loss_figure, token_grid_figure
from s2s.serving import (FolderGuard, ModelCache, card_markdown, codec_label, device_line, example_prompts, frame,
                         loss_curves, readable, round_trip, timing_table, wav_bytes)

log = logging.getLogger("s2s.app")

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"
DEFAULT_ROOTS = (ASSETS, ROOT / "ckpts")
REPORTS = ROOT / "reports"
MAX_PROMPT_SECONDS = 60.0
MAX_FILE_SIZE = "25mb"  # a minute of 48 kHz stereo 16-bit wav is 11.5 MB
CODEC_VARIANTS = (  # label, codec name, EnCodec bandwidth
    ("EnCodec 1.5 kbps", "encodec_24khz", 1.5),
    ("EnCodec 3 kbps", "encodec_24khz", 3.0),
    ("EnCodec 6 kbps", "encodec_24khz", 6.0),
    ("WORLD-VQ", "world_vq", None),
)
CSS = """
#banner {padding: 0.6em 1em; border-radius: 8px; background: var(--block-background-fill);
         border: 1px solid var(--border-color-primary)}
#banner p {margin: 0.2em 0}
.warn {color: #a15c00; font-weight: 600}
"""
SKIP = gr.skip
SUMMARY_COLUMNS = ("checkpoint", "status", "preset", "parameters", "n", "wer", "answer_accuracy", "mcd_mean",
                   "log_f0_rmse_cents_mean", "time_to_first_audio_ms", "realtime_factor")
LATENCY_COLUMNS = ("kind", "name", "status", "parameters", "encode_ms", "prefill_ms", "decode_ms_per_frame",
                   "time_to_first_audio_ms", "x_realtime", "peak_memory_mb")


def gpu(fn):
    """spaces.GPU on a Hugging Face ZeroGPU Space; the function unchanged anywhere else."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(fn)


@contextmanager
def user_errors(upload=None):
    """Bad input (AudioError, CheckpointError, other ValueErrors, missing files or codecs) -> a
    message in the page, naming an upload by its file name only; the server goes on serving."""
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, FileNotFoundError, CodecUnavailable) as e:
        message = str(e).replace(str(upload), Path(upload).name) if isinstance(upload, str) else str(e)
        raise gr.Error(message, title=type(e).__name__) from None


class Workbench:
    """Everything the UI calls: one per build_ui(), owning the model cache and the folder guard."""

    def __init__(self, checkpoint=None, device=None, roots=DEFAULT_ROOTS, *, pipeline_loader=None,
                 codec_loader=None, asr_loader=None, evaluate=None, examples=None, reports=REPORTS,
                 max_pipelines=2):
        extra = {k: v for k, v in (("pipeline_loader", pipeline_loader), ("codec_loader", codec_loader)) if v}
        self.models = ModelCache(device, asr_loader=asr_loader, max_pipelines=max_pipelines, **extra)
        roots = list(roots)
        if checkpoint is not None:  # the operator's own choice is always allowed
            roots.append(Path(checkpoint))
        self.guard = FolderGuard(roots, base=ROOT)
        if checkpoint is None and (PROTOTYPE / "config.json").is_file():
            checkpoint = PROTOTYPE
        self.default = self.guard.label(Path(checkpoint).resolve()) if checkpoint is not None else None
        self.evaluate_fn, self.reports = evaluate, Path(reports)
        # [(clip, label)]: by default a few prompts of the bundled eval set (none if it is missing)
        self.examples = list(examples) if examples is not None else example_prompts(ASSETS / "eval")

    # ------------------------------------------------------------------ shared

    def pipeline(self, checkpoint):
        if checkpoint is None or not str(checkpoint).strip():
            raise ValueError("no checkpoint chosen: the bundled prototype (assets/prototype) is missing; "
                             "choose a checkpoint folder in the Checkpoint box at the top")
        return self.models.pipeline(self.guard.resolve(checkpoint, "checkpoint"))

    def sampling(self, pipe, temperature, top_k, top_p, seed, max_seconds) -> dict:
        limit = pipe.model.cfg.max_reply_frames / pipe.codec.frame_rate
        seed = None if seed is None or float(seed) < 0 else int(seed)
        return {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p),
                "seed": seed, "max_seconds": min(float(max_seconds), limit)}

    def banner(self, checkpoint) -> str:
        lines, codec = [], None
        try:
            pipe = self.pipeline(checkpoint)
            info = pipe.info()
            codec = info["codec"]["name"]
            lines.append(f"**Live:** checkpoint `{checkpoint}` · preset {info['preset']} · "
                         f"{info['parameters'] / 1e6:.1f}M parameters · codec **{codec_label(info['codec'])}** · "
                         f"device `{info['device']}`")
        except (ValueError, FileNotFoundError, CodecUnavailable, OSError) as e:
            lines.append(f"<span class='warn'>No checkpoint is live.</span> {e}. Talk and Hands-free "
                         "answer with an error until a checkpoint is chosen.")
        if codec in (None, "world_vq") and self.models.encodec_status() is not None:
            fix = "to use EnCodec, set S2S_ENCODEC_PATH to a folder saved from facebook/encodec_24khz"
            if codec == "world_vq":
                lines.append(f"<span class='warn'>EnCodec weights were not found</span>, so the offline "
                             f"**WORLD-VQ** codec is in use ({fix}).")
            else:
                try:
                    self.models.codec("world_vq")
                    lines.append(f"<span class='warn'>EnCodec weights were not found</span>: the offline "
                                 f"**WORLD-VQ** codec is the one available here ({fix}).")
                except (CodecUnavailable, ImportError, OSError, ValueError) as e:
                    lines.append(f"<span class='warn'>No codec is available</span>: EnCodec weights were not "
                                 f"found ({fix}) and WORLD-VQ cannot load: {str(e).splitlines()[0]}")
        return "\n\n".join(lines)

    def rescan(self, checkpoint, folder):
        ckpts, folders = self.guard.checkpoints(), self.guard.checkpoint_folders()
        return gr.update(choices=ckpts, value=checkpoint), gr.update(choices=folders, value=folder)

    # ------------------------------------------------------------------ Talk

    def talk(self, audio, checkpoint, temperature, top_k, top_p, seed, max_seconds, transcribe):
        """Generator: reply audio chunks as they are decoded, then grids, timings, transcript."""
        if audio is None:
            raise gr.Error("No audio: record or upload a clip first.", title="Nothing to reply to")
        reply = None
        with user_errors(audio):
            pipe = self.pipeline(checkpoint)
            source = readable(audio)
            options = self.sampling(pipe, temperature, top_k, top_p, seed, max_seconds)
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
            self.transcript(reply.audio, sr) if transcribe else "", listened_figure(pipe, reply)

    def transcript(self, audio: np.ndarray, sr: int) -> str:
        if not np.size(audio) or not np.any(audio):
            return "(the reply is silent)"
        try:
            return self.models.asr().transcribe(audio, sr) or "(no words recognised)"
        except ValueError as e:
            return f"(no transcript: {e})"

    # ------------------------------------------------------------------ Hands-free

    def listen(self, chunk, state):
        """Stream handler, one microphone chunk per call: runs the VAD, says when a turn ends
        (bumps `turn`) or when the person speaks over the reply (bumps `stop`)."""
        from s2s.vad import TurnDetector

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

    def reply_turn(self, state, checkpoint, temperature, top_k, top_p, seed, max_seconds):
        """Generator: the reply to the turn listen() just closed, streamed; shows the latency."""
        turn = state.pop("turn_audio", None) if state else None  # (audio [T], sample rate)
        if turn is None:
            return
        state["replying"] = True
        first, played = None, 0.0
        try:
            with user_errors():
                pipe = self.pipeline(checkpoint)
                options = self.sampling(pipe, temperature, top_k, top_p, seed, max_seconds)
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

    # ------------------------------------------------------------------ Codec

    def compare_codecs(self, audio, with_wer):
        """The clip through every codec variant: table, then (visible, audio, grid) per variant."""
        if audio is None:
            raise gr.Error("No audio: record or upload a clip first.", title="Nothing to encode")
        with user_errors(audio):
            sr = 24000
            wav = load_audio(readable(audio), sr, max_seconds=MAX_PROMPT_SECONDS).numpy()
        asr, ref_text, note = None, "", ""
        if with_wer:
            try:
                asr = self.models.asr()
                ref_text = asr.transcribe(wav, sr)
            except ValueError as e:
                note = f"WER skipped: {e}"
        rows, slots = [], []
        for label, name, bw in CODEC_VARIANTS:
            try:
                codec = self.models.codec(name, bw)
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

    # ------------------------------------------------------------------ Evaluate

    def run_eval(self, folder, presets, limit, latency, progress=gr.Progress(track_tqdm=True)):
        with user_errors():
            path = self.guard.resolve(folder, "checkpoints folder")
            evaluate = self.evaluate_fn
            if evaluate is None:
                try:
                    from eval.run import evaluate
                except ImportError as e:
                    raise gr.Error(f"the evaluation (eval/run.py) is not available here: {e}") from None
            progress(0, desc="loading the eval set and the speech recogniser")
            out = self.reports / f"app-eval-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            result = evaluate(path, out=out, presets=list(presets or []), latency=bool(latency),
                              limit=int(limit), device=str(self.models.device), workers=1, progress=True)
        from PIL import Image

        out = Path(result["out"])
        plots = [(Image.open(p).copy(), p.stem.replace("_", " ")) for p in sorted((out / "plots").glob("*.png"))]
        report = (out / "report.md").read_text() if (out / "report.md").is_file() else ""
        summary = frame(result["summary"], SUMMARY_COLUMNS)
        latency_rows = frame(result["latency"], LATENCY_COLUMNS)
        return summary, latency_rows, plots, f"Report written to `{self.guard.label(out)}`\n\n{report}"

    # ------------------------------------------------------------------ Model

    def model_card(self, checkpoint):
        try:
            pipe = self.pipeline(checkpoint)
        except (ValueError, FileNotFoundError, CodecUnavailable, OSError) as e:
            return f"**No checkpoint loaded.** {e}\n\n{device_line(self.models.device)}", None
        md, training = card_markdown(pipe, checkpoint), pipe.info()["training"] or {}
        curves = loss_curves(Path(pipe.checkpoint), training)
        if not curves:
            md += "\n\nNo loss curve: config.json's training section has no `log` file or `losses` list."
        return md + "\n\n" + device_line(self.models.device), loss_figure(curves) if curves else None


def build_ui(workbench: Workbench | None = None, *, concurrency: int = 2, **options) -> gr.Blocks:
    """The app's Blocks. workbench: a ready Workbench (tests pass one with loader overrides);
    else one is made from options (checkpoint, device, roots, pipeline_loader, codec_loader,
    asr_loader, evaluate, examples). concurrency: replies generated at once (the rest queue)."""
    wb = workbench or Workbench(**options)
    with gr.Blocks(title="s2s workbench") as demo:
        gr.Markdown("## s2s workbench · speech in, speech out, no text in between")
        with gr.Row():
            ckpt = gr.Dropdown(wb.guard.checkpoints(), value=wb.default, label="Checkpoint",
                               allow_custom_value=True, scale=4,
                               info="a folder with config.json + model.safetensors under " +
                                    ", ".join(f"`{wb.guard.label(r)}`" for r in wb.guard.roots))
            rescan = gr.Button("Rescan folders", size="sm", scale=0, min_width=140)
        banner = gr.Markdown(elem_id="banner")
        with gr.Tabs():
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
                        transcript = gr.Textbox(label="Reply transcript (Whisper)", interactive=False, lines=1)
                        timings = gr.Dataframe(headers=["stage", "time"], label="Timings", interactive=False,
                                               elem_id="timings")
                with gr.Row():
                    prompt_plot = gr.Plot(label="Prompt tokens", show_label=False, elem_id="prompt_plot")
                    reply_plot = gr.Plot(label="Reply tokens", show_label=False, elem_id="reply_plot")
                attention_plot = gr.Plot(label="Where the reply listened", show_label=False, elem_id="attention_plot")
                talk_in = [audio_in, ckpt, temperature, top_k, top_p, seed, max_len, transcribe]
                talk_out = [reply, prompt_plot, reply_plot, timings, transcript, attention_plot]
                talk = gpu(wb.talk)
                go.click(talk, talk_in, talk_out, concurrency_id="generate", concurrency_limit=concurrency,
                         api_name="talk")
                if examples is not None:
                    examples.load_input_event.then(talk, talk_in, talk_out, concurrency_id="generate",
                                                   concurrency_limit=concurrency, api_visibility="private")
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
                answer = hf_turn.change(gpu(wb.reply_turn), [hf_state, ckpt, temperature, top_k, top_p, seed, max_len],
                                        [hf_reply, hf_latency], concurrency_id="generate",
                                        concurrency_limit=concurrency, api_visibility="private")
                hf_stop.change(lambda: None, None, hf_reply, cancels=[answer], queue=False, api_visibility="private")
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
            with gr.Tab("Model"):
                card = gr.Markdown()
                loss_plot = gr.Plot(label="Training loss", show_label=False)
        rescan.click(wb.rescan, [ckpt, folder], [ckpt, folder], api_visibility="private")
        for trigger in (ckpt.change, demo.load):
            trigger(wb.banner, ckpt, banner, api_visibility="private").then(
                wb.model_card, ckpt, [card, loss_plot], api_visibility="private")
    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    demo.workbench = wb  # for tests and scripts
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, **kwargs):
    """demo.launch with the app's limits and look (Gradio 6 takes theme and css here)."""
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
                       css=CSS, theme=gr.themes.Soft(), footer_links=["api", "gradio"], **kwargs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The s2s workbench app (Gradio).")
    # On a Hugging Face Space the runtime sets GRADIO_SERVER_NAME=0.0.0.0; anywhere else: this machine only.
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to serve on (default 127.0.0.1; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--share", action="store_true", help="also serve a public gradio.live link")
    p.add_argument("--checkpoint", default=None, help="checkpoint to start with (default: assets/prototype)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="model device (default: cuda if available)")
    p.add_argument("--root", action="append", default=None,
                   help="a folder visitors may pick checkpoints from (repeatable; default: assets/ and ckpts/)")
    p.add_argument("--concurrency", type=int, default=2, help="replies generated at once; the rest queue")
    return p.parse_args(argv)


def listened_figure(pipe, reply):
    """The cross-attention map of the reply over what the model heard (averaged over heads and
    layers), under the prompt's spectrogram; None when the reply has no frames."""
    from s2s.attention import cross_attention_map, prompt_segments

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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        wb = Workbench(args.checkpoint, args.device, args.root or DEFAULT_ROOTS)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if wb.default is not None:  # load before the first visitor, so the first reply is fast
        try:
            wb.pipeline(wb.default)
        except (ValueError, FileNotFoundError, CodecUnavailable) as e:
            if args.checkpoint is not None:
                raise SystemExit(f"error: --checkpoint {args.checkpoint}: {e}")
            log.error("the bundled prototype %s cannot be loaded: %s", wb.default, e)
    else:
        log.warning("no checkpoint: the bundled prototype %s is missing; pick one in the page", PROTOTYPE)
    wb.models.encodec_status()  # the banner says whether EnCodec is available; find out once, now
    launch(build_ui(wb, concurrency=args.concurrency), args.host, args.port, args.share)


if __name__ == "__main__":
    main()
