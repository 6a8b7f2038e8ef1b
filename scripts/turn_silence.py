"""How long a silence should end a turn? The false cut-ins and the wait, per threshold, on the
bundled prompts: the numbers behind the conversation mode's default end_silence_ms.

    python scripts/turn_silence.py                       # assets/eval, thresholds 150..600 ms
    python scripts/turn_silence.py --manifest data/corpus/manifest.jsonl --limit 300 --ms 200 250

Each prompt is streamed through the turn detector (s2s/serve/vad.py, as the conversation mode sets
it up) in 20 ms frames, with 1 s of silence before and after. A false cut-in: a turn ended
before the prompt's last speech (its last 10 ms block above -34 dBFS) - the person would have
been interrupted mid-sentence. The wait: speech end -> the end of the turn decided.
Prints one JSON line per threshold.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s2s.io.audio import load_audio  # noqa: E402
from s2s.io.manifest import audio_path, read_manifest  # noqa: E402
from s2s.serve.converse import Limits  # noqa: E402
from s2s.serve.converse_client import speech_end  # noqa: E402
from s2s.serve.vad import VAD_RATE, TurnDetector  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def sweep(clips: list[np.ndarray], thresholds: list[float]) -> list[dict]:
    rows = []
    frame = int(0.02 * VAD_RATE)
    pad = np.zeros(VAD_RATE, np.float32)
    for ms in thresholds:
        cut_ins, waits, missed = 0, [], 0
        for x in clips:
            det = TurnDetector(min_speech_ms=Limits.min_speech_ms, end_silence_ms=ms, pause_events=True)
            clip = np.concatenate([pad, x, pad])
            end = 1.0 + speech_end(x, VAD_RATE)
            ends = []
            for i in range(0, len(clip), frame):
                for ev in det.push(clip[i:i + frame], VAD_RATE):
                    if ev.kind == "end":
                        ends.append(det.seconds)  # stream time when the end was decided
            if not ends:
                missed += 1
                continue
            if ends[0] < end - 0.02:
                cut_ins += 1
            waits.append(ends[-1] - end)
        rows.append({"end_silence_ms": ms, "prompts": len(clips), "false_cut_in_rate": round(cut_ins / len(clips), 4),
                     "no_turn": missed, "wait_median_ms": round(statistics.median(waits) * 1e3, 1),
                     "wait_p90_ms": round(float(np.percentile(waits, 90)) * 1e3, 1)})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", default=str(ROOT / "assets" / "eval" / "manifest.jsonl"))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--ms", type=float, nargs="+", default=[150, 200, 250, 300, 400, 600])
    args = p.parse_args(argv)
    path = Path(args.manifest)
    rows = read_manifest(path)[: args.limit]
    clips = [load_audio(audio_path(path, r["prompt_audio"]), VAD_RATE).numpy() for r in rows]
    for row in sweep(clips, args.ms):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
