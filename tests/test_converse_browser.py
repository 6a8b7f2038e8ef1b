"""The Conversation tab in Debian's chromium: a fake microphone speaks, the reply plays through
the page's AudioWorklet, and speaking over it stops it. Driven by scripts/converse_browser.py
(its JSON is what the test reads) against the app served in-process with the bundled prototype."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import app
from s2s.serve.ports import free_port

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def url():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    demo = app.build_ui(app.Workbench(None, "cpu"))
    app.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()
    demo.converse.close()


def test_a_reply_plays_and_speaking_over_it_stops_it(url, tmp_path):
    prompts = []
    for i, text in enumerate(["Turn the lights on, please.", "What time is it?", "Tell me a joke, please."]):
        prompts.append(tmp_path / f"{i}.wav")
        subprocess.run(["espeak-ng", "-w", str(prompts[-1]), text], check=True)
    out = subprocess.run([sys.executable, str(app.ROOT / "scripts" / "converse_browser.py"), "--url", url,
                          "--turns", "1", "--barge-ins", "1", "--prompts", *map(str, prompts)],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["errors"] == [] and result["closed"] is None
    # both questions were answered out loud in the page, timed from the known speech ends
    assert result["turns_played"] == 2
    assert all(0 < ms < 5000 for ms in result["speech_end_to_sound_ms"]["all"])
    # the second question, spoken over its reply, silenced the player
    assert len(result["barge_in_stop_ms"]["all"]) == 1
    assert 0 < result["barge_in_stop_ms"]["all"][0] < 1000
