"""The Conversation tab in Debian's Firefox ESR, driven over WebDriver BiDi (Firefox speaks it
natively; scripts/converse_browser.py's `Firefox`), against the app served in-process with the
bundled prototype. Firefox's fake microphone (prefs media.navigator.streams.fake) and a mock sound
card (media.cubeb.force_mock_context at 48 kHz) stand in for the hardware a headless machine lacks.

- a conversation: the page opens its AudioContext at the device's rate (48 kHz, not the wire's
  24 kHz: Firefox refuses to connect a microphone to a context of another rate), the worklet
  resamples the fake device to 24 kHz in step with the device's clock, then espeak-ng prompts
  spoken as the microphone are answered out loud in the page and speaking over a reply stops it;
- every failure to start says its real cause in the page: an insecure context (http on a name
  that is not localhost), a refused microphone, and the server's own close reason.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import app
from s2s.serve.converse_limits import Limits
from s2s.serve.ports import free_port

sys.path.insert(0, str(app.ROOT / "scripts"))
from converse_browser import CLICK, FIREFOX, OPEN_TAB, STATE, Firefox  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workbench():
    if not Path(FIREFOX).exists():
        pytest.skip("Debian's firefox-esr is not installed (apt-get install firefox-esr)")
    return app.Workbench(None, "cpu")


def serve(wb, limits=None):
    demo = app.build_ui(wb, converse_limits=limits)
    demo.converse.ready()  # as python app.py does before the first visitor: a warm first reply
    app.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo


@pytest.fixture(scope="module")
def url(workbench):
    demo = serve(workbench)
    yield demo.local_url
    demo.close()
    demo.converse.close()


def test_a_conversation_in_firefox(url, tmp_path):
    prompts = []
    for i, text in enumerate(["Turn the lights on, please.", "What time is it?", "Tell me a joke, please."]):
        prompts.append(tmp_path / f"{i}.wav")
        subprocess.run(["espeak-ng", "-w", str(prompts[-1]), text], check=True)
    out = subprocess.run([sys.executable, str(app.ROOT / "scripts" / "converse_browser.py"), "--browser", "firefox",
                          "--url", url, "--turns", "1", "--barge-ins", "1", "--prompts", *map(str, prompts)],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    # the device as it is: a 48 kHz context (not 24 kHz), and 24 kHz frames sent in step with it
    device = result["device"]
    assert device["context_rate"] == 48000 and device["errors"] == [] and device["closed"] is None, device
    assert device["status_text"].startswith("Listening"), device
    assert device["captured_s"] > 1.5 and abs(device["sent_s"] - device["captured_s"]) < 0.05, device
    # spoken prompts: answered out loud in the page, timed from the known speech ends (which the
    # server's VAD found within 0.5 s: the stream's clock is the file's, so the wire is 24 kHz)
    assert result["errors"] == [] and result["closed"] is None, result
    assert result["turns_played"] == 2, result
    assert all(0 < ms <= 1800 for ms in result["speech_end_to_sound_ms"]["all"]), result  # as in chromium
    # the second question, spoken over its reply, silenced the player (as in chromium: the turn
    # head stops it at its onset, or at 0.9 s at the latest)
    assert any(0 < ms <= 1400 for ms in result["barge_in_stop_ms"]["all"]), result


def start_and_settle(ff, until: str, timeout_s: float = 20) -> dict:
    ff.wait(OPEN_TAB)
    ff.call(CLICK, "#converse .cv-start", user_activation=True)
    ff.wait(until, timeout_s)
    time.sleep(0.3)  # nothing may overwrite the cause
    return ff.call(STATE)


def test_failures_to_start_say_why(workbench, url):
    port = url.rstrip("/").rsplit(":", 1)[1]
    with Firefox() as ff:
        # http on a name that is not localhost (the prefs map s2s.test to 127.0.0.1): no microphone
        ff.goto(f"http://s2s.test:{port}/")
        state = start_and_settle(ff, "() => window.s2sConverse.errors.length")
        assert "not a secure context" in state["status_text"] and "https" in state["status_text"], state
        assert "TypeError" not in state["status_text"] and state["ready"] is None

        # the server closes the conversation: the page says what it said
        short = serve(workbench, Limits(max_conversation_s=3.0))
        try:
            ff.goto(short.local_url)
            state = start_and_settle(ff, "() => window.s2sConverse.closed", 30)
        finally:
            short.close()
            short.converse.close()
        closed = state["closed"]
        assert closed["code"] == 1000 and closed["reason"], state
        assert state["status_text"] == f"Conversation closed by the server (1000): {closed['reason']}", state

    # a refused microphone (Firefox's own permission check, set to block)
    with Firefox(prefs={"media.navigator.permission.disabled": False, "permissions.default.microphone": 2}) as ff:
        ff.goto(url)
        state = start_and_settle(ff, "() => window.s2sConverse.errors.length")
        assert state["status_text"].startswith("Could not start: the microphone was refused"), state
        assert "NotAllowedError" in state["status_text"] and not state["micStarted"], state
        assert ff.call("() => document.querySelector('#converse .cv-start').disabled") is False
