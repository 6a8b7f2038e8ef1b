"""The page in a real browser: Debian's chromium (apt-get install chromium), headless, driven by
playwright (pip's own browser download does not work here, so its executable_path is set).

The app runs in-process on a free port with a tiny random checkpoint; screenshots are kept in
reports/screenshots/ (gitignored). Hands-free talks through chromium's fake microphone, fed
from a wav file of espeak-ng speech and silence (the file loops, so the speech comes back
while the reply plays: a barge-in). The A/B tab's vote goes to a votes database in the test's
own reports folder, and eval.run --votes then counts it.
"""

import csv
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import app
from eval import run
from s2s.codecs.codec import CodecUnavailable, load_codec
from s2s.models.checkpoint import save_checkpoint
from s2s.models.model import ModelConfig, S2SModel
from s2s.serve.ports import free_port

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = app.ROOT / "reports" / "screenshots"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("browser")
    subprocess.run(["espeak-ng", "-w", str(d / "hello.wav"), "Hello there, how are you today?"], check=True)
    x, sr = sf.read(d / "hello.wav", dtype="float32")
    mic = soxr.resample(x, sr, 48000)  # fake microphone: 0.5 s silence, speech, 2 s silence, looped
    sf.write(d / "mic.wav", np.concatenate([np.zeros(24000), mic, np.zeros(96000)]), 48000, subtype="PCM_16")
    (d / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    return d


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("browser-app")


@pytest.fixture(scope="module")
def url(root, tiny_encodec, speech):
    try:
        codec = load_codec("world_vq")
    except (ImportError, CodecUnavailable, OSError, ValueError):
        codec = tiny_encodec
    torch.manual_seed(0)
    cfg = ModelConfig(n_codebooks=codec.n_codebooks, cardinality=codec.cardinality, d_model=32, n_layer=2,
                      n_head=4, d_ff=64, max_reply_frames=225)
    ckpt = save_checkpoint(root / "ckpts" / "tiny", S2SModel(cfg), codec.describe())
    torch.manual_seed(1)  # a second model for the A/B tab
    save_checkpoint(root / "ckpts" / "tiny_b", S2SModel(cfg), codec.describe())
    wb = app.Workbench(ckpt, "cpu", roots=[root / "ckpts"], codec_loader=lambda name, **o: codec,
                       examples=[(speech / "hello.wav", "hello there")], reports=root / "reports",
                       finetune_root=root / "ckpts", finetune_eval_set="none")
    demo = app.build_ui(wb)
    app.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def browser(speech):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={speech / 'mic.wav'}"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield b
        b.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["microphone"])
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#banner >> text=Live:")
    yield page
    context.close()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def test_an_example_plays_the_reply_and_shows_the_token_grids(page):
    page.evaluate("""() => { window.played = 0; document.addEventListener('playing',
                        () => { window.played = performance.now(); }, true); }""")
    page.get_by_role("button", name="hello there").click()
    page.wait_for_selector("#prompt_plot img")
    page.wait_for_selector("#reply_plot img")
    page.wait_for_function("() => window.played > 0")  # the streamed reply really plays
    assert page.locator("#reply_audio audio").count() == 1
    assert page.locator("#timings").get_by_text("time to first audio").count() == 1
    for plot in ("#prompt_plot img", "#reply_plot img"):
        box = page.locator(plot).bounding_box()
        assert box["width"] > 300 and box["height"] > 150
    shot(page, "talk.png")


def test_a_broken_upload_shows_its_message_in_the_page(page, speech):
    page.locator('#talk_in button[aria-label="Upload file"]').click()
    page.locator("#talk_in input[type=file]").set_input_files(str(speech / "broken.wav"))
    page.get_by_role("button", name="Reply", exact=True).click()
    page.get_by_test_id("toast-text").get_by_text("could not read 'broken.wav' as audio").wait_for()
    page.wait_for_timeout(500)  # the toast slides in
    shot(page, "bad-upload.png")
    page.get_by_role("button", name="hello there").click()  # and the server still serves
    page.wait_for_selector("#reply_plot img")


def test_hands_free_ends_the_turn_on_silence_and_stops_on_barge_in(page):
    page.get_by_role("tab", name="Hands-free").click()
    page.get_by_role("button", name="Record").last.click()
    # 120 s: once in CI (2026-12-06) the first reply took over 60 s to be timed under load; a rerun passed
    page.get_by_text("End of speech → first reply audio").wait_for(timeout=120_000)
    assert page.locator("audio").count() >= 1  # the reply player
    # the fake microphone loops: its speech comes back while the reply plays
    page.get_by_text("Interrupted: you spoke over the reply").wait_for()
    shot(page, "hands-free.png")
    latency = page.get_by_text("End of speech → first reply audio").inner_text()
    assert int(latency.split(":")[1].split("ms")[0].strip(" *")) > 0  # timed, not bounded: scripts/ttfa_app.py measures


