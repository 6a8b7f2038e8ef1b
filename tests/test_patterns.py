import random

import pytest
import torch

from s2s.models import patterns

CARD = 16


def test_docstring_example():
    codes = torch.tensor([[0, 1], [2, 3], [4, 5]])
    p, e = CARD + 1, CARD + 2
    assert patterns.build(codes, CARD).tolist() == [
        [0, 1, e, p, p],
        [p, 2, 3, e, p],
        [p, p, 4, 5, e],
    ]


@pytest.mark.parametrize("k_total", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("t_total", [0, 1, 2, 5, 17])
def test_build_matches_reference_and_reverts(k_total, t_total):
    rng = random.Random(k_total * 100 + t_total)
    codes = [[rng.randrange(CARD) for _ in range(t_total)] for _ in range(k_total)]
    tensor = torch.tensor(codes, dtype=torch.long).view(k_total, t_total)
    steps = patterns.build(tensor, CARD)
    if t_total:
        assert steps.tolist() == patterns.build_reference(codes, CARD)
    assert steps.shape == (k_total, t_total + k_total)
    assert torch.equal(patterns.revert(steps, CARD), tensor)


def test_batched_build_equals_one_by_one():
    codes = torch.randint(0, CARD, (3, 4, 9))
    batched = patterns.build(codes, CARD)
    for b in range(3):
        assert torch.equal(batched[b], patterns.build(codes[b], CARD))


def test_revert_without_eos_keeps_complete_frames():
    codes = torch.randint(0, CARD, (4, 10))
    steps = patterns.build(codes, CARD)[:, :8]  # cut before codebook 0's EOS (step 10)
    reverted = patterns.revert(steps, CARD)
    assert torch.equal(reverted, codes[:, :5])  # frames 0..4 have all 4 codebooks by step 7


def test_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        patterns.build(torch.zeros(5, dtype=torch.long), CARD)
    with pytest.raises(ValueError, match="shape"):
        patterns.revert(torch.zeros(2, 3, 4, dtype=torch.long), CARD)
