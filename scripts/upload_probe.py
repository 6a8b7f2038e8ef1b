"""What an upload of hours costs the server before it is refused: time and peak memory growth of
s2s.serve.guard.readable() (or, --old, of the full decode it replaced) on one file.

    python scripts/upload_probe.py --make /tmp/hours.m4a     # 25 MB of 12 kb/s AAC: ~4.5 hours
    python scripts/upload_probe.py /tmp/hours.m4a            # refused: seconds, MB
    python scripts/upload_probe.py /tmp/hours.m4a --old      # Gradio's audio_from_file (decodes it all)

Peak memory is the process's VmHWM after clear_refs reset it (Linux), minus its resident size
before the call.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def kib(key: str) -> int:
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])


def make(path: Path) -> None:
    """~25 MB of low-bitrate AAC: a 10 s tone encoded once, its packets repeated (no re-encoding)."""
    with tempfile.TemporaryDirectory() as tmp:
        chunk = Path(tmp) / "chunk.m4a"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=220:duration=10",
                        "-ac", "1", "-ar", "16000", "-c:a", "aac", "-b:a", "12k", str(chunk)], check=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "1550", "-i", str(chunk), "-c", "copy",
                        str(path)], check=True)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("file", nargs="?")
    p.add_argument("--make", metavar="PATH", help="write a 25 MB file of hours of AAC here first")
    p.add_argument("--old", action="store_true", help="time the full decode readable() replaced")
    p.add_argument("--max-seconds", type=float, default=60.0, help="the upload limit (the app's: 60 s)")
    args = p.parse_args(argv)
    if args.make:
        make(Path(args.make))
    path = args.file or args.make
    if not path:
        p.error("give a FILE (or --make PATH)")
    if args.old:
        from gradio.processing_utils import audio_from_file

        def call():
            return audio_from_file(path)
    else:
        from s2s.serve.guard import readable

        def call():
            return readable(path, args.max_seconds)
    Path("/proc/self/clear_refs").write_text("5")
    before, t0 = kib("VmRSS"), time.perf_counter()
    try:
        out = call()
        result = f"decoded: {out[1] if isinstance(out, tuple) else out}"
    except ValueError as e:
        result = f"refused: {e}"
    print(f"{time.perf_counter() - t0:.3f} s, peak RSS +{(kib('VmHWM') - before) / 1024:.1f} MB; {result}")


if __name__ == "__main__":
    main()
