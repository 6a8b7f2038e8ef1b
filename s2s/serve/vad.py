"""Turn-taking for hands-free talk: feed microphone chunks, hear when a turn starts and ends.

Voice activity comes from silero-vad (its ONNX model ships inside the wheel, no download),
run on 32 ms windows (512 samples at 16 kHz). A turn starts after `min_speech_ms` of speech
and ends after `end_silence_ms` of silence (or at `max_turn_seconds`); the ended turn's
audio (from `pre_roll_ms` before the start to the end of speech, at the microphone's own
rate) comes with the event.

    det = TurnDetector()
    for chunk in microphone:                      # any rate, int16 or float, mono or [T, C]
        for ev in det.push(chunk, 48000):
            if ev.kind == "start": stop_playback()           # barge-in
            if ev.kind == "end": reply_to(ev.audio, ev.sample_rate)  # ev.at: where speech ended (s)

One TurnDetector per conversation (it keeps the VAD's recurrent state); all of them share
one ONNX session. `python -m s2s.serve.vad FILE.wav` prints the events a file gives, chunked as a
microphone would send it.
"""

from __future__ import annotations

import copy
import sys
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import soxr
import torch

VAD_RATE = 16000
WINDOW = 512  # samples per VAD decision at 16 kHz (32 ms)
TRAILING_S = 0.1  # silence kept at the end of a turn

_model_lock = threading.Lock()
_shared: list = []  # the one loaded OnnxWrapper, filled on first use (not at import)


def _silero():
    """silero-vad's ONNX model, loaded once per process.

    Importing silero_vad calls torch.set_num_threads(1) for the whole process; the thread
    count is restored so the speech model keeps its cores.
    """
    with _model_lock:
        if not _shared:
            threads = torch.get_num_threads()
            try:
                from silero_vad import load_silero_vad
            except ImportError as e:
                raise RuntimeError(f"hands-free mode needs silero-vad: pip install silero-vad==6.2.3 ({e})")
            finally:
                torch.set_num_threads(threads)
            with warnings.catch_warnings():  # silero's own importlib.resources.path call is deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                _shared.append(load_silero_vad(onnx=True))
        return _shared[0]


@dataclass
class VadEvent:
    kind: str  # "start" (speech began), "end" (the turn is over); with pause_events also
    # "pause" (silence began: the turn's audio as "end" will give it if the silence lasts) and
    # "resume" (speech came back after a pause: the turn goes on)
    at: float  # seconds from the start of the stream: where speech started / ended / resumed
    audio: np.ndarray | None = None  # "end" and "pause": the turn, float32 mono [T] at sample_rate;
    # "start": what was heard so far (the pre-roll and the speech that started the turn)
    sample_rate: int = VAD_RATE  # the microphone's own rate (the turn is not resampled)


