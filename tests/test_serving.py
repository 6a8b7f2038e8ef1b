"""The app's non-UI parts: folder guard, model cache, examples, loss curves, streamed wav chunks."""

import io
import json
import os
import subprocess
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from s2s.checkpoint import save_checkpoint
from s2s.codec import CodecUnavailable, load_codec
from s2s.encodec_24khz import EncodecCodec
from s2s.model import ModelConfig, S2SModel
from s2s.pipeline import load_pipeline
from s2s.serving import (FolderGuard, ModelCache, example_prompts, loss_curves, readable, timing_table,
                         wav_bytes)


def tiny_checkpoint(path, codec, **training):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, n_layer=1, n_head=2, d_ff=16, max_prompt_frames=400, max_reply_frames=40)
    return save_checkpoint(path, S2SModel(cfg), codec.describe(), training=training)


@pytest.fixture
def tree(tmp_path, tiny_encodec):
    """root/ckpts/{a, b, .hidden}, root/other/c outside the allowed roots, and symlinks."""
    root = tmp_path / "root"
    for name in ("a", "b", ".hidden"):
        tiny_checkpoint(root / "ckpts" / name, tiny_encodec)
    tiny_checkpoint(tmp_path / "other" / "c", tiny_encodec)
    (root / "ckpts" / "escape").symlink_to(tmp_path / "other" / "c", target_is_directory=True)
    (root / "ckpts" / "alias").symlink_to(root / "ckpts" / "a", target_is_directory=True)
    return root


def codec_loader(tiny):
    def load(name, bandwidth=3.0, model=None, **options):
        if name == "encodec_24khz":
            return EncodecCodec(model=model or tiny.model, bandwidth=bandwidth)
        return load_codec(name, **options)
    return load


def test_guard_allows_folders_under_its_roots(tree):
    guard = FolderGuard(["ckpts"], base=tree)
    assert guard.resolve("ckpts/a") == (tree / "ckpts" / "a").resolve()
    assert guard.resolve(str(tree / "ckpts" / "b")) == (tree / "ckpts" / "b").resolve()
    assert guard.resolve("ckpts/alias") == (tree / "ckpts" / "a").resolve()  # a link that stays inside


@pytest.mark.parametrize("bad", ["../other/c", "ckpts/../../other/c", "/etc", "ckpts/escape", "~", "ckpts/a\0"])
def test_guard_refuses_paths_outside_its_roots(tree, bad):
    guard = FolderGuard(["ckpts"], base=tree)
    with pytest.raises(ValueError, match="outside the folders|not a usable path"):
        guard.resolve(bad, "checkpoint")


def test_guard_names_missing_and_empty_choices(tree):
    guard = FolderGuard(["ckpts"], base=tree)
    with pytest.raises(ValueError, match="no checkpoint chosen"):
        guard.resolve("  ", "checkpoint")
    with pytest.raises(ValueError, match="not a folder"):
        guard.resolve("ckpts/nope", "checkpoint")


def test_guard_lists_checkpoints_without_hidden_or_linked_folders(tree):
    guard = FolderGuard(["ckpts", "missing"], base=tree)
    assert guard.checkpoints() == ["ckpts/a", "ckpts/b"]  # not .hidden, not the symlinks (not followed)
    assert guard.checkpoint_folders() == ["ckpts", "ckpts/a", "ckpts/b"]


