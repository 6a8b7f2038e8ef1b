"""The s2s workbench app: talk to a checkpoint, look inside it, compare codecs, run the eval.

    python app.py                                   # http://127.0.0.1:7860, the bundled prototype
    python app.py --checkpoint ckpts/run1 --device cpu --port 7861
    python app.py --host 0.0.0.0 --root /data/ckpts # serve on the network; allow another folder
    python app.py --share                           # a public gradio.live link (off by default)

Tabs: Talk (record or upload, the reply streams back while it is generated, token grids and
timings beside it), Hands-free (voice activity ends your turn, speaking over the reply stops
it), Conversation (the same over a WebSocket and an AudioWorklet, several people at once,
batched), A/B (two checkpoints answer one prompt blind, the listener votes), Codec (a clip
through every codec available, with MCD / log-F0 RMSE / WER), Evaluate
(eval.run over a checkpoints folder), Model (the live checkpoint's card and loss curve),
Fine-tune (say the questions in your own words, get a checkpoint that understands you).
A/B and Evaluate write reports/, Fine-tune ckpts/: on a Hugging Face Space (SPACE_ID set) they
are off, tab and API endpoint, unless the owner turns them on (--enable-tabs ab,evaluate,finetune
or S2S_ENABLE_TABS).

UI only: models load on first use (or in main() before launching), never at import; all state
lives in the Workbench that build_ui() creates. Visitors can only name folders under the
configured roots (assets/ and ckpts/ by default, plus --checkpoint); see s2s/serve/guard.py.
This file is the front door: the Workbench (models, folders, the banner), the page around the
tabs and the command line; each tab, its handlers and its layout, is a module of tabs/.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import gradio as gr

from s2s.codecs.codec import CodecUnavailable
from s2s.data.eval_bundle import example_prompts
from s2s.serve.converse_limits import Limits, add_limit_flags, limit_flags
from s2s.serve.guard import FolderGuard
from s2s.serve.model_cache import ModelCache
from s2s.serve.pipeline import PROTOTYPE
from tabs import ab as ab_tab
from tabs import codec as codec_tab
from tabs import converse as converse_tab
from tabs import evaluate as evaluate_tab
from tabs import finetune as finetune_tab
from tabs import handsfree as handsfree_tab
from tabs import model as model_tab
from tabs import talk as talk_tab
from tabs.common import ENABLE_TABS_ENV, OPTIONAL_TAB_NAMES, OPTIONAL_TABS, optional_tabs
from tabs.format import codec_label

log = logging.getLogger("s2s.app")

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"
DEFAULT_ROOTS = (ASSETS, ROOT / "ckpts")
REPORTS = ROOT / "reports"
CKPTS = ROOT / "ckpts"  # where the Fine-tune tab writes
MAX_FILE_SIZE = "25mb"  # a minute of 48 kHz stereo 16-bit wav is 11.5 MB
CSS = """
#banner {padding: 0.6em 1em; border-radius: 8px; background: var(--block-background-fill);
         border: 1px solid var(--border-color-primary)}
