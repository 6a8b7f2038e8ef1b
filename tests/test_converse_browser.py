"""The Conversation tab in Debian's chromium: a fake microphone speaks, the reply plays through
the page's AudioWorklet, and speaking over it stops it. Driven by scripts/converse_browser.py
(its JSON is what the test reads) against `python app.py` with the bundled prototype."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import app

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")


def test_a_reply_plays_and_speaking_over_it_stops_it(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    prompts = []
    for i, text in enumerate(["Turn the lights on, please.", "What time is it?", "Tell me a joke, please."]):
        prompts.append(tmp_path / f"{i}.wav")
        subprocess.run(["espeak-ng", "-w", str(prompts[-1]), text], check=True)
    # no --url: the script starts `python app.py` as a person would (its own process, warmed up
    # before the first visitor); served inside the test process, the first reply came ~1.5 s late
    out = subprocess.run([sys.executable, str(app.ROOT / "scripts" / "converse_browser.py"),
                          "--turns", "1", "--barge-ins", "1", "--prompts", *map(str, prompts)],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["errors"] == [] and result["closed"] is None
    # both questions were answered out loud in the page, timed from the known speech ends. The
    # README's targets are 400 ms (speech end -> sound) and 200 ms (barge-in -> silent); on this
    # 2-core machine, shared, 2026-12-03: 413-774 ms and 122-360 ms over 26 turns and 11 barge-ins
    # at load averages 3-7. The bounds keep that margin and fail on half a second lost. With the
    # turn head (the default) a turn it does not call finished waits for the 1 s fallback silence,
    # and speech over a reply it does not stop at its onset is stopped at 0.9 s at the latest:
    # the bounds add those (scripts/turn_bench.py measures how often each happens).
    assert result["turns_played"] == 2, result
    assert result["context_rate"] in (44100, 48000)  # the device's rate: the page resamples to 24 kHz
    assert all(0 < ms <= 1800 for ms in result["speech_end_to_sound_ms"]["all"]), result
    # the second question, spoken over its reply, silenced the player
    assert len(result["barge_in_stop_ms"]["all"]) == 1
    assert 0 < result["barge_in_stop_ms"]["all"][0] <= 1400, result