def test_cache_loads_each_checkpoint_once_across_threads(tree, tiny_encodec):
    loads = []

    def counting_loader(path, **kw):
        loads.append(path)
        return load_pipeline(path, **kw)

    cache = ModelCache("cpu", pipeline_loader=counting_loader, codec_loader=codec_loader(tiny_encodec))
    path = tree / "ckpts" / "a"
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.pipeline(path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len(got) == 4 and all(p is got[0] for p in got)
    assert cache.pipeline(path) is got[0]


def test_cache_drops_the_least_recently_used_pipeline(tree, tiny_encodec):
    cache = ModelCache("cpu", codec_loader=codec_loader(tiny_encodec), max_pipelines=1)
    a, b = tree / "ckpts" / "a", tree / "ckpts" / "b"
    cache.pipeline(a)
    cache.pipeline(b)
    assert cache.loaded(a) is None and cache.loaded(b) is not None


def test_cache_shares_one_encodec_model_across_bandwidths(tiny_encodec):
    cache = ModelCache("cpu", codec_loader=codec_loader(tiny_encodec))
    low, high = cache.codec("encodec_24khz", 1.5), cache.codec("encodec_24khz", 6.0)
    assert (low.n_codebooks, high.n_codebooks) == (2, 8)
    assert low.model is high.model
    assert cache.codec("encodec_24khz", 1.5) is low
    assert cache.encodec_status() is None


def test_missing_encodec_weights_are_reported_once(tmp_path, monkeypatch):
    monkeypatch.setenv("S2S_ENCODEC_PATH", str(tmp_path / "no-weights"))
    calls = []

    def loader(name, **options):
        calls.append(name)
        return load_codec(name, **options)

    cache = ModelCache("cpu", codec_loader=loader)
    for _ in range(2):
        with pytest.raises(CodecUnavailable, match="no-weights"):
            cache.codec("encodec_24khz", 3.0)
    assert "not found" in cache.encodec_status()
    assert calls == ["encodec_24khz"]  # the failure is remembered, not retried per request


def test_cache_rejects_an_unknown_device():
    with pytest.raises(ValueError, match="device must be"):
        ModelCache("tpu")


def test_example_prompts_one_per_intent_inside_the_folder(tmp_path):
    d = tmp_path / "eval"
    (d / "prompts").mkdir(parents=True)
    rows = []
    for intent in ("greet", "bye", "time"):
        for voice in ("v1", "v2"):
            sf.write(d / "prompts" / f"{intent}-{voice}.wav", np.zeros(1600), 16000)
            rows.append({"id": f"{intent}-{voice}", "intent": intent, "prompt_audio": f"prompts/{intent}-{voice}.wav",
                         "prompt_text": f"say {intent}", "response_audio": f"answers/{intent}.wav",
                         "response_text": intent})
    rows.insert(0, {"id": "x", "intent": "evil", "prompt_audio": "../../outside.wav",
                    "response_audio": "answers/evil.wav", "response_text": "evil"})
    (tmp_path / "outside.wav").write_bytes(b"")
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = example_prompts(d, n=2)
    assert [(p.name, label) for p, label in got] == [("greet-v1.wav", "say greet"), ("bye-v1.wav", "say bye")]
    assert example_prompts(tmp_path / "missing") == []
    (d / "manifest.jsonl").write_text("not json\n")  # a broken manifest: no examples, the app still starts
    assert example_prompts(d) == []


def test_loss_curves_from_a_list_and_from_a_log_inside_the_checkpoint(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "train_log.jsonl").write_text(
        '{"step": 10, "loss": 5.0, "lr": 0.001}\n{"step": 10, "val_loss": 5.5}\n{"step": 20, "loss": 4.0}\nbad\n')
    assert loss_curves(ck, {"log": "train_log.jsonl"}) == {"loss": ([10.0, 20.0], [5.0, 4.0]),
                                                          "val_loss": ([10.0], [5.5])}
    assert loss_curves(ck, {"losses": [3.0, 2.5]}) == {"loss": ([0.0, 1.0], [3.0, 2.5])}
    (tmp_path / "secret.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert loss_curves(ck, {"log": "../secret.jsonl"}) == {}  # outside the checkpoint: not read
    (ck / "log.csv").write_text("step,loss\n1,2.0\n2,1.5\n")
    assert loss_curves(ck, {"log": "log.csv"}) == {"loss": ([1.0, 2.0], [2.0, 1.5])}


def test_wav_bytes_round_trip():
    x = (0.5 * np.sin(np.linspace(0, 100, 4800))).astype(np.float32)
    data = wav_bytes(x, 24000)
    y, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert data[:4] == b"RIFF" and sr == 24000
    assert np.max(np.abs(y - x)) < 1e-4


@pytest.mark.slow  # imports gradio
def test_readable_decodes_with_ffmpeg_what_libsndfile_cannot(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    assert readable(str(wav)) == str(wav)
    m4a = tmp_path / "c.m4a"  # AAC in MP4: what phones record; libsndfile cannot read it
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.5",
                    "-ar", "22050", str(m4a)], check=True)
    data, sr = readable(str(m4a))
    assert sr == 22050 and 0.4 * sr < len(data) < 0.6 * sr
    bad = tmp_path / "b.wav"
    bad.write_bytes(os.urandom(100))
    assert readable(str(bad)) == str(bad)  # left for load_audio to name the problem


def test_timing_table_lists_the_stages():
    t = {"load": 1.0, "encode": 10.0, "prefill": 5.0, "first_frame": 8.0, "time_to_first_audio": 20.0,
         "generate": 100.0, "decode": 30.0, "total": 150.0, "realtime_factor": 3.5}
    rows = dict(timing_table(t, 2.0))
    assert rows["time to first audio"] == "20 ms" and rows["prefill"] == "5 ms"
    assert rows["real-time factor"].startswith("3.50") and rows["reply length"] == "2.00 s"
