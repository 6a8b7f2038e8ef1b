import pytest
import torch

from s2s.models import patterns
from s2s.models.generate import StepRules, generate, sample_next
from s2s.models.model import ModelConfig, S2SModel

CFG = ModelConfig(n_codebooks=3, cardinality=32, d_model=32, n_layer=2, n_head=4, d_ff=64,
                  n_encoder_layer=1, max_prompt_frames=64, max_reply_frames=40)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return S2SModel(CFG).eval()


def generate_by_recomputation(model, prompt, max_frames, features=None):
    """The slow reference: rerun the whole model over [BOS, steps so far] at every step."""
    cfg = model.cfg
    rules = StepRules(cfg.n_codebooks, cfg.cardinality, max_frames)
    bos = patterns.special_ids(cfg.cardinality)["bos"]
    steps = torch.full((cfg.n_codebooks, 1), bos)
    step = 0
    while True:
        with torch.no_grad():
            logits = model(None if prompt is None else prompt[None], steps[None],
                           features=None if features is None else features[None])[0, :, -1]
        tokens = rules.choose(logits, step, lambda x: x.argmax(-1))
        steps = torch.cat([steps, tokens[:, None]], dim=1)
        if rules.done(step):
            break
        step += 1
    return patterns.revert(steps[:, 1:], cfg.cardinality)


def test_cached_greedy_equals_full_recomputation(model):
    torch.manual_seed(1)
    prompt = torch.randint(0, 32, (3, 13))
    cached = torch.stack(list(generate(model, prompt, max_frames=25, temperature=0)), dim=1)
    assert cached.shape == (3, 25)
    assert torch.equal(cached, generate_by_recomputation(model, prompt, 25))


def test_natural_eos_ends_the_reply():
    torch.manual_seed(0)
    m = S2SModel(CFG).eval()
    eos = patterns.special_ids(CFG.cardinality)["eos"]
    with torch.no_grad():  # make codebook 0's EOS the clear winner: ln_f(x) = 1, EOS head = 1
        m.ln_f.weight.zero_()
        m.ln_f.bias.fill_(1.0)
        m.heads[0, eos] = 1.0
    frames = list(generate(m, torch.randint(0, 32, (3, 5)), max_frames=30, temperature=0))
    assert len(frames) == 1  # EOS is allowed from step 1, so exactly one frame
    assert all(int(f.max()) < CFG.cardinality for f in frames)
    assert len(list(generate(m, torch.randint(0, 32, (3, 5)), min_frames=7, max_frames=30, temperature=0))) == 7


def test_seeded_sampling_is_reproducible_and_in_range(model):
    prompt = torch.randint(0, 32, (3, 9))
    kw = dict(max_frames=20, temperature=1.0, top_k=5, top_p=0.9)
    a = torch.stack(list(generate(model, prompt, seed=7, **kw)))
    b = torch.stack(list(generate(model, prompt, seed=7, **kw)))
    c = torch.stack(list(generate(model, prompt, seed=8, **kw)))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < CFG.cardinality


def test_sample_next_top_k_and_top_p():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert draws == {3, 4}
    peaked = torch.tensor([[0.0, 0.0, 10.0, 0.0]])
    assert {int(sample_next(peaked, 1.0, top_p=0.5, generator=g)) for _ in range(50)} == {2}
    assert int(sample_next(logits, 0.0)) == 4


@pytest.mark.parametrize("kw, match", [
    (dict(temperature=-1.0), "temperature"),
    (dict(top_k=-2), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(max_frames=0), "max_frames"),
    (dict(max_frames=41), "max_reply_frames"),
    (dict(max_frames=5, min_frames=6), "min_frames"),
])
def test_bad_sampling_arguments(model, kw, match):
    with pytest.raises(ValueError, match=match):
        next(generate(model, torch.randint(0, 32, (3, 5)), **kw))


def test_bad_prompts(model):
    with pytest.raises(ValueError, match="K=3"):
        next(generate(model, torch.zeros(2, 5, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        next(generate(model, torch.full((3, 5), 40, dtype=torch.long)))


@pytest.mark.slow
def test_compiled_decode_step_equals_eager(model):
    prompt = torch.randint(0, 32, (3, 10))
    eager = torch.stack(list(generate(model, prompt, max_frames=12, temperature=0)))
    compiled = torch.stack(list(generate(model, prompt, max_frames=12, temperature=0, compile=True)))
    assert torch.equal(eager, compiled)
