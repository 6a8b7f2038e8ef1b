"""FolderGuard keeps a visitor inside the allowed folders; readable() makes uploads loadable."""

import os
import subprocess

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


@pytest.mark.slow  # imports gradio
def test_readable_decodes_with_ffmpeg_what_libsndfile_cannot(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    assert readable(str(wav)) == str(wav)
    m4a = tmp_path / "c.m4a"  # AAC in MP4: what phones record; libsndfile cannot read it
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.5",
                    "-ar", "22050", str(m4a)], check=True)
    data, sr = readable(str(m4a))
    assert sr == 22050 and 0.4 * sr < len(data) < 0.6 * sr
    bad = tmp_path / "b.wav"
    bad.write_bytes(os.urandom(100))
    assert readable(str(bad)) == str(bad)  # left for load_audio to name the problem
