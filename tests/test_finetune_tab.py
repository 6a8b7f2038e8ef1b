"""The Fine-tune tab's handlers (tabs/finetune.py) on a real Workbench: each clip checked as it
comes, bad names and a second fine-tune refused with a message, old recordings swept. The page
itself runs in chromium in tests/test_app_browser.py."""

import os
import time

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

import app
from tabs import finetune as tab
from tests.test_finetune import base, clips  # noqa: F401 - fixtures


@pytest.fixture
def wb(base, tmp_path):  # noqa: F811
    return app.Workbench(base, "cpu", roots=[base.parent], finetune_root=tmp_path / "ckpts", finetune_eval_set="none")


def test_a_good_clip_is_kept_and_a_silent_one_is_said_at_once(wb, clips, tmp_path):  # noqa: F811
    state, ask, table, message = tab.first_view(wb)
    topic = state["order"][0]
    assert f"topic `{topic}`" in ask and "Ask in your own words" in ask
    sf.write(tmp_path / "quiet.wav", np.zeros(16000, dtype=np.float32), 16000)
    state, ask, table, message, clip = tab.add_clip(wb, str(tmp_path / "quiet.wav"), state)
    assert "silent or too short" in message and state["clips"] == [] and f"`{topic}`" in ask  # same topic again
    state, ask, table, message, clip = tab.add_clip(wb, str(clips / "capital_france.wav"), state)
    assert message.startswith("Kept clip 1") and table[0][1] == topic and state["index"] == 1
    kept = state["clips"][0]["file"]
    assert os.path.isfile(kept) and kept.startswith(str(tab.SESSIONS))
    state, *_ = tab.remove_last(wb, state)
    assert state["clips"] == [] and not os.path.exists(kept)


def test_bad_names_and_a_second_fine_tune_are_refused(wb, clips):  # noqa: F811
    state = tab.first_view(wb)[0]
    with pytest.raises(gr.Error, match="record at least 2"):
        tab.start(wb, wb.default, "mine", 10, 0.3, state)
    for name in ("capital_france.wav", "banana_color.wav", "spider_legs.wav"):
        state = tab.add_clip(wb, str(clips / name), state)[0]
    with pytest.raises(gr.Error, match="checkpoint name '../escape'"):
        tab.start(wb, wb.default, "../escape", 10, 0.3, state)
    first = tab.start(wb, wb.default, "mine", 10, 0.3, state)[0]
    again = {**first, "clips": state["clips"], "folder": state["folder"]}
    with pytest.raises(gr.Error, match="already queued or running"):
        tab.start(wb, wb.default, "mine2", 10, 0.3, again)
    deadline = time.time() + 300
    while time.time() < deadline and wb.finetune_jobs.status(first["job"])["state"] in ("queued", "running"):
        time.sleep(0.5)
    progress, result, to_ab = tab.poll(wb, first)
    assert "Before / after" in result and to_ab["visible"] is True, progress
    assert (wb.finetune_root / "mine" / "card.json").is_file()
    tabs, a, b = tab.open_ab(wb, first)
    assert a["value"] == wb.default and b["value"].endswith("mine")
    with pytest.raises(gr.Error, match="exists already"):
        tab.start(wb, wb.default, "mine", 10, 0.3, again)


def test_recordings_older_than_an_hour_are_swept(tmp_path):
    old, fresh, busy = (tmp_path / n for n in ("old", "fresh", "busy"))
    for folder in (old, fresh, busy):
        folder.mkdir()
    hour_ago = time.time() - 3700
    for folder in (old, busy):
        os.utime(folder, (hour_ago, hour_ago))
    gone = tab.sweep(root=tmp_path, busy=[str(busy)])
    assert gone == [old] and fresh.exists() and busy.exists()
