import json

import pytest
import torch

from s2s.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from s2s.models.model import ModelConfig, S2SModel

CFG = ModelConfig(n_codebooks=2, cardinality=16, d_model=16, n_layer=1, n_head=2, d_ff=32,
                  max_prompt_frames=32, max_reply_frames=16)
CODEC = {"name": "world_vq", "params": {"tables": "abc", "version": 1}}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = S2SModel(CFG)
    path = save_checkpoint(tmp_path / "ck", model, CODEC, training={"steps": 3})
    return model, path


def test_round_trip_gives_the_same_outputs(saved):
    model, path = saved
    loaded, config = load_checkpoint(path, codec=CODEC)
    prompt, reply = torch.randint(0, 16, (1, 2, 5)), torch.randint(0, 19, (1, 2, 4))
    assert torch.allclose(model.eval()(prompt, reply), loaded(prompt, reply))
    assert config["training"] == {"steps": 3}
    assert config["special_ids"] == {"bos": 16, "pad": 17, "eos": 18}
    assert config["pattern"] == {"name": "delay", "delays": [0, 1]}


def test_fp16_checkpoint_loads_as_float32(tmp_path):
    model = S2SModel(CFG)
    path = save_checkpoint(tmp_path / "half", model, CODEC, dtype=torch.float16)
    loaded, config = load_checkpoint(path)
    assert config["dtype"] == "float16"
    assert next(loaded.parameters()).dtype == torch.float32
    assert torch.allclose(loaded.heads, model.heads.half().float())


def test_overwrite_is_atomic_and_leaves_no_temporaries(saved, tmp_path):
    model, path = saved
    save_checkpoint(path, model, CODEC, training={"steps": 4})
    assert json.loads((path / "config.json").read_text())["training"]["steps"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_failed_save_keeps_the_old_checkpoint(saved, tmp_path):
    model, path = saved
    with pytest.raises(TypeError):
        save_checkpoint(path, model, CODEC, training={"bad": object()})  # not JSON-serialisable
    assert json.loads((path / "config.json").read_text())["training"] == {"steps": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_codec_mismatch_is_refused(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="trained with codec world_vq"):
        load_checkpoint(path, codec={"name": "encodec_24khz", "params": {"bandwidth": 3.0}})


def test_missing_and_corrupt_files(saved, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "nowhere")
    weights = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)
    (path / "model.safetensors").unlink()
    torch.save({}, path / "model.pt")
    with pytest.raises(CheckpointError, match="pickled weights are refused"):
        load_checkpoint(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


def test_config_that_does_not_match_the_weights(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["model"]["d_model"] = 32
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match its config.json"):
        load_checkpoint(path)
    config["model"]["n_heads"] = 2
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="bad model config"):
        load_checkpoint(path)
