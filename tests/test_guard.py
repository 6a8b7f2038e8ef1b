"""FolderGuard keeps a visitor inside the allowed folders; readable() makes uploads loadable."""

import math
import os
import re
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from s2s.serve.guard import FolderGuard, readable


def test_guard_allows_folders_under_its_roots(tree):
    guard = FolderGuard(["ckpts"], base=tree)
    assert guard.resolve("ckpts/a") == (tree / "ckpts" / "a").resolve()
    assert guard.resolve(str(tree / "ckpts" / "b")) == (tree / "ckpts" / "b").resolve()
    assert guard.resolve("ckpts/alias") == (tree / "ckpts" / "a").resolve()  # a link that stays inside


@pytest.mark.parametrize("bad", ["../other/c", "ckpts/../../other/c", "/etc", "ckpts/escape", "~", "ckpts/a\0"])
def test_guard_refuses_paths_outside_its_roots(tree, bad):
    guard = FolderGuard(["ckpts"], base=tree)
    with pytest.raises(ValueError, match="outside the folders|not a usable path"):
        guard.resolve(bad, "checkpoint")


def test_guard_names_missing_and_empty_choices(tree):
    guard = FolderGuard(["ckpts"], base=tree)
    with pytest.raises(ValueError, match="no checkpoint chosen"):
        guard.resolve("  ", "checkpoint")
    with pytest.raises(ValueError, match="not a folder"):
        guard.resolve("ckpts/nope", "checkpoint")


def test_guard_lists_checkpoints_without_hidden_or_linked_folders(tree):
    guard = FolderGuard(["ckpts", "missing"], base=tree)
    assert guard.checkpoints() == ["ckpts/a", "ckpts/b"]  # not .hidden, not the symlinks (not followed)
    assert guard.checkpoint_folders() == ["ckpts", "ckpts/a", "ckpts/b"]


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


def tone(path, seconds, *codec):
    """A real compressed file: a harmonic tone through ffmpeg's encoder for `path`'s container."""
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=220:duration={seconds}", "-af", "aformat=channel_layouts=stereo",
           *codec, path)
    return path


def peak_rss_growth_mb(fn):
    """(fn's result or exception, seconds, peak resident memory growth of this process in MB)."""
    def kib(key):
        return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak (VmHWM) to the current resident size
    except OSError:
        pytest.skip("cannot reset the peak resident size here (/proc/self/clear_refs)")
    before, t = kib("VmRSS"), time.perf_counter()
    try:
        result = fn()
    except ValueError as e:
        result = e
    return result, time.perf_counter() - t, (kib("VmHWM") - before) / 1024


def test_readable_keeps_uncompressed_files_and_leaves_non_audio_to_load_audio(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    assert readable(str(wav), max_seconds=60) == str(wav)  # load_audio reads it: bounded by its size
    bad = tmp_path / "b.wav"
    bad.write_bytes(os.urandom(100))
    assert readable(str(bad), max_seconds=60) == str(bad)  # left for load_audio to name the problem
    with pytest.raises(ValueError, match="max_seconds must be a positive number of seconds, got inf"):
        readable(str(wav), max_seconds=math.inf)


@pytest.mark.parametrize("name,codec", [("c.m4a", ["-c:a", "aac", "-ar", "22050"]),  # what phones record
                                        ("c.opus", ["-c:a", "libopus"]),              # ogg/opus
                                        ("c.webm", ["-c:a", "libopus"])])             # what browsers record
def test_readable_decodes_compressed_uploads_to_mono(tmp_path, name, codec):
    data, sr = readable(str(tone(tmp_path / name, 0.5, *codec)), max_seconds=60)
    assert data.ndim == 1 and data.dtype == np.float32 and sr == (22050 if name.endswith("m4a") else 48000)
    assert 0.45 * sr < len(data) < 0.6 * sr and 0.1 < np.abs(data).max() <= 1.0


@pytest.mark.parametrize("name,codec", [("long.m4a", ["-c:a", "aac", "-b:a", "16k"]),
                                        ("long.opus", ["-c:a", "libopus", "-b:a", "6k"]),  # libsndfile reads it
                                        ("long.webm", ["-c:a", "libopus", "-b:a", "6k"])])
def test_readable_refuses_a_long_upload_from_its_container_naming_duration_and_limit(tmp_path, name, codec):
    path = tone(tmp_path / name, 3, *codec)
    with pytest.raises(ValueError, match=r"too long: .*lasts 3\.0 s \(0:03\); uploads may last at most 1\.5 s"):
        readable(str(path), max_seconds=1.5)
    assert readable(str(path), max_seconds=3.5)[0].size  # the same file under a longer limit


def test_readable_decodes_at_most_the_limit_of_a_file_that_hides_or_misstates_its_length(tmp_path):
    short = tone(tmp_path / "short.webm", 5, "-c:a", "libopus", "-b:a", "6k")
    for live in (True, False):
        # 10 minutes of it, streamed to a pipe: with -live, no duration in the header (as
        # MediaRecorder's recordings); without, the header keeps the 5 s of the first loop.
        path = tmp_path / f"live-{live}.webm"
        with open(path, "wb") as out:
            subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "120", "-i", str(short), "-c", "copy",
                            "-f", "webm", *(["-live", "1"] if live else []), "pipe:1"], stdout=out, check=True)
        said = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                               str(path)], capture_output=True, text=True, check=True).stdout.strip()
        assert said == ("N/A" if live else "5.008000")
        err, seconds, _ = peak_rss_growth_mb(lambda path=path: readable(str(path), max_seconds=10))
        assert isinstance(err, ValueError) and "lasts at least 11.0 s (0:11); uploads may last at most 10 s" in str(err)
        assert seconds < 1.0


def test_readable_does_not_follow_a_playlist_to_other_files(tmp_path):
    tone(tmp_path / "inside.m4a", 0.5, "-c:a", "aac")
    listing = tmp_path / "upload.txt"  # an ffconcat list naming a file beside it
    listing.write_text("ffconcat version 1.0\nfile 'inside.m4a'\n")
    assert readable(str(listing), max_seconds=60) == str(listing)  # not decoded: load_audio refuses it


@pytest.mark.slow  # makes a 25 MB file (~2 s)
def test_readable_refuses_25_mb_of_hours_within_a_second_without_decoding_it(tmp_path):
    chunk = tone(tmp_path / "chunk.m4a", 10, "-ac", "1", "-ar", "16000", "-c:a", "aac", "-b:a", "12k")
    big = tmp_path / "hours.m4a"
    ffmpeg("-stream_loop", 1550, "-i", chunk, "-c", "copy", big)  # copies packets: no encoding
    assert 22e6 < big.stat().st_size <= 25 * 1024 * 1024  # under the app's upload limit (25 MB)
    err, seconds, grown_mb = peak_rss_growth_mb(lambda: readable(str(big), max_seconds=60))
    assert isinstance(err, ValueError), err
    assert re.search(r"lasts 15\d{3}\.\d s \(4:\d\d:\d\d\); uploads may last at most 60 s", str(err)), err
    # the figure (0.1-0.3 s) is scripts/upload_probe.py's; here only a bound that a full decode
    # (seconds, hundreds of MB) would break on a slow, shared machine
    assert seconds < 3.0 and grown_mb < 100, (seconds, grown_mb)
