"""The app: its handlers called directly, then a real gradio_client against the launched server.

The checkpoint is a tiny random model saved with the real WORLD-VQ codec when its tables are
there, else with a small random-codebook EnCodec (conftest's tiny_encodec) passed in through
the Workbench's codec_loader, as tests/test_pipeline.py does.
"""

import functools
import io
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from matplotlib.figure import Figure

import app
from s2s.codecs.codec import CodecUnavailable, load_codec
from s2s.codecs.encodec_24khz import EncodecCodec
from s2s.models.checkpoint import save_checkpoint
from s2s.models.model import ModelConfig, S2SModel
from s2s.serve.ports import free_port
from tabs import talk as talk_tab
from tabs.codec import CODEC_VARIANTS
from tabs.common import optional_tabs

SETTINGS = (0.7, 50, 1.0, 0, 0.3)  # temperature, top-k, top-p, seed, longest reply (s)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "Hello there, how are you today?"], check=True)
    return str(path)


@pytest.fixture(scope="module")
def codec(tiny_encodec):
    try:
        return load_codec("world_vq")
    except (ImportError, CodecUnavailable, OSError, ValueError):
        return tiny_encodec


@pytest.fixture(scope="module")
def root(tmp_path_factory, codec):
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    cfg = ModelConfig(n_codebooks=codec.n_codebooks, cardinality=codec.cardinality, d_model=32, n_layer=2,
                      n_head=4, d_ff=64, max_prompt_frames=4500, max_reply_frames=150)
    save_checkpoint(root / "ckpts" / "tiny", S2SModel(cfg), codec.describe(),
                    training={"steps": 2, "losses": [6.0, 5.5]})
    return root


@pytest.fixture(scope="module")
def loader(codec, tiny_encodec):
    def load(name, bandwidth=3.0, model=None, **options):
        if name == "encodec_24khz":
            return EncodecCodec(model=model or tiny_encodec.model, bandwidth=bandwidth)
        return codec if name == codec.name else load_codec(name, **options)
    return load


@pytest.fixture(scope="module")
def wb(root, loader, speech):
    return app.Workbench(root / "ckpts" / "tiny", "cpu", roots=[root / "ckpts"], codec_loader=loader,
                         examples=[(speech, "hello")], reports=root / "reports")


def talk(wb, audio, checkpoint=None, transcribe=False):
    return list(wb.talk(audio, checkpoint or wb.default, *SETTINGS, transcribe))


def samples(chunk: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(chunk), dtype="float32")[0]


# ----------------------------------------------------------------------------- handlers


@pytest.mark.slow
def test_talk_streams_audio_then_grids_and_timings(wb, speech):
    outs = talk(wb, speech)
    chunks, final = outs[:-1], outs[-1]
    assert len(chunks) >= 2 and all(isinstance(c[0], bytes) and c[0][:4] == b"RIFF" for c in chunks)
    assert all(isinstance(x, type(gr.skip())) for c in chunks for x in c[1:])  # only audio while streaming
    _, prompt_fig, reply_fig, timings, transcript, attention_fig, heard, view, layer, head = final
    assert isinstance(prompt_fig, Figure) and isinstance(reply_fig, Figure) and isinstance(attention_fig, Figure)
    # the layer / head pickers redraw from the kept maps [L, H, T, S] without generating again
    cfg = wb.pipeline(wb.default).model.cfg
    assert view["maps"].shape[:2] == (cfg.n_layer, cfg.n_head)
    assert layer["choices"][-1] == str(cfg.n_layer) and head["choices"][-1] == str(cfg.n_head)
    one = talk_tab.listened_figure(view, "2", "1")
    titles = lambda fig: " ".join(ax.get_title(loc="left") for ax in fig.axes)  # noqa: E731
    assert isinstance(one, Figure) and "layer 2, head 1" in titles(one)
    assert f"{cfg.n_layer} layers averaged, {cfg.n_head} heads averaged" in titles(attention_fig)
    assert "What it heard" in heard
    rows = dict(timings)
    for stage in ("encode (codec)", "prefill", "time to first audio", "total",
                  "real-time factor"):
        assert stage in rows
    reply_s = float(rows["reply length"].split()[0])
    streamed = np.concatenate([samples(c[0]) for c in chunks])
    assert streamed.size / 24000 == pytest.approx(reply_s, abs=0.006)  # shown rounded to 10 ms
    assert 0 < reply_s <= SETTINGS[-1] + 1e-6 and transcript == ""


