import pytest
import torch

from s2s.models.model import PRESETS, ModelConfig, S2SModel, count_parameters, preset_config

TINY = dict(n_codebooks=3, cardinality=32, d_model=32, n_layer=2, n_head=4, d_ff=64,
            n_encoder_layer=1, max_prompt_frames=64, max_reply_frames=40)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_within_10_percent(name):
    target = {"10m": 10e6, "50m": 50e6, "100m": 100e6, "300m": 300e6}[name]
    assert abs(count_parameters(PRESETS[name]) - target) / target <= 0.10


def test_300m_is_the_seed_12_layer_model():
    assert PRESETS["300m"].n_layer == 12


def test_forward_shapes_and_causality():
    torch.manual_seed(0)
    model = S2SModel(ModelConfig(**TINY)).eval()
    prompt = torch.randint(0, 32, (2, 3, 11))
    reply = torch.randint(0, 35, (2, 3, 7))
    logits = model(prompt, reply)
    assert logits.shape == (2, 3, 7, 35)
    changed = reply.clone()
    changed[:, :, 5:] = 0  # a change at step 5 must not affect logits before it
    assert torch.allclose(model(prompt, changed)[:, :, :5], logits[:, :, :5], atol=1e-5)
    assert not torch.allclose(model(prompt, changed)[:, :, 5:], logits[:, :, 5:], atol=1e-5)


def test_prompt_padding_mask_ignores_padded_frames():
    torch.manual_seed(0)
    model = S2SModel(ModelConfig(**TINY)).eval()
    prompt = torch.randint(0, 32, (1, 3, 8))
    reply = torch.randint(0, 35, (1, 3, 5))
    padded = torch.cat([prompt, torch.randint(0, 32, (1, 3, 4))], dim=-1)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[:, 8:] = False
    assert torch.allclose(model(prompt, reply), model(padded, reply, mask), atol=1e-5)


def test_config_validation_and_round_trip():
    cfg = preset_config("10m", max_reply_frames=100)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_config("huge")
    with pytest.raises(ValueError, match="multiple of n_head"):
        ModelConfig(d_model=30, n_head=4)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"widht": 3})


def test_too_long_prompt_is_refused():
    model = S2SModel(ModelConfig(**TINY))
    with pytest.raises(ValueError, match="at most 64"):
        model(torch.zeros(1, 3, 65, dtype=torch.long), torch.zeros(1, 3, 2, dtype=torch.long))


def test_prompt_memory_is_the_encoding_minus_its_mean_over_real_frames():
    torch.manual_seed(0)
    model = S2SModel(ModelConfig(cardinality=16, d_model=16, n_head=2, n_layer=1, d_ff=16)).eval()
    prompt = torch.randint(0, 16, (2, 4, 6))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    x = model.embed(prompt, torch.arange(6))  # no encoder layers: the encoding is the embedding
    memory, memory_mask = model.encode_prompt(prompt, mask)
    assert torch.equal(memory_mask, mask)
    assert torch.allclose(memory[0], model.prompt_norm(x[0] - x[0].mean(0)), atol=1e-5)
    assert torch.allclose(memory[1, :4], model.prompt_norm(x[1, :4] - x[1, :4].mean(0)), atol=1e-5)
    # A code that is the same in every frame (e.g. a speaker's constant pitch bin) adds nothing.
    steady = prompt.clone()
    steady[:, 2] = 5
    other = steady.clone()
    other[:, 2] = 9
    assert torch.allclose(model.encode_prompt(steady)[0], model.encode_prompt(other)[0], atol=1e-5)
