"""Tests for s2s/asr/wer.py: WER counted by hand, Whisper's normaliser, the answer matcher, and the
public names eval keeps for them (eval.metrics.wer, eval.run.closest_answer)."""

import subprocess
import sys

import pytest

import eval.metrics
import eval.run
from s2s.asr.wer import closest_answer, normalise_text, wer


def test_eval_keeps_its_public_names():
    assert eval.metrics.wer is wer and eval.metrics.normalise_text is normalise_text
    assert eval.run.closest_answer is closest_answer


def test_wer_counts_by_hand():
    refs = ["The cat sat on the mat.", "Hello, world!"]
    hyps = ["the cat sat on mat", "hello there world"]
    r = wer(hyps, refs)
    # utterance 1: one deletion of 6 words; utterance 2: one insertion against 2 words
    assert (r.substitutions, r.deletions, r.insertions, r.hits) == (0, 1, 1, 7)
    assert r.n_ref_words == 8 and r.n_utterances == 2
    assert r.wer == pytest.approx(2 / 8)
    assert r.mean_utterance_wer == pytest.approx((1 / 6 + 1 / 2) / 2)
    assert r.utterance_wers == pytest.approx((1 / 6, 1 / 2))


def test_wer_substitution_and_empty_hypothesis():
    r = wer(["a dog barked", ""], ["a cat barked", "two words"])
    assert (r.substitutions, r.deletions, r.insertions) == (1, 2, 0)
    assert r.wer == pytest.approx(3 / 5) and r.utterance_wers == pytest.approx((1 / 3, 1.0))


def test_whisper_normaliser_makes_spelling_variants_equal():
    assert normalise_text("Mr. Smith paid $20!") == normalise_text("mister smith paid twenty dollars")
    assert wer(["Mister Smith has two colours."], ["Mr. Smith has 2 colors"]).wer == 0.0


def test_wer_rejects_bad_inputs():
    with pytest.raises(ValueError, match="2 hyps vs 1 refs"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"refs\[1\]='Um, uh\?' is empty after normalisation"):
        wer(["a", "b"], ["a", "Um, uh?"])
    with pytest.raises(ValueError, match="empty"):
        wer([], [])
    with pytest.raises(ValueError, match="not a single string"):
        wer("a b", "a b")


def test_normaliser_does_not_import_whisper_or_torch():
    code = ("import sys; from s2s.asr.wer import normalise_text; "
            "assert normalise_text('Hello, World!') == 'hello world'; "
            "heavy = [m for m in ('whisper', 'torch', 'triton', 'numba') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))


def test_closest_answer_needs_a_unique_minimum():
    answers = {"france": "Paris is the capital of France.", "japan": "Tokyo is the capital of Japan."}
    assert closest_answer("paris is the capital of france", answers) == "france"
    assert closest_answer("tokyo is a capital", answers) == "japan"
    assert closest_answer("", answers) is None  # every answer is 100% wrong: a tie
    assert closest_answer("the capital of", answers) is None