@pytest.mark.slow
@pytest.mark.parametrize("rate,channels,subtype", [(8000, 1, "PCM_16"), (44100, 2, "FLOAT"), (96000, 3, "PCM_24")])
def test_talk_takes_any_rate_and_channel_count(wb, speech, tmp_path, rate, channels, subtype):
    x, sr = sf.read(speech, dtype="float32")
    y = soxr.resample(x, sr, rate)
    path = tmp_path / f"in-{rate}.wav"
    sf.write(path, np.stack([y] * channels, axis=1), rate, subtype=subtype)
    final = talk(wb, str(path))[-1]
    prompt_fig = final[1]
    grid = next(a for a in prompt_fig.axes if a.get_yticklabels() and a.get_yticklabels()[0].get_text() == "cb 1")
    assert grid.get_images()[0].get_array().shape[1] == pytest.approx(len(x) / sr * 75, abs=2)


def bad_uploads(tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    sf.write(tmp_path / "long.wav", 0.1 * rng.standard_normal(8000 * 61).astype(np.float32), 8000)
    sf.write(tmp_path / "short.wav", 0.1 * rng.standard_normal(800).astype(np.float32), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + rng.bytes(2000))
    (tmp_path / "notes.mp3").write_text("not audio at all\n" * 50)
    (tmp_path / "empty.wav").write_bytes(b"")


BAD = [("silence.wav", "silent"), ("long.wav", "too long"), ("short.wav", "too short"),
       ("corrupt.wav", "could not read"), ("notes.mp3", "could not read"), ("empty.wav", "empty")]


@pytest.mark.parametrize("name,message", BAD)
def test_bad_uploads_are_clear_errors(wb, tmp_path, name, message):
    bad_uploads(tmp_path)
    with pytest.raises(gr.Error, match=message) as e:
        talk(wb, str(tmp_path / name))
    assert str(tmp_path) not in e.value.message  # the upload is named by its file name only


@pytest.fixture(scope="module")
def long_m4a(tmp_path_factory):
    """70 s of AAC (over the 60 s prompt limit) in an .m4a: libsndfile cannot read it, ffmpeg can."""
    d = tmp_path_factory.mktemp("long")
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=220:duration=10", "-c:a", "aac",
                    "-b:a", "16k", str(d / "chunk.m4a")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "6", "-i", str(d / "chunk.m4a"), "-c", "copy",
                    str(d / "long.m4a")], check=True)
    return str(d / "long.m4a")


LONG = r"too long: 'long.m4a' lasts 70\.\d s \(1:10\); uploads may last at most 60 s"


def test_a_long_compressed_upload_is_refused_before_decoding_naming_its_length(wb, long_m4a):
    with pytest.raises(gr.Error, match=LONG) as e:
        talk(wb, long_m4a)
    assert str(Path(long_m4a).parent) not in e.value.message
    with pytest.raises(gr.Error, match=LONG):
        wb.compare_codecs(long_m4a, False)


def test_no_audio_is_a_clear_error(wb):
    with pytest.raises(gr.Error, match="No audio"):
        talk(wb, None)
    with pytest.raises(gr.Error, match="No audio"):
        wb.compare_codecs(None, False)


@pytest.mark.parametrize("checkpoint", ["../../etc", "/etc", "~/x", "escape"])
def test_checkpoints_outside_the_roots_are_refused(wb, root, tmp_path, speech, checkpoint):
    (root / "ckpts" / "escape").unlink(missing_ok=True)
    (root / "ckpts" / "escape").symlink_to(tmp_path, target_is_directory=True)
    if checkpoint == "escape":
        checkpoint = str(root / "ckpts" / "escape")
    with pytest.raises(gr.Error, match="outside the folders|not a usable path"):
        talk(wb, speech, checkpoint=checkpoint)
    assert "No checkpoint is live" in wb.banner(checkpoint)


