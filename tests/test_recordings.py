"""A person's recordings for a fine-tune (s2s/data/recordings.py): real speech (flite, the voice
family the prototype never trained on) and the bad inputs a person brings: silence, a clip of
five minutes, a corrupt file, a clipped one, a topic the model does not know, a zip that climbs
out of its folder."""

import subprocess
import zipfile

import numpy as np
import pytest
import soundfile as sf

from s2s.data.recordings import (
    MAX_CLIP_SECONDS,
    RecordingError,
    answer_audio,
    check_clip,
    check_topic,
    manifest_rows,
    read_folder,
    read_recordings,
    read_upload,
    split_holdout,
    topics,
)


def flite(path, text, voice="awb"):
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    flite(d / "capital_france.wav", "What is the capital of France?")
    flite(d / "capital_france_2.wav", "Which city is the capital of France?", voice="slt")
    (d / "banana_color").mkdir()
    flite(d / "banana_color" / "take1.wav", "What color is a banana?")
    return d


def test_every_topic_has_its_answer_audio():
    for topic, text in topics().items():
        data, sr = sf.read(answer_audio(topic))
        assert sr == 24000 and 0.5 < len(data) / sr < 10, topic
    assert len(topics()) == 51  # 50 topics and out_of_scope


def test_a_spoken_question_is_kept_with_its_topic(clips):
    rec = check_clip(clips / "capital_france.wav", "capital_france")
    assert rec.topic == "capital_france" and rec.seconds > 1.0 and rec.speech_seconds > 0.8


def test_a_folder_names_topics_by_file_and_by_subfolder(clips):
    recs = read_folder(clips)
    assert sorted(r.topic for r in recs) == ["banana_color", "capital_france", "capital_france"]
    assert read_recordings(clips) == recs


def test_silence_is_refused(tmp_path):
    sf.write(tmp_path / "quiet.wav", np.zeros(32000, dtype=np.float32), 16000)
    with pytest.raises(RecordingError, match="quiet.wav: silent or too short"):
        check_clip(tmp_path / "quiet.wav", "capital_france")
    hum = 0.003 * np.sin(2 * np.pi * 100 * np.arange(32000) / 16000)  # audible to the file, not speech
    sf.write(tmp_path / "hum.wav", hum.astype(np.float32), 16000)
    with pytest.raises(RecordingError, match="hum.wav: silent or too short"):
        check_clip(tmp_path / "hum.wav", "capital_france")


def test_five_minutes_is_refused_before_decoding(tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "long.wav", (0.1 * rng.standard_normal(16000 * 300)).astype(np.float32), 16000)
    with pytest.raises(RecordingError, match=f"long.wav: too long.*at most {MAX_CLIP_SECONDS:.0f} s"):
        check_clip(tmp_path / "long.wav", "capital_france")


def test_corrupt_and_clipped_files_are_refused(tmp_path, clips):
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    with pytest.raises(RecordingError, match="broken.wav: cannot be read"):
        check_clip(tmp_path / "broken.wav", "capital_france")
    x, sr = sf.read(clips / "capital_france.wav", dtype="float32")
    sf.write(tmp_path / "loud.wav", np.clip(x * 50, -1, 1), sr)
    with pytest.raises(RecordingError, match="loud.wav: clipped"):
        check_clip(tmp_path / "loud.wav", "capital_france")


def test_an_unknown_topic_names_the_close_ones(clips, tmp_path):
    with pytest.raises(RecordingError, match="unknown topic 'capital_frnace'.*did you mean capital_france"):
        check_topic("capital_frnace")
    (tmp_path / "mona_lisa.wav").write_bytes((clips / "capital_france.wav").read_bytes())
    with pytest.raises(RecordingError, match="unknown topic 'mona_lisa'"):
        read_folder(tmp_path)


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def test_an_upload_pairs_clips_with_the_csv(clips, tmp_path):
    wav = (clips / "capital_france.wav").read_bytes()
    z = _zip(tmp_path / "c.zip", {"a/one.wav": wav, "two.wav": (clips / "banana_color" / "take1.wav").read_bytes()})
    (tmp_path / "t.csv").write_text("file,topic\none.wav,capital_france\ntwo.wav,banana_color\n")
    recs = read_upload(z, tmp_path / "t.csv", tmp_path / "out")
    assert [r.topic for r in recs] == ["capital_france", "banana_color"]
    assert all(r.path.parent == tmp_path / "out" for r in recs)


@pytest.mark.parametrize("name", ["../evil.wav", "a/../../evil.wav", "/tmp/evil.wav"])
def test_a_zip_that_climbs_out_is_refused_and_writes_nothing(clips, tmp_path, name):
    z = _zip(tmp_path / "c.zip", {name: (clips / "capital_france.wav").read_bytes()})
    with pytest.raises(RecordingError, match="climbs out of the zip's folder"):
        read_upload(z, None, tmp_path / "out" / "in")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.wav").exists()


def test_bad_uploads_name_the_problem(clips, tmp_path):
    (tmp_path / "not.zip").write_bytes(b"hello")
    with pytest.raises(RecordingError, match="not a readable zip"):
        read_upload(tmp_path / "not.zip", None, tmp_path / "o")
    z = _zip(tmp_path / "c.zip", {"one.wav": (clips / "capital_france.wav").read_bytes()})
    (tmp_path / "t.csv").write_text("missing.wav,capital_france\n")
    with pytest.raises(RecordingError, match="not in the zip: \\['missing.wav'\\]"):
        read_upload(z, tmp_path / "t.csv", tmp_path / "o")
    (tmp_path / "t.csv").write_text("one.wav,who_painted_mona_lisa\n")
    with pytest.raises(RecordingError, match="unknown topic 'who_painted_mona_lisa'"):
        read_upload(z, tmp_path / "t.csv", tmp_path / "o")


def test_holdout_is_disjoint_repeatable_and_leaves_something_to_train(clips):
    recs = read_folder(clips) * 4  # 12
    train, held = split_holdout(recs, 0.3, seed=1)
    assert (len(train), len(held)) == (8, 4) and split_holdout(recs, 0.3, seed=1) == (train, held)
    assert len(split_holdout(recs[:2], 0.9)[0]) == 1
    with pytest.raises(RecordingError, match="--holdout must be in"):
        split_holdout(recs, 1.0)


def test_manifest_rows_pair_each_clip_with_its_answer(clips):
    rows = manifest_rows(read_folder(clips), "train", "t")
    assert rows[0]["response_audio"].endswith("banana_color.flac")
    assert rows[0]["response_text"] == topics()["banana_color"] and rows[0]["split"] == "train"
