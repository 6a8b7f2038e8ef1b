"""Conversation mode measured in a real browser: Debian's chromium, a fake microphone playing a
wav whose speech ends are known, and the page's own clock. Prints JSON.

    python scripts/converse_browser.py                     # starts python app.py, 6 bundled prompts
    python scripts/converse_browser.py --url http://127.0.0.1:7860/ --turns 4 --barge-ins 2

The microphone file: 1 s of silence, then per turn a bundled prompt and 4.5 s of silence (the
reply plays), then per barge-in a prompt, 0.9 s of silence and a second prompt spoken over the
reply. In the page (tabs/converse.js) one AudioContext clocks the microphone's first sample
(capture start) and the first non-silent sample the player AudioWorklet plays; speech end in
page time = capture start + its offset in the file. Reported, medians over the turns:
speech end -> first sound, its parts (end-of-turn wait: speech end -> the page hears the turn
ended; server: decision -> first audio sent; transport + playback buffer: the rest), the
browser's output latency (not in the figures: the sound card's), and barge-in: the second
prompt's speech start -> the player silent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from s2s.io.audio import load_audio  # noqa: E402
from s2s.io.manifest import audio_path, read_manifest  # noqa: E402
from s2s.serve.converse_client import speech_end, speech_start  # noqa: E402
from s2s.serve.ports import free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
RATE = 48000  # the fake microphone file's rate (chromium resamples it for the page)


def mic_file(prompts: list[np.ndarray], turns: int, barge_ins: int, path: Path, gap_s: float = 4.5) -> dict:
    """Write the fake microphone wav (prompts at RATE); returns where speech ends and where the
    barge-in speech starts (seconds into the file)."""
    parts, t = [np.zeros(RATE, np.float32)], 1.0
    ends, barges = [], []
    it = iter(prompts * (turns + 2 * barge_ins))

    def add(x):
        nonlocal t
        parts.append(x)
        t += len(x) / RATE

    for _ in range(turns):
        x = next(it)
        ends.append(t + speech_end(x, RATE))
        add(x)
        add(np.zeros(int(gap_s * RATE), np.float32))
    for _ in range(barge_ins):
        x, y = next(it), next(it)
        ends.append(t + speech_end(x, RATE))
        add(x)
        add(np.zeros(int(0.9 * RATE), np.float32))
        barges.append(t + speech_start(y, RATE))
        add(y)
        add(np.zeros(int(gap_s * RATE), np.float32))
    sf.write(path, np.concatenate(parts), RATE, subtype="PCM_16")
    return {"speech_ends": ends, "barge_starts": barges, "seconds": t}


def bundled_prompts(n: int) -> list[np.ndarray]:
    manifest = ROOT / "assets" / "eval" / "manifest.jsonl"
    rows = [r for r in read_manifest(manifest) if r.get("split") == "eval_voices"][:n]
    return [load_audio(audio_path(manifest, r["prompt_audio"]), RATE).numpy() for r in rows]


def chromium_args(wav: Path) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}%noloop"]


def run_page(url: str, wav: Path, marks: dict, timeout_s: float, screenshot: str | None = None) -> dict:
    """Open the Conversation tab, start, wait out the microphone file, read window.s2sConverse."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=chromium_args(wav))
        page = browser.new_page(permissions=["microphone"])
        page.set_default_timeout(timeout_s * 1000)
        page.goto(url)
        page.get_by_role("tab", name="Conversation").click()
        page.locator("#converse .cv-start").click()
        page.wait_for_function("() => window.s2sConverse && window.s2sConverse.captureStart !== null")
        page.wait_for_timeout((marks["seconds"] + 1.0) * 1000)
        state = page.evaluate("() => JSON.parse(JSON.stringify(window.s2sConverse))")
        status = page.locator("#converse .cv-status").inner_text()
        if screenshot:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=screenshot, full_page=True)
        browser.close()
    state["status_text"] = status
    return state


def summarise(state: dict, marks: dict) -> dict:
    start = state["captureStart"]
    turns = sorted((t for t in state["turns"].values() if "speechEnd" in t), key=lambda t: t["speechEnd"])
    rows, barge = [], []
    for t in turns:
        heard = t["speechEnd"] - start  # where the server's VAD put the speech end (stream seconds)
        true_end = min(marks["speech_ends"], key=lambda e: abs(e - heard))
        if abs(true_end - heard) > 0.5:
            continue  # a turn the file does not have (a false start): reported in "turns_seen"
        if "sounding" not in t:
            continue
        end = start + true_end
        server = t.get("timings", {}).get("end_to_first_audio_sent_ms", float("nan"))
        rows.append({"speech_end_to_sound_ms": (t["sounding"] - end) * 1e3,
                     "end_of_turn_wait_ms": (t["decided"] - end) * 1e3,
                     "server_ms": server,
                     "transport_and_buffer_ms": (t["sounding"] - t["decided"]) * 1e3 - server,
                     "decision_to_sound_ms": (t["sounding"] - t["decided"]) * 1e3,
                     "vad_end_error_ms": (heard - true_end) * 1e3})
        if "silentAt" in t:
            onset = min(marks["barge_starts"], key=lambda b: abs(b - (t["bargeIn"] - start)), default=None)
            if onset is not None:
                barge.append((t["silentAt"] - (start + onset)) * 1e3)

    def med(key):
        values = [r[key] for r in rows if r[key] == r[key]]
        return round(statistics.median(values), 1) if values else None

    return {
        "turns_in_file": len(marks["speech_ends"]), "turns_played": len(rows), "turns_seen": len(turns),
        "speech_end_to_sound_ms": {"median": med("speech_end_to_sound_ms"),
                                   "all": [round(r["speech_end_to_sound_ms"], 1) for r in rows]},
        "parts_median_ms": {k: med(k) for k in ("end_of_turn_wait_ms", "server_ms", "transport_and_buffer_ms",
                                                 "decision_to_sound_ms", "vad_end_error_ms")},
        "barge_in_stop_ms": {"median": round(statistics.median(barge), 1) if barge else None,
                             "all": [round(b, 1) for b in barge], "expected": len(marks["barge_starts"])},
        "output_latency_ms": round(state.get("outputLatency", 0) * 1e3, 1),
        "end_silence_ms": (state.get("ready") or {}).get("end_silence_ms"),
        "closed": state.get("closed"), "errors": state.get("errors"),
    }


def start_app(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"app.py exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(1)
    proc.kill()
    raise SystemExit("app.py did not answer within 180 s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=None, help="a running app (default: start python app.py on a free port)")
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--barge-ins", type=int, default=2)
    p.add_argument("--prompts", nargs="*", default=None, help="wav files to speak (default: bundled eval_voices prompts)")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--screenshot", default=None, help="save the page at the end (png)")
    args = p.parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit("Debian's chromium is needed: apt-get install chromium")
    prompts = ([load_audio(f, RATE).numpy() for f in args.prompts] if args.prompts
               else bundled_prompts(args.turns + 2 * args.barge_ins))
    proc = None
    url = args.url
    if url is None:
        port = free_port()
        proc = start_app(port)
        url = f"http://127.0.0.1:{port}/"
    try:
        with tempfile.TemporaryDirectory() as d:
            wav = Path(d) / "mic.wav"
            marks = mic_file(prompts, args.turns, args.barge_ins, wav)
            state = run_page(url, wav, marks, args.timeout, args.screenshot)
        print(json.dumps(summarise(state, marks), indent=1))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