def test_an_ab_vote_is_stored_and_the_report_counts_it(page, root, spoken_manifest):
    page.get_by_role("tab", name="A/B").click()
    page.locator("#ab_examples").get_by_role("button", name="hello there").click()  # fills the prompt
    vote = page.locator("#ab_vote_A")
    assert vote.is_disabled()  # nothing served yet, nothing to vote on
    page.get_by_role("button", name="Answer with both").click()
    page.wait_for_function("() => !document.querySelector('#ab_vote_A').disabled")
    assert page.locator("#ab_a audio").count() >= 1 and page.locator("#ab_b audio").count() >= 1  # both players
    # names hidden until the vote: not in the tab's text (the pickers' values are inputs, not text), nor in
    # the players (their sources, labels, download names); after the vote the same text names both
    def shown():
        return page.locator("#ab_tab").inner_text() + page.locator("#ab_a").inner_html() + \
            page.locator("#ab_b").inner_html()
    before = shown()
    assert "/gradio_api/file=" in before and "tiny" not in before, before
    vote.click()
    page.wait_for_function("() => document.querySelector('#ab_result').innerText.includes('B was')")
    assert "tiny" in shown() and "tiny_b" in shown()
    reveal = page.locator("#ab_result").inner_text()
    named = re.search(r"A was\s+`?([^`,\s]+)`?\s*,\s*B was", reveal)
    assert named, reveal
    a_name = named.group(1)  # the checkpoint's folder label
    assert Path(a_name).name in ("tiny", "tiny_b") and "B was" in reveal and "1 votes" in reveal
    assert vote.is_disabled()  # one vote per served pair
    shot(page, "ab.png")

    out = root / "reports" / "with-votes"
    run.main(["--checkpoints", str(root / "ckpts"), "--data", str(spoken_manifest), "--limit", "1",
              "--no-latency", "--no-ceiling", "--workers", "0", "--quiet", "--out", str(out),
              "--votes", str(root / "reports" / "votes.sqlite")])
    with open(out / "votes.csv", newline="") as f:
        ranking = {r["model"]: r for r in csv.DictReader(f)}
    assert {Path(m).name for m in ranking} == {"tiny", "tiny_b"}
    assert ranking[a_name]["wins"] == "1" and ranking[a_name]["rank"] == "1" and ranking[a_name]["games"] == "1"
    report = (out / "report.md").read_text()
    assert "## Blind A/B preference (votes)" in report and "1 blind A/B votes" in report


def test_a_fine_tune_from_the_page(page, root, tmp_path):
    """Record a clip through the fake microphone, add a zip of flite clips, fine-tune the live
    checkpoint in its own process, see the before / after table, open A/B with the two."""
    import json as _json
    import zipfile

    from tests.test_recordings import flite

    page.get_by_role("tab", name="Fine-tune").click()
    page.wait_for_selector("#ft_question >> text=Ask in your own words")
    clip = page.locator("#ft_clip")
    clip.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_timeout(3000)  # the fake microphone's speech
    clip.get_by_role("button", name="Stop", exact=True).click()
    page.wait_for_selector("#ft_message >> text=Kept clip 1")
    with zipfile.ZipFile(tmp_path / "clips.zip", "w") as z:
        for topic, text in (("capital_france", "What is the capital of France?"),
                            ("banana_color", "What color is a banana?")):
            z.write(flite(tmp_path / f"{topic}.wav", text), f"{topic}.wav")
    page.get_by_text("Or upload a zip of clips").click()
    page.locator("#ft_zip input[type=file]").set_input_files(str(tmp_path / "clips.zip"))
    page.wait_for_timeout(500)
    page.locator("#ft_add_zip").click()
    page.wait_for_selector("#ft_message >> text=Added 2 clips from the zip")
    table = page.locator("#ft_clips").inner_text()
    assert "banana_color" in table and "capital_france" in table, table
    page.locator("#ft_name textarea, #ft_name input").first.fill("from-the-page")
    page.locator("#ft_start").click()
    page.wait_for_selector("#ft_status progress")
    page.wait_for_selector("#ft_result >> text=Before / after", timeout=300_000)
    assert page.locator("#ft_result").get_by_text("your held-out clips").count() == 1
    card = _json.loads((root / "ckpts" / "from-the-page" / "card.json").read_text())
    assert card["recordings"] == 3 and card["held_out"] == 1
    shot(page, "finetune.png")
    page.locator("#ft_open_ab").click()
    page.wait_for_selector("#ab_tab:visible")
    values = page.locator("#ab_tab input[role=listbox], #ab_tab input").evaluate_all("els => els.map(e => e.value)")
    assert any(v.endswith("from-the-page") for v in values), values