def test_without_a_checkpoint_the_page_says_so(tmp_path, monkeypatch, speech):
    monkeypatch.setattr(app, "PROTOTYPE", tmp_path / "no-prototype")
    monkeypatch.setenv("S2S_ENCODEC_PATH", str(tmp_path / "no-encodec"))
    bare = app.Workbench(None, "cpu", roots=[tmp_path], examples=[])
    assert bare.default is None
    banner = bare.banner(bare.default)
    assert "No checkpoint is live" in banner and "no checkpoint chosen" in banner
    assert "EnCodec weights were not found" in banner and "WORLD-VQ" in banner
    with pytest.raises(gr.Error, match="no checkpoint chosen"):
        talk(bare, speech, checkpoint="")
    assert "No checkpoint loaded" in bare.model_card(None)[0]


def test_banner_and_model_card_name_the_live_checkpoint(wb, codec):
    banner = wb.banner(wb.default)
    assert banner.startswith("**Live:**") and wb.default in banner and "device `cpu`" in banner
    assert app.codec_label(codec.describe()) in banner
    card, loss = wb.model_card(wb.default)
    assert "| parameters |" in card and "training: steps | 2" in card and "Device in use" in card
    assert isinstance(loss, Figure) and list(loss.axes[0].lines[0].get_ydata()) == [6.0, 5.5]


