"""The turn end to end on the CPU: a real (small, random-codebook) EnCodec and a tiny model."""

import numpy as np
import pytest
import torch

from s2s.models.checkpoint import CheckpointError, save_checkpoint
from s2s.models.model import ModelConfig, S2SModel
from s2s.serve.pipeline import CHUNK_MS, load_pipeline

SR = 24000


@pytest.fixture(scope="module")
def codec(tiny_encodec):
    return tiny_encodec


@pytest.fixture(scope="module")
def checkpoint(codec, tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(n_codebooks=4, cardinality=1024, d_model=32, n_layer=2, n_head=4, d_ff=64,
                      max_prompt_frames=400, max_reply_frames=60)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", S2SModel(cfg), codec.describe())


def test_respond_returns_audio_codes_and_timings(codec, checkpoint, speech_like):
    pipe = load_pipeline(checkpoint, device="cpu", codec=codec)
    reply = pipe.respond((speech_like(), 16000), seed=0, max_seconds=0.4)
    assert reply.sample_rate == SR
    assert reply.prompt_codes.shape == (4, 75)  # 1 s at 75 frames/s, whatever the input rate
    assert reply.reply_codes.shape == (4, 30)  # no EOS from a random model: cut at 0.4 s
    assert len(reply.audio) == 30 * 320
    for key in ("load", "encode", "prefill", "first_frame", "generate", "decode",
                "time_to_first_audio", "total", "realtime_factor"):
        assert reply.timings[key] > 0, key
    assert reply.timings["time_to_first_audio"] <= reply.timings["total"]


def test_stream_chunks_are_short_and_match_one_shot_decode(codec, checkpoint, speech_like):
    pipe = load_pipeline(checkpoint, device="cpu", codec=codec)
    chunks = list(pipe.stream((speech_like(), 16000), seed=1, max_seconds=0.8))
    reply = chunks[-1].reply
    assert reply is not None and all(c.reply is None for c in chunks[:-1])
    audio = [c.audio for c in chunks[:-1]]
    assert len(audio) >= 4
    assert max(len(a) for a in audio) <= CHUNK_MS / 1000 * SR
    streamed = np.concatenate(audio)
    one_shot = codec.decode(reply.reply_codes).numpy()
    assert streamed.shape == one_shot.shape
    snr_db = 10 * np.log10(np.sum(one_shot**2) / np.sum((streamed - one_shot) ** 2))
    assert snr_db > 30  # limited left context (LSTM state) only: no dropped or doubled samples


def test_same_seed_same_reply(codec, checkpoint, speech_like):
    pipe = load_pipeline(checkpoint, device="cpu", codec=codec)
    a = pipe.respond((speech_like(), 16000), seed=3, max_seconds=0.2)
    b = pipe.respond((speech_like(), 16000), seed=3, max_seconds=0.2)
    assert torch.equal(a.reply_codes, b.reply_codes)


def test_checkpoint_with_another_codec_is_refused(codec, tmp_path):
    cfg = ModelConfig(d_model=16, n_layer=1, n_head=2, d_ff=16)
    path = save_checkpoint(tmp_path / "wq", S2SModel(cfg), {"name": "world_vq", "params": {"v": 1}})
    with pytest.raises(CheckpointError, match="trained with codec world_vq"):
        load_pipeline(path, device="cpu", codec=codec)


def test_bad_inputs(codec, checkpoint, speech_like):
    pipe = load_pipeline(checkpoint, device="cpu", codec=codec)
    with pytest.raises(ValueError, match="silent"):
        pipe.respond((np.zeros(16000, np.float32), 16000))
    with pytest.raises(ValueError, match="max_seconds"):
        pipe.respond((speech_like(), 16000), max_seconds=100.0)
    with pytest.raises(ValueError, match="at most 5.3 s"):
        pipe.respond((speech_like(seconds=6.0), 16000))
    with pytest.raises(ValueError, match="temperature"):
        pipe.respond((speech_like(), 16000), temperature=-1.0)


def test_device_choice():
    from s2s.models.device import pick_device
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")


def test_the_bundled_prototype_is_the_default_and_replies_with_an_answer():
    from s2s.serve.pipeline import PROTOTYPE

    weights = sum(f.stat().st_size for f in PROTOTYPE.iterdir())
    assert weights < 30e6  # fp16, shippable
    pipe = load_pipeline(device="cpu")  # no checkpoint: the bundled prototype
    assert pipe.checkpoint == str(PROTOTYPE)
    assert pipe.model.cfg.preset == "10m" and pipe.codec.name == "world_vq"
    reply = pipe.respond(str(PROTOTYPE.parent / "eval" / "prompts" / "eval_voices_00005.flac"), seed=0)
    # The corpus's answers last 1.6-2.5 s: a reply that long ended with EOS, not at the length cap.
    assert 1.2 < reply.seconds < 3.5, reply.seconds
    assert np.abs(reply.audio).max() > 0.05  # it says something


def test_silent_or_too_short_prompts_are_refused_before_any_work(codec, checkpoint, speech_like):
    pipe = load_pipeline(checkpoint, device="cpu", codec=codec)
    with pytest.raises(ValueError, match="silent"):
        pipe.respond((np.zeros(16000, np.float32), 16000))
    with pytest.raises(ValueError, match="at least 0.2 s"):
        pipe.respond((speech_like(0.1), 16000))
