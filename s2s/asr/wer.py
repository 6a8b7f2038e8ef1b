"""Scoring transcripts: Whisper's English text normaliser, word error rate, and the answer matcher.

    from s2s.asr.wer import closest_answer, normalise_text, wer
    w = wer(hyps, refs)                      # WerResult(wer=..., mean_utterance_wer=..., substitutions=...)
    closest_answer(transcript, {intent: answer text})   # the intent whose answer it is, or None

WER: hypotheses and references normalised by Whisper's EnglishTextNormalizer (loaded from the
openai-whisper package's files without importing whisper itself, so no torch/triton); corpus
WER = sum(S + D + I) / sum(N) is the headline, the mean per-utterance WER beside it. The answer
matcher (training's spoken check and eval.run's answer_accuracy share it): a transcript
answers the intent whose answer text it is closest to by WER, when that minimum is unique.
eval.metrics re-exports wer and normalise_text; eval.run re-exports closest_answer.

Run the checks: python -m pytest -q tests/test_wer.py
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class WerResult:
    wer: float  # corpus WER: sum(S + D + I) / sum(N)
    mean_utterance_wer: float  # mean of the per-utterance WERs
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    n_ref_words: int
    n_utterances: int
    utterance_wers: tuple[float, ...] = field(repr=False)
    normaliser: str = "whisper.normalizers.EnglishTextNormalizer"

    def __float__(self) -> float:
        return self.wer



@lru_cache(maxsize=1)
def _english_normaliser():
    """Whisper's EnglishTextNormalizer, loaded from the installed openai-whisper files.

    Importing `whisper.normalizers` runs whisper/__init__.py (torch, numba, tiktoken, triton
    probing: ~3 s, ~300 MB), so unless whisper is already imported the two normaliser files
    are loaded as a private package. They need only `regex` and `more_itertools`, and read
    english.json from their own folder: offline.
    """
    if "whisper" in sys.modules:
        from whisper.normalizers import EnglishTextNormalizer

        return EnglishTextNormalizer()
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("WER needs Whisper's text normaliser: pip install openai-whisper==20250625")
    folder = Path(list(spec.submodule_search_locations)[0]) / "normalizers"
    name = "_s2s_whisper_normalizers"
    if name not in sys.modules:
        pkg_spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(pkg_spec)
        sys.modules[name] = module
        try:
            pkg_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name].EnglishTextNormalizer()


def normalise_text(text: str) -> str:
    """Whisper's English normalisation: lower case, numbers and spellings standardised,
    punctuation and fillers dropped. "Mr. Smith paid $20!" -> "mister smith paid $20"."""
    return _english_normaliser()(text)


def _word_errors(ref_words: list[str], hyp_words: list[str]) -> tuple[int, int, int, int]:
    """(S, D, I, hits) of the minimum-edit alignment (jiwer)."""
    import jiwer

    if not hyp_words:  # jiwer needs a non-empty hypothesis: all deletions
        return 0, len(ref_words), 0, 0
    out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    return out.substitutions, out.deletions, out.insertions, out.hits


def wer(hyps: Sequence[str], refs: Sequence[str]) -> WerResult:
    """Word error rate of hypotheses against references, after Whisper's English normaliser.

    Corpus WER = sum(S + D + I) / sum(N) over utterances; mean_utterance_wer averages the
    per-utterance (S + D + I) / N. A reference that normalises to nothing is an error.
    """
    if isinstance(hyps, str) or isinstance(refs, str):
        raise ValueError("hyps and refs must be lists of strings, not a single string")
    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs):
        raise ValueError(f"hyps and refs differ in length: {len(hyps)} hyps vs {len(refs)} refs")
    if not refs:
        raise ValueError("hyps and refs are empty: nothing to score")
    totals = np.zeros(4, dtype=np.int64)  # S, D, I, hits
    utt = []
    for i, (h, r) in enumerate(zip(hyps, refs)):
        if not isinstance(h, str) or not isinstance(r, str):
            raise ValueError(f"item {i}: hyps and refs must be str, got {type(h).__name__}, {type(r).__name__}")
        ref_words, hyp_words = normalise_text(r).split(), normalise_text(h).split()
        if not ref_words:
            raise ValueError(f"refs[{i}]={r!r} is empty after normalisation; WER is undefined")
        s, d, ins, hits = _word_errors(ref_words, hyp_words)
        totals += (s, d, ins, hits)
        utt.append((s + d + ins) / len(ref_words))
    s, d, ins, hits = (int(v) for v in totals)
    n = s + d + hits
    return WerResult(
        wer=(s + d + ins) / n,
        mean_utterance_wer=float(np.mean(utt)),
        substitutions=s, deletions=d, insertions=ins, hits=hits,
        n_ref_words=n, n_utterances=len(refs), utterance_wers=tuple(utt),
    )


def closest_answer(transcript: str, answers: dict[str, str]) -> str | None:
    """The intent whose answer text has the lowest WER against the transcript; None on a tie."""
    scores = {}
    for intent, text in answers.items():
        try:
            scores[intent] = wer([transcript], [text]).wer
        except ValueError:  # an answer that normalises to nothing cannot be matched
            continue
    if not scores:
        return None
    best = min(scores.values())
    winners = [i for i, s in scores.items() if s == best]
    return winners[0] if len(winners) == 1 else None
