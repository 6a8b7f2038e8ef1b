"""Conversation mode measured in a real browser: Debian's chromium (or Firefox ESR), a fake
microphone playing a wav whose speech ends are known, and the page's own clock. Prints JSON.

    python scripts/converse_browser.py                     # starts python app.py, 6 bundled prompts
    python scripts/converse_browser.py --url http://127.0.0.1:7860/ --turns 4 --barge-ins 2
    python scripts/converse_browser.py --browser firefox --turns 2 --barge-ins 1

The microphone file: 1 s of silence, then per turn a bundled prompt and 4.5 s of silence (the
reply plays), then per barge-in a prompt, 0.9 s of silence and a second prompt spoken over the
reply. In the page (tabs/converse.js) one AudioContext clocks the microphone's first sample
(capture start) and the first non-silent sample the player AudioWorklet plays; speech end in
page time = capture start + its offset in the file. Reported, medians over the turns:
speech end -> first sound, its parts (end-of-turn wait: speech end -> the page hears the turn
ended; server: decision -> first audio sent; transport + playback buffer: the rest), the
browser's output latency (not in the figures: the sound card's), and barge-in: the second
prompt's speech start -> the player silent.

Chromium (playwright drives Debian's build) plays the file as its fake capture device. Firefox
(Debian's firefox-esr, driven over WebDriver BiDi, which it speaks natively: `Firefox` below,
no driver binary) has a fake capture device too (prefs media.navigator.streams.fake), but it
plays a tone, not a file. So the Firefox run first starts a conversation on that device as it
is (the real getUserMedia -> AudioContext at the device's rate -> resampling worklet -> socket
path: reported as "device": the context's rate and the 24 kHz frames sent per second), stops it,
and then speaks the file: getUserMedia still opens the fake device (permission and constraints
as a visitor's), and the page is handed the file's stream instead (an AudioContext playing it
into a MediaStreamAudioDestinationNode), from the moment it asks for the microphone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
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
FIREFOX = "/usr/bin/firefox-esr"
RATE = 48000  # the fake microphone file's rate (the browser resamples it for the page)


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


def run_chromium(url: str, wav: Path, marks: dict, timeout_s: float, screenshot: str | None = None) -> dict:
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


class Firefox:
    """Debian's firefox-esr, headless, driven over WebDriver BiDi (a WebSocket of JSON commands:
    https://w3c.github.io/webdriver-bidi/) through the `websockets` package the server uses.

        with Firefox() as ff:
            ff.goto("http://127.0.0.1:7860/")
            ff.call("() => document.title")
    """

    PREFS = {
        "media.navigator.streams.fake": True,           # a fake capture device (a tone) ...
        "media.navigator.permission.disabled": True,    # ... given without asking
        "media.cubeb.force_mock_context": True,         # a mock sound card (runs in real time): headless
        "media.cubeb.force_sample_rate": 48000,         # machines have none; 48 kHz as most devices
        "media.autoplay.default": 0, "media.autoplay.block-webaudio": False,
        "network.dns.localDomains": "s2s.test",         # a name for 127.0.0.1 that is not a secure context
        "browser.shell.checkDefaultBrowser": False, "browser.aboutwelcome.enabled": False,
        "datareporting.policy.dataSubmissionEnabled": False, "toolkit.telemetry.reportingpolicy.firstRun": False,
        "browser.startup.homepage_override.mstone": "ignore", "app.update.disabledForTesting": True,
        "network.connectivity-service.enabled": False, "network.captive-portal-service.enabled": False,
        "browser.safebrowsing.malware.enabled": False, "browser.safebrowsing.phishing.enabled": False,
    }

    def __init__(self, executable: str = FIREFOX, prefs: dict | None = None, timeout_s: float = 60):
        self.executable, self.prefs, self.timeout_s = executable, {**self.PREFS, **(prefs or {})}, timeout_s
        self.log: list[str] = []
        self._id = 0

    def __enter__(self) -> "Firefox":
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self._profile = tempfile.TemporaryDirectory()
        Path(self._profile.name, "user.js").write_text(
            "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in self.prefs.items()))
        self.proc = subprocess.Popen([self.executable, "--headless", "--no-remote", "--profile", self._profile.name,
                                      "--remote-debugging-port", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        found = threading.Event()

        def drain():  # Firefox logs freely: read it all (a full pipe would stall the browser)
            for line in self.proc.stderr:
                self.log.append(line.rstrip())
                if not found.is_set() and "WebDriver BiDi listening on " in line:
                    self.endpoint = line.split("WebDriver BiDi listening on ", 1)[1].strip()
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(self.timeout_s):
            self.__exit__()
            raise RuntimeError("firefox-esr did not start WebDriver BiDi: " + " | ".join(self.log[-10:]))
        self.ws = self._stack.enter_context(connect(self.endpoint + "/session", max_size=None,
                                                    open_timeout=self.timeout_s))
        self.cmd("session.new", capabilities={})
        self.context = self.cmd("browsingContext.getTree")["contexts"][0]["context"]
        return self

    def __exit__(self, *exc) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                try:
                    self.cmd("session.end")
                except Exception:
                    pass
                self._stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._profile.cleanup()

    def cmd(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout_s
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") != self._id:
                continue  # an event: none are subscribed to
            if msg.get("type") == "error":
                raise RuntimeError(f"BiDi {method}: {msg.get('error')}: {msg.get('message')}")
            return msg["result"]

    def goto(self, url: str) -> None:
        self.cmd("browsingContext.navigate", context=self.context, url=url, wait="complete")

    def call(self, function: str, *args, user_activation: bool = False):
        """Run an (async) JavaScript function in the page with JSON-able args; returns its result
        through JSON (undefined -> None). A throw raises RuntimeError with the page's message."""
        r = self.cmd("script.callFunction", target={"context": self.context}, awaitPromise=True,
                     userActivation=user_activation,
                     functionDeclaration=f"async (...a) => JSON.stringify(await ({function})(...a.map(JSON.parse)))",
                     arguments=[{"type": "string", "value": json.dumps(a)} for a in args])
        if r["type"] == "exception":
            raise RuntimeError(f"page: {r['exceptionDetails']['text']}")
        value = r["result"].get("value")
        return None if value is None else json.loads(value)

    def wait(self, function: str, timeout_s: float | None = None, *args):
        """Poll a page function until it returns something truthy; returns that."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            value = self.call(function, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page: {function} stayed falsy for {timeout_s or self.timeout_s} s")
            time.sleep(0.1)


OPEN_TAB = """() => {
  const tab = [...document.querySelectorAll('[role="tab"]')].find((b) => b.textContent.trim() === "Conversation");
  if (!tab) return false;
  tab.click();
  const start = document.querySelector("#converse .cv-start");
  return !!start && start.offsetParent !== null;
}"""
CLICK = "(sel) => { document.querySelector(sel).click(); return true; }"
STATE = "() => ({...window.s2sConverse, status_text: document.querySelector('#converse .cv-status').textContent})"
# The file as the microphone: decoded now, played from the moment the page asks for the microphone.
SPEAK_FILE = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const player = new AudioContext();
  const audio = await player.decodeAudioData(bytes.buffer);
  const devices = navigator.mediaDevices, real = devices.getUserMedia.bind(devices);
  window.s2sFakeMic = {asked: 0};
  devices.getUserMedia = async (constraints) => {
    const device = await real(constraints);  // Firefox's fake device: the visitor's path, then set aside
    window.s2sFakeMic.asked += 1; window.s2sFakeMic.device = device.getAudioTracks()[0].label;
    device.getTracks().forEach((t) => t.stop());
    await player.resume();
    const src = player.createBufferSource(), out = player.createMediaStreamDestination();
    src.buffer = audio; src.connect(out); src.start();
    return out.stream;
  };
  return {rate: player.sampleRate, seconds: audio.duration};
}"""