class TurnDetector:
    """Voice-activity state machine over a stream of audio chunks.

    threshold: speech probability that counts as speech; silence is below threshold - 0.15
    (silero's own hysteresis). min_speech_ms: speech needed before a turn starts (coughs and
    clicks shorter than this are ignored). end_silence_ms: silence that ends a turn.
    pause_events: also say "pause" after pause_ms of silence (the turn's audio is final: up to
    TRAILING_S of that silence is kept) and "resume" if speech comes back, so a reply can be
    prepared, and the end of the turn decided from what was said, while the end-of-turn
    silence is still being waited for (the conversation mode does).

    The VAD hears each chunk resampled to 16 kHz on its own (edge effects do not matter to a
    speech/silence decision); the turn handed out is cut from the chunks as they came, at
    their own rate, so the reply model gets the microphone's full quality.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        min_speech_ms: float = 160.0,
        end_silence_ms: float = 600.0,
        pre_roll_ms: float = 200.0,
        max_turn_seconds: float = 30.0,
        pause_events: bool = False,
        pause_ms: float = TRAILING_S * 1000,
    ) -> None:
        if not 0.15 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0.15, 1), got {threshold!r}")
        for name, v in (("min_speech_ms", min_speech_ms), ("end_silence_ms", end_silence_ms),
                        ("pre_roll_ms", pre_roll_ms), ("max_turn_seconds", max_turn_seconds),
                        ("pause_ms", pause_ms)):
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        self.threshold = threshold
        self.min_speech = max(1, int(min_speech_ms / 1000 * VAD_RATE / WINDOW + 0.5))  # windows
        self.end_silence = max(1, int(end_silence_ms / 1000 * VAD_RATE / WINDOW + 0.5))
        self.pre_roll = int(pre_roll_ms / 1000 * VAD_RATE)  # 16 kHz samples
        self.max_turn = int(max_turn_seconds * VAD_RATE)
        # "pause" after pause_ms of silence (at least one window)
        self.pause = max(1, -(-int(pause_ms / 1000 * VAD_RATE) // WINDOW)) if pause_events else None
        self.vad = copy.copy(_silero())  # shares the ONNX session, owns its recurrent state
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new conversation."""
        self.vad.reset_states()
        self.rate: int | None = None  # the microphone's rate
        self._pending = np.zeros(0, np.float32)  # 16 kHz samples not yet in a window
        self._raw = np.zeros(0, np.float32)  # input samples kept: the pre-roll, or the turn so far
        self._raw_first = 0  # absolute input-rate index of self._raw[0]
        self._pos = 0  # windows analysed so far
        self._turn_start = 0  # 16 kHz index where the kept audio (pre-roll included) starts
        self._speech_run = 0  # consecutive speech windows (before a turn starts)
        self._silence_run = 0  # consecutive silent windows (inside a turn)
        self.in_turn = False
        self.last_prob = 0.0

    @property
    def seconds(self) -> float:
        """Stream time analysed so far."""
        return self._pos * WINDOW / VAD_RATE

    def push(self, chunk, sample_rate: int) -> list[VadEvent]:
        """One microphone chunk ([T] or [T, C], int16 or float) -> the events it completes.
        A change of sample rate starts a new stream."""
        x = to_mono_float(chunk)
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
        if self.rate != sample_rate:
            self.reset()
            self.rate = int(sample_rate)
        self._raw = np.concatenate([self._raw, x])
        y = x if sample_rate == VAD_RATE else soxr.resample(x, sample_rate, VAD_RATE).astype(np.float32)
        y = np.concatenate([self._pending, y]) if self._pending.size else y
        n = y.size // WINDOW
        self._pending = y[n * WINDOW:]
        events = [self._window(y[i * WINDOW:(i + 1) * WINDOW]) for i in range(n)]
        return [e for e in events if e is not None]

    def end_turn(self) -> None:
        """The turn is over, decided elsewhere (the conversation's turn head): speech from here
        on starts a new turn ("start") rather than resuming this one."""
        if self.in_turn:
            self._keep_from(self._pos * WINDOW)
            self.in_turn, self._speech_run, self._silence_run = False, 0, 0

    def _keep_from(self, index16: int) -> None:
        """Drop the input samples before 16 kHz index index16."""
        cut = int(round(index16 * self.rate / VAD_RATE)) - self._raw_first
        if cut > 0:
            self._raw = self._raw[cut:]
            self._raw_first += cut

    def _window(self, w: np.ndarray) -> VadEvent | None:
        prob = float(self.vad(torch.from_numpy(w), VAD_RATE))
        self.last_prob = prob
        self._pos += 1
        now = self._pos * WINDOW  # 16 kHz index of the end of this window
        if not self.in_turn:
            self._speech_run = self._speech_run + 1 if prob >= self.threshold else 0
            # keep only the pre-roll plus the speech run that may become a turn
            self._turn_start = max(0, now - self._speech_run * WINDOW - self.pre_roll)
            self._keep_from(self._turn_start)
            if self._speech_run >= self.min_speech:
                self.in_turn, self._silence_run = True, 0
                at = (self._pos - self._speech_run) * WINDOW / VAD_RATE
                return VadEvent("start", at, self._raw.copy(), self.rate)
            return None
        silent = prob < self.threshold - 0.15
        resumed = not silent and self.pause is not None and self._silence_run >= self.pause
        self._silence_run = self._silence_run + 1 if silent else 0
        end = now - self._silence_run * WINDOW  # start of the final silent run
        if self._silence_run >= self.end_silence or now - self._turn_start >= self.max_turn:
            audio = self._turn_audio(end)
            self._keep_from(now)
            self.in_turn, self._speech_run, self._silence_run = False, 0, 0
            return VadEvent("end", end / VAD_RATE, audio, self.rate)
        if resumed:
            return VadEvent("resume", self._pos * WINDOW / VAD_RATE)
        if self._silence_run == self.pause:
            return VadEvent("pause", end / VAD_RATE, self._turn_audio(end), self.rate)
        return None

    def _turn_audio(self, end: int) -> np.ndarray:
        """The turn from its kept start to 16 kHz index `end` (where speech stopped), plus a little
        of the trailing silence (up to TRAILING_S) so the last phoneme's decay stays."""
        keep = min(self._silence_run * WINDOW, int(TRAILING_S * VAD_RATE))
        stop = int(round((end + keep) * self.rate / VAD_RATE))
        return self._raw[: stop - self._raw_first].copy()


def to_mono_float(chunk) -> np.ndarray:
    """[T] or [T, C] (browsers send [T, C]), integer PCM or float -> float32 mono [T]."""
    x = np.asarray(chunk)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio chunk must be [T] or [T, C], got shape {x.shape}")
    if x.dtype.kind == "i":
        x = x.astype(np.float32) / float(2 ** (8 * x.dtype.itemsize - 1))
    elif x.dtype.kind != "f":
        raise ValueError(f"audio chunk must be integer PCM or float, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    return np.nan_to_num(x.mean(axis=1) if x.ndim == 2 else x)


def main(argv: list[str] | None = None) -> None:
    import soundfile as sf

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m s2s.serve.vad FILE.wav")
    x, sr = sf.read(argv[0], dtype="float32")
    det = TurnDetector()
    step = int(sr * 0.25)  # 250 ms chunks, as the app's microphone stream sends them
    silence = np.zeros(int(sr * 1.0), np.float32)  # so a turn at the very end still ends
    x = np.concatenate([x if x.ndim == 1 else x.mean(axis=1), silence])
    for i in range(0, len(x), step):
        for ev in det.push(x[i:i + step], sr):
            extra = f" ({ev.audio.size / ev.sample_rate:.2f} s of audio)" if ev.audio is not None else ""
            print(f"{ev.kind:>5} at {ev.at:6.2f} s{extra}")


if __name__ == "__main__":
    main()
