"""Time to first reply audio through the running app: Talk's /talk endpoint, timed by a client.

    python app.py --checkpoint DIR &                      # a running app, here or elsewhere
    python scripts/ttfa_app.py --url http://127.0.0.1:7860/ --checkpoint DIR --runs 11
    python scripts/ttfa_app.py --launch --checkpoint DIR  # start the app in this process instead

Per run, gradio_client (download_files=False) submits the prompt and records the time from
submit to the first output carrying the streamed reply (what the page starts playing from),
and to the end of the job. Each submit includes uploading the prompt, which the page does
before the button is pressed (when recording stops), so the figure is an overestimate by the
upload time, printed beside it. The first run warms up and is left out of the medians.
--world-vq-tables FILE (with --launch): WORLD-VQ tables other than the bundled ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def default_prompt() -> Path:
    from s2s.data.eval_bundle import example_prompts

    examples = example_prompts(ROOT / "assets" / "eval", n=1)
    if examples:
        return examples[0][0]
    import pysptk

    return Path(pysptk.util.example_audio_file())  # CMU ARCTIC, 16 kHz, ships with pysptk


def launch(checkpoint: str, device: str | None, tables: str | None) -> tuple[str, str]:
    """The app on a free port of 127.0.0.1 -> (its URL, the checkpoint as its page names it)."""
    import app
    from s2s.codecs.codec import load_codec
    from s2s.serve.ports import free_port

    def codec_loader(name, **options):
        if name == "world_vq" and tables:
            options["tables"] = tables
        return load_codec(name, **options)

    wb = app.Workbench(checkpoint, device, codec_loader=codec_loader)
    wb.pipeline(wb.default)
    demo = app.build_ui(wb)
    app.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo.local_url, wb.default


def time_runs(url: str, checkpoint: str, prompt: Path, runs: int, max_seconds: float, seed: int) -> list[dict]:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    rows = []
    for i in range(runs):
        t0 = time.perf_counter()
        job = client.submit(handle_file(str(prompt)), checkpoint, 0.7, 50, 1.0, seed, max_seconds, False,
                            api_name="/talk")
        first = None
        for out in job:
            if first is None and isinstance(out[0], dict) and out[0].get("url"):
                first = time.perf_counter()
        done = time.perf_counter()
        result = job.outputs()[-1] if job.outputs() else None
        server = {row[0]: row[1] for row in result[3]["data"]} if result else {}
        up0 = time.perf_counter()
        with open(prompt, "rb") as f:
            httpx.post(url + "gradio_api/upload", files={"files": (prompt.name, f)}, timeout=60).raise_for_status()
        rows.append({"run": i, "first_audio_ms": (first - t0) * 1e3 if first else float("nan"),
                     "done_ms": (done - t0) * 1e3, "upload_ms": (time.perf_counter() - up0) * 1e3,
                     "pipeline_ttfa": server.get("time to first audio", "?"),
                     "reply": server.get("reply length", "?")})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Time from pressing Reply to the first reply audio, over the app.")
    p.add_argument("--url", default="http://127.0.0.1:7860/", help="a running app (ignored with --launch)")
    p.add_argument("--launch", action="store_true", help="start the app in this process on a free port")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, as the app's Checkpoint box takes it")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="with --launch: model device")
    p.add_argument("--world-vq-tables", default=None, help="with --launch: WORLD-VQ tables file")
    p.add_argument("--prompt", default=None, help="prompt audio (default: a bundled eval prompt)")
    p.add_argument("--runs", type=int, default=11, help="runs, the first one a warm-up")
    p.add_argument("--max-seconds", type=float, default=2.0, help="longest reply")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.runs < 2:
        raise SystemExit("error: --runs must be >= 2 (the first is a warm-up)")
    prompt = Path(args.prompt) if args.prompt else default_prompt()
    if args.launch:
        url, checkpoint = launch(args.checkpoint, args.device, args.world_vq_tables)
    else:
        url, checkpoint = args.url.rstrip("/") + "/", args.checkpoint
    rows = time_runs(url, checkpoint, prompt, args.runs, args.max_seconds, args.seed)
    print(f"app {url} checkpoint {checkpoint} prompt {prompt.name} reply <= {args.max_seconds} s")
    print(f"{'run':>4} {'first audio ms':>15} {'done ms':>9} {'upload ms':>10} {'pipeline TTFA':>14} {'reply':>7}")
    for r in rows:
        print(f"{r['run']:>4} {r['first_audio_ms']:>15.0f} {r['done_ms']:>9.0f} {r['upload_ms']:>10.1f} "
              f"{r['pipeline_ttfa']:>14} {r['reply']:>7}" + ("  (warm-up)" if r["run"] == 0 else ""))
    timed = rows[1:]
    print(f"median time to first audio: {statistics.median(r['first_audio_ms'] for r in timed):.0f} ms "
          f"(upload {statistics.median(r['upload_ms'] for r in timed):.0f} ms of it; "
          f"{len(timed)} runs; done at {statistics.median(r['done_ms'] for r in timed):.0f} ms)")


if __name__ == "__main__":
    main()