@pytest.mark.slow
def test_hands_free_turn_reply_and_barge_in(wb, speech):
    x, sr = sf.read(speech, dtype="float32")
    mic = (soxr.resample(np.concatenate([np.zeros(sr // 2), x, np.zeros(sr)]), sr, 48000) * 32767).astype(np.int16)
    state, turns, statuses = None, [], []
    for i in range(0, len(mic), 12000):  # 0.25 s chunks at 48 kHz, as the browser streams them
        state, turn, stop, status = wb.listen((48000, mic[i:i + 12000]), state)
        if not isinstance(turn, type(gr.skip())):
            turns.append(turn)
        if isinstance(status, str):
            statuses.append(status)
    assert turns == [1] and statuses == ["Hearing you…", "End of turn: replying…"]
    audio, rate = state["turn_audio"]
    assert rate == 48000 and abs(audio.size / rate - len(x) / sr) < 0.6
    before = time.perf_counter()
    outs = list(wb.reply_turn(state, wb.default, *SETTINGS))
    assert outs and all(o[0][:4] == b"RIFF" for o in outs)
    assert "End of speech → first reply audio" in outs[0][1] and "turn_audio" not in state
    assert state["play_until"] > before + 1.0 and not state["replying"]  # reply length + player buffer
    state["play_until"] = time.perf_counter() + 60  # as if a long reply were still playing (load-proof)
    # speaking while the reply still plays interrupts it
    stops = []
    for i in range(0, len(mic), 12000):
        state, _, stop, status = wb.listen((48000, mic[i:i + 12000]), state)
        if not isinstance(stop, type(gr.skip())):
            stops.append((stop, status))
    assert stops == [(1, "Interrupted: you spoke over the reply. Listening…")]


@pytest.mark.slow
def test_codec_tab_runs_every_available_codec(wb, tmp_path):
    clip = tmp_path / "hi.wav"
    subprocess.run(["espeak-ng", "-w", str(clip), "Hello."], check=True)  # short: MCD/F0 analysis is slow
    table, note, *slots = wb.compare_codecs(str(clip), False)
    rows = {r[0]: r for r in table}
    assert [rows[k][2] for k in ("EnCodec 1.5 kbps", "EnCodec 3 kbps", "EnCodec 6 kbps")] == [2, 4, 8]
    assert all(isinstance(rows[k][4], float) for k in ("EnCodec 1.5 kbps", "EnCodec 3 kbps"))  # MCD in dB
    assert len(slots) == 3 * len(CODEC_VARIANTS) and note == ""
    for (label, _, _), (col, audio, grid) in zip(CODEC_VARIANTS, np.reshape(np.array(slots, dtype=object), (-1, 3))):
        if "not available" in str(rows[label][-1]):
            assert col["visible"] is False and audio is None
        else:
            assert col["visible"] is True and audio[1].dtype == np.int16 and isinstance(grid, Figure)


@pytest.mark.slow
def test_evaluate_tab_runs_eval_and_refuses_outside_folders(root, loader, codec, spoken_manifest):
    from eval.run import evaluate

    wb = app.Workbench(root / "ckpts" / "tiny", "cpu", roots=[root / "ckpts"], codec_loader=loader, examples=[],
                       evaluate=functools.partial(evaluate, codec=codec, data=spoken_manifest, workers=0),
                       reports=root / "reports")
    summary, latency, plots, report = wb.run_eval(str(root / "ckpts"), [], 1, False, progress=lambda *a, **k: None)
    assert list(summary["checkpoint"]) == ["tiny", "ceiling: world_vq"] and list(summary["status"]) == ["ok", "ok"]
    assert int(summary["n"][0]) == 1 and latency.empty and plots
    assert "Report written to" in report and (root / "reports").is_dir()
    with pytest.raises(gr.Error, match="outside the folders"):
        wb.run_eval("/", [], 1, False, progress=lambda *a, **k: None)


# ----------------------------------------------------------------------------- the running server


@pytest.fixture(scope="module")
def server(wb):
    demo = app.build_ui(wb)
    app.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.local_url, verbose=False, download_files=False)


def submit(client, audio, checkpoint):
    from gradio_client import handle_file

    settings = SETTINGS[:-1] + (0.5,)  # the page's slider starts at 0.5 s, and the API checks it
    return client.submit(handle_file(audio), checkpoint, *settings, False, api_name="/talk")


def test_command_line_defaults_are_local_and_not_shared(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.share, args.checkpoint, args.device) == ("127.0.0.1", 7860, False, None, None)
    assert app.parse_args(["--share", "--device", "cpu"]).share is True
    with pytest.raises(SystemExit):
        app.parse_args(["--device", "tpu"])


def test_optional_tabs_are_on_locally_off_on_a_space_and_the_owner_chooses():
    assert optional_tabs(None, {}) == ("ab", "evaluate", "finetune")  # locally: everything
    assert optional_tabs(None, {"SPACE_ID": "me/s2s"}) == ()  # Hugging Face sets SPACE_ID on a Space
    assert optional_tabs(None, {"SPACE_ID": "me/s2s", "S2S_ENABLE_TABS": "Evaluate"}) == ("evaluate",)
    assert optional_tabs("ab", {"SPACE_ID": "me/s2s", "S2S_ENABLE_TABS": "all"}) == ("ab",)  # the flag wins
    assert optional_tabs("none", {}) == () and optional_tabs("all", {"SPACE_ID": "x"}) == ("ab", "evaluate", "finetune")
    assert optional_tabs("finetune", {"SPACE_ID": "x"}) == ("finetune",)
    with pytest.raises(ValueError, match="unknown tab 'votes' in 'ab,votes'.*choose from ab, evaluate, finetune, or all"):
        optional_tabs("ab,votes", {})


def test_a_bad_enable_tabs_flag_stops_the_app_with_the_choices(monkeypatch):
    monkeypatch.delenv("S2S_ENABLE_TABS", raising=False)
    assert app.parse_args(["--enable-tabs", "evaluate"]).enable_tabs == "evaluate"
    with pytest.raises(SystemExit, match="unknown tab 'eval'.*choose from ab, evaluate"):
        app.main(["--enable-tabs", "eval", "--root", str(app.ASSETS)])


def endpoints(demo) -> set[str]:
    """The API endpoints the running server answers (its /gradio_api/info)."""
    info = httpx.get(demo.local_url + "gradio_api/info", timeout=30).json()
    return set(info["named_endpoints"])


@pytest.mark.slow
def test_on_a_space_evaluate_and_ab_exist_only_when_the_owner_turns_them_on(wb, server, monkeypatch):
    assert "/evaluate" in endpoints(server)  # locally (no SPACE_ID): on
    monkeypatch.setenv("SPACE_ID", "someone/s2s-workbench")
    for setting, on in ((None, ()), ("evaluate", ("evaluate",))):
        if setting is None:
            monkeypatch.delenv("S2S_ENABLE_TABS", raising=False)
        else:
            monkeypatch.setenv("S2S_ENABLE_TABS", setting)
        demo = app.build_ui(wb)
        app.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
        try:
            config = demo.get_config_file()
            tabs = {c["props"].get("label") for c in config["components"] if c["type"] == "tabitem"}
            assert {"Talk", "Conversation", "Codec", "Model"} <= tabs
            assert ("Evaluate" in tabs, "A/B" in tabs, "Fine-tune" in tabs) == ("evaluate" in on, "ab" in on, False)
            assert ("/evaluate" in endpoints(demo)) == ("evaluate" in on) and "/talk" in endpoints(demo)
            names = {d.get("api_name") for d in config["dependencies"]}
            assert ("ab_serve" in names) == ("ab" in on)  # private, but it would still be an event
            note = httpx.get(demo.local_url, timeout=30).text
            assert ("A/B, Evaluate and Fine-tune are off" in note) == (not on)
            assert ("A/B and Fine-tune are off" in note) == bool(on)
        finally:
            demo.close()


@pytest.mark.slow
def test_server_is_local_and_not_shared(server):
    assert server.share is False and server.local_url.startswith("http://127.0.0.1:")


@pytest.mark.slow
def test_client_gets_the_reply_streamed_before_it_is_done(client, wb, speech):
    job = submit(client, speech, wb.default)
    arrivals = []
    for out in job:
        arrivals.append((time.perf_counter(), out))
    done = time.perf_counter()
    streamed = [(t, out[0]) for t, out in arrivals if isinstance(out[0], dict) and "url" in out[0]]
    assert streamed and streamed[0][0] < done
    timings = job.outputs()[-1][3]
    assert "time to first audio" in [row[0] for row in timings["data"]]
    playlist = httpx.get(streamed[0][1]["url"], timeout=30).text  # HLS: AAC segments, then the end
    segments = [line for line in playlist.splitlines() if line.endswith(".aac")]
    assert segments and playlist.rstrip().endswith("#EXT-X-ENDLIST")
    first = httpx.get(streamed[0][1]["url"].rsplit("/", 1)[0] + "/" + segments[0], timeout=30)
    assert first.status_code == 200 and first.content[:2] == b"\xff\xf1"  # an ADTS (AAC) frame


@pytest.mark.slow
def test_client_bad_inputs_get_messages_and_the_server_keeps_serving(client, wb, speech, tmp_path, long_m4a):
    from gradio_client.exceptions import AppError

    bad_uploads(tmp_path)
    for name, message in (("corrupt.wav", "could not read"), ("silence.wav", "silent")):
        with pytest.raises(AppError, match=message):
            submit(client, str(tmp_path / name), wb.default).result(timeout=60)
    with pytest.raises(AppError, match=LONG.replace("long.m4a", r"[^']*long.m4a")):  # the public talk API
        submit(client, long_m4a, wb.default).result(timeout=60)
    with pytest.raises(AppError, match="outside the folders"):
        submit(client, speech, "/etc").result(timeout=60)
    assert submit(client, speech, wb.default).result(timeout=60)[3]["data"]


@pytest.mark.slow
def test_five_requests_at_once_all_complete(client, wb, speech):
    jobs = [submit(client, speech, wb.default) for _ in range(5)]
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda j: j.result(timeout=120), jobs))
    assert len(results) == 5 and all(r[3]["data"] for r in results)


@pytest.mark.slow
def test_uploads_over_the_size_limit_are_refused(server, tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (26 * 1024 * 1024))
    with open(big, "rb") as f:
        r = httpx.post(server.local_url + "gradio_api/upload", files={"files": ("big.wav", f)}, timeout=60)
    assert r.status_code == 413


@pytest.mark.slow
def test_importing_the_app_loads_no_model():
    code = ("import sys, app; print(sorted(m for m in ('faster_whisper', 'silero_vad', 'transformers', "
            "'s2s.codecs.world_vq') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=app.ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"
