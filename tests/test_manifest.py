"""The one reader of the corpus manifest (s2s/io/manifest.py): what it checks, what it fills in."""

import json

import pytest

from s2s.io.manifest import ManifestError, audio_path, read_manifest, write_manifest


def row(i, **extra):
    return {"id": f"u{i}", "prompt_audio": f"prompts/u{i}.wav", "response_audio": "answers/a.wav",
            "response_text": "An answer.", **extra}


@pytest.fixture
def folder(tmp_path):
    for rel in ("prompts/u1.wav", "prompts/u2.wav", "answers/a.wav"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    return tmp_path


def test_round_trip_fills_optional_fields_and_keeps_relative_paths(folder):
    path = folder / "manifest.jsonl"
    write_manifest(path, [row(1, split="train", intent="greet", engine="espeak"), row(2)])
    first, second = read_manifest(path)
    assert first["prompt_audio"] == "prompts/u1.wav" and first["engine"] == "espeak" and first["intent"] == "greet"
    assert second["intent"] == "An answer." and second["split"] == second["voice"] == second["prompt_text"] == ""
    assert audio_path(path, first["prompt_audio"]) == folder / "prompts" / "u1.wav"
    assert not list(folder.glob(".manifest.jsonl.*"))  # the atomic write left no temporary file


@pytest.mark.parametrize("text,message", [
    ('{"id": "u1", "prompt_audio": "prompts/u1.wav"}\n',
     r"m.jsonl:1: missing fields \['response_audio', 'response_text'\]"),
    ("\nnot json\n", "m.jsonl:2: not valid JSON"),
    ("[1, 2]\n", "m.jsonl:1: expected a JSON object, got list"),
    (json.dumps(row(1)) + "\n" + json.dumps(row(1)) + "\n", "m.jsonl:2: duplicate id 'u1'"),
    (json.dumps(row(3)) + "\n", r"m.jsonl:1: prompt_audio 'prompts/u3.wav' does not exist"),
    (json.dumps(row(1, response_audio=None)) + "\n", "m.jsonl:1: response_audio must be a path"),
])
def test_bad_rows_name_the_line(folder, text, message):
    path = folder / "m.jsonl"
    path.write_text(text)
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_missing_file_empty_file_and_unchecked_audio(folder):
    with pytest.raises(ValueError, match="manifest .*nope.jsonl' does not exist"):
        read_manifest(folder / "nope.jsonl")
    (folder / "empty.jsonl").write_text("")
    assert read_manifest(folder / "empty.jsonl") == []
    (folder / "m.jsonl").write_text(json.dumps(row(3)) + "\n")
    assert [r["id"] for r in read_manifest(folder / "m.jsonl", check_audio=False)] == ["u3"]