#banner p {margin: 0.2em 0}
.warn {color: #a15c00; font-weight: 600}
"""


class Workbench:
    """Everything the UI calls: one per build_ui(), owning the model cache and the folder guard."""

    def __init__(self, checkpoint=None, device=None, roots=DEFAULT_ROOTS, *, pipeline_loader=None,
                 codec_loader=None, asr_loader=None, evaluate=None, examples=None, reports=REPORTS,
                 max_pipelines=2, finetune_root=CKPTS, finetune_eval_set=None):
        extra = {k: v for k, v in (("pipeline_loader", pipeline_loader), ("codec_loader", codec_loader)) if v}
        self.models = ModelCache(device, asr_loader=asr_loader, max_pipelines=max_pipelines, **extra)
        roots = list(roots)
        if checkpoint is not None:  # the operator's own choice is always allowed
            roots.append(Path(checkpoint))
        # tabs/finetune.py: where fine-tunes are written, what they are scored on besides the person's
        # held-out clips (None: the bundled eval set; "none": only those clips), their job queue
        self.finetune_root, self.finetune_eval_set, self.finetune_jobs = Path(finetune_root), finetune_eval_set, None
        roots.append(self.finetune_root)  # a fine-tune's checkpoint can be chosen and compared
        self.guard = FolderGuard(roots, base=ROOT)
        if checkpoint is None and (PROTOTYPE / "config.json").is_file():
            checkpoint = PROTOTYPE
        self.default = self.guard.label(Path(checkpoint).resolve()) if checkpoint is not None else None
        self.evaluate_fn, self.reports = evaluate, Path(reports)
        # [(clip, label)]: by default a few prompts of the bundled eval set (none if it is missing)
        self.examples = list(examples) if examples is not None else example_prompts(ASSETS / "eval")

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

    def rescan(self, checkpoint):
        return gr.update(choices=self.guard.checkpoints(), value=checkpoint)

    # The tabs' handlers (tabs/*.py): functions of the workbench, bound here as its methods, so
    # gradio and the tests call wb.talk(...), wb.compare_codecs(...) and so on.
    talk, transcript = talk_tab.talk, talk_tab.transcript
    listen, reply_turn = handsfree_tab.listen, handsfree_tab.reply_turn
    ab_serve, ab_vote, ab_choices = ab_tab.ab_serve, ab_tab.ab_vote, ab_tab.ab_choices
    compare_codecs = codec_tab.compare_codecs
    run_eval, folder_choices = evaluate_tab.run_eval, evaluate_tab.folder_choices
    model_card = model_tab.model_card



def build_ui(workbench: Workbench | None = None, *, concurrency: int = 2, converse_limits=None,
             tabs: str | None = None, **options) -> gr.Blocks:
    """The app's Blocks. workbench: a ready Workbench (tests pass one with loader overrides);
    else one is made from options (checkpoint, device, roots, pipeline_loader, codec_loader,
    asr_loader, evaluate, examples). concurrency: replies generated at once (the rest queue).
    converse_limits: the Conversation tab's s2s.serve.converse.Limits (sessions, end-of-turn silence).
    tabs: the optional tabs (A/B, Evaluate: they write reports/) as --enable-tabs takes them; None =
    S2S_ENABLE_TABS, else all locally and none on a Hugging Face Space (tabs/common.py)."""
    enabled = optional_tabs(tabs)
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
        if off := [OPTIONAL_TAB_NAMES[t] for t in OPTIONAL_TABS if t not in enabled]:
            names = off[0] if len(off) == 1 else f"{', '.join(off[:-1])} and {off[-1]}"
            gr.Markdown(f"*{names} {'is' if len(off) == 1 else 'are'} off on this server: its owner "
                        f"can turn {'it' if len(off) == 1 else 'them'} on (`--enable-tabs` or {ENABLE_TABS_ENV}).*",
                        elem_id="tabs_off")
        with gr.Tabs() as tab_set:
            settings = talk_tab.build(wb, ckpt, concurrency)
            handsfree_tab.build(wb, ckpt, settings, concurrency)
            converse_tab.build(wb)
            ab_dropdowns = ab_tab.build(wb, concurrency) if "ab" in enabled else None
            codec_tab.build(wb)
            folder = evaluate_tab.build(wb) if "evaluate" in enabled else None
            card, loss_plot = model_tab.build(wb)
            finetune_view = finetune_tab.build(wb, ckpt, tab_set, ab_dropdowns) if "finetune" in enabled else None
        rescanned = rescan.click(wb.rescan, ckpt, ckpt, api_visibility="private")
        if folder is not None:
            rescanned.then(wb.folder_choices, folder, folder, api_visibility="private")
        if ab_dropdowns is not None:
            rescanned.then(wb.ab_choices, list(ab_dropdowns), list(ab_dropdowns), api_visibility="private")
        if finetune_view is not None:
            demo.load(lambda: finetune_tab.first_view(wb), None, finetune_view, api_visibility="private")
        for trigger in (ckpt.change, demo.load):
            trigger(wb.banner, ckpt, banner, api_visibility="private").then(
                wb.model_card, ckpt, [card, loss_plot], api_visibility="private")
    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    demo.workbench, demo.optional_tabs = wb, enabled  # for tests and scripts
    demo.converse = converse_tab.server(wb, converse_limits)  # its WebSocket route: launch() mounts it
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, **kwargs):
    """demo.launch with the app's limits and look (Gradio 6 takes theme and css here), and the
    conversation WebSocket route on Gradio's own FastAPI app (same port; wss on a Space)."""
    routes = [demo.converse.route(converse_tab.PATH)] if getattr(demo, "converse", None) else []
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
                       css=CSS, theme=gr.themes.Soft(), footer_links=["api", "gradio"],
                       # no server-side rendering: its Node server would sit in front of the Python
                       # one, and the conversation WebSocket is a route of the Python server
                       app_kwargs={"routes": routes}, ssr_mode=False, **kwargs)


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
    p.add_argument("--enable-tabs", default=None, metavar="TABS",
                   help="optional tabs that write reports/ (ab, evaluate; comma-separated, all or none); "
                        "default: $S2S_ENABLE_TABS, else all locally and none on a Hugging Face Space")
    p.add_argument("--max-conversations", type=int, default=Limits.max_sessions,
                   help="Conversation tab: sessions at once, batched by one scheduler (more get 'busy')")
    p.add_argument("--end-silence-ms", type=float, default=Limits.end_silence_ms,
                   help="Conversation tab: the silence that ends a turn when there is no turn head (--turn-head none)")
    add_limit_flags(p)  # Conversation tab: --allowed-origins, --max-per-client, idle and length limits
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        wb = Workbench(args.checkpoint, args.device, args.root or DEFAULT_ROOTS)
        optional_tabs(args.enable_tabs)  # a tab name it does not know stops here
        limits = Limits(max_sessions=args.max_conversations, end_silence_ms=args.end_silence_ms,
                        **limit_flags(args))
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
    demo = build_ui(wb, concurrency=args.concurrency, converse_limits=limits, tabs=args.enable_tabs)
    if wb.default is not None:  # the conversation scheduler and its warm-up, before the first visitor too
        try:
            demo.converse.ready()
        except (ValueError, FileNotFoundError, CodecUnavailable) as e:
            log.error("conversation mode is not available: %s", e)
    launch(demo, args.host, args.port, args.share)


if __name__ == "__main__":
    main()