def run_firefox(url: str, wav: Path, marks: dict, timeout_s: float, device_seconds: float = 3.0) -> dict:
    """The Firefox run: the fake device as it is for `device_seconds` (frames per second sent),
    then a conversation spoken from `wav`; returns window.s2sConverse of the second, plus "device"."""
    import base64

    with Firefox(timeout_s=timeout_s) as ff:
        ff.goto(url)
        ff.wait(OPEN_TAB)
        ff.call(CLICK, "#converse .cv-start", user_activation=True)
        ff.wait("() => window.s2sConverse.micStarted && window.s2sConverse.sent > 0 || window.s2sConverse.errors.length")
        t0, sent0 = time.monotonic(), ff.call("() => window.s2sConverse.sent")
        time.sleep(device_seconds)
        dev = ff.call(STATE)
        device = {"context_rate": dev["contextRate"], "captured_s": round(dev["micSeconds"], 3),
                  "sent_s": dev["sent"] * 480 / 24000,  # 20 ms frames of 24 kHz int16
                  "frames_per_wall_s": round((dev["sent"] - sent0) / (time.monotonic() - t0), 1),
                  "status_text": dev["status_text"], "errors": dev["errors"], "closed": dev["closed"]}
        ff.call(CLICK, "#converse .cv-stop", user_activation=True)
        ff.call(SPEAK_FILE, base64.b64encode(wav.read_bytes()).decode())
        ff.call(CLICK, "#converse .cv-start", user_activation=True)
        ff.wait("() => window.s2sConverse.captureStart !== null || window.s2sConverse.errors.length")
        time.sleep(marks["seconds"] + 1.0)
        state = ff.call(STATE)
        state["device"] = device
        state["fake_mic"] = ff.call("() => window.s2sFakeMic")
    return state


def run_page(url: str, wav: Path, marks: dict, timeout_s: float, screenshot: str | None = None,
             browser: str = "chromium") -> dict:
    if browser == "firefox":
        return run_firefox(url, wav, marks, timeout_s)
    return run_chromium(url, wav, marks, timeout_s, screenshot)


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
        "closed": state.get("closed"), "errors": state.get("errors"), "status_text": state.get("status_text"),
        "context_rate": state.get("contextRate"), **({"device": state["device"]} if "device" in state else {}),
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
    p.add_argument("--screenshot", default=None, help="save the page at the end (png; chromium only)")
    p.add_argument("--browser", choices=("chromium", "firefox"), default="chromium")
    args = p.parse_args(argv)
    exe, package = (FIREFOX, "firefox-esr") if args.browser == "firefox" else (CHROMIUM, "chromium")
    if not Path(exe).exists():
        raise SystemExit(f"Debian's {package} is needed: apt-get install {package}")
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
            state = run_page(url, wav, marks, args.timeout, args.screenshot, args.browser)
        print(json.dumps({"browser": args.browser, **summarise(state, marks)}, indent=1))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
