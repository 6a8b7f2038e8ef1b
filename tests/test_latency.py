"""eval/latency.py: a checkpoint timed in a subprocess with its codec loaded by
name (a small random-codebook EnCodec saved to disk, found through S2S_ENCODEC_PATH)."""

import math

import pytest
import torch
from transformers import EncodecConfig, EncodecModel

from eval import latency
from s2s.models.checkpoint import save_checkpoint
from s2s.models.model import ModelConfig, S2SModel

CODEC = {"name": "encodec_24khz", "params": {"bandwidth": 3.0}}


@pytest.fixture(scope="module")
def encodec_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(hidden_size=32, num_filters=8, num_lstm_layers=1))
    for layer in model.quantizer.layers:  # random init leaves the codebooks at zero
        layer.codebook.embed.normal_()
    path = tmp_path_factory.mktemp("encodec")
    model.save_pretrained(path)
    return path


def tiny_checkpoint(path):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layer=2, n_head=4, d_ff=64, max_prompt_frames=400, max_reply_frames=30)
    return save_checkpoint(path, S2SModel(cfg), CODEC)


@pytest.mark.slow
def test_rows_in_subprocesses(encodec_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("S2S_ENCODEC_PATH", str(encodec_dir))
    good = tiny_checkpoint(tmp_path / "good")
    broken = tiny_checkpoint(tmp_path / "broken")
    (broken / "config.json").write_text("{not json")
    rows = latency.latency_rows([], [good, broken], frames=4, repeats=1, threads=1, device="cpu")
    assert [(r["kind"], r["name"]) for r in rows] == [("checkpoint", str(good)), ("checkpoint", str(broken))]
    ck, bad = rows
    assert ck["status"] == "ok", ck["status"]
    assert ck["codec"] == "encodec_24khz" and ck["preset"] == "custom" and ck["parameters"] < 1e6
    assert ck["memory_scope"] == "subprocess" and ck["threads"] == 1
    assert ck["frames"] == 4 and ck["repeats"] == 1 and ck["prompt_seconds"] == pytest.approx(3.0, abs=0.02)
    assert ck["decode_ms_p90"] >= ck["decode_ms_per_frame"] > 0
    for key in ("encode_ms", "prefill_ms", "time_to_first_audio_ms", "realtime_factor", "peak_memory_mb"):
        assert ck[key] > 0, key
    assert ck["speech_end_to_audio_ms"] > ck["time_to_first_audio_ms"]
    assert bad["status"].startswith("error: CheckpointError") and "not valid JSON" in bad["status"]
    assert math.isnan(bad["decode_ms_per_frame"])
    table = latency.format_table(rows)
    assert "good" in table and "CheckpointError" in table


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown preset\(s\) \['20m'\]"):
        latency.latency_rows(["20m"])
    with pytest.raises(ValueError, match="frames must be >= 2"):
        latency.measure(None, None, torch.device("cpu"), frames=1)
