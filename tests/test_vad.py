"""Turn detection on real synthetic speech (espeak-ng) and silence, chunked as a microphone sends it."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr

from s2s.serve.vad import VAD_RATE, TurnDetector


@pytest.fixture(scope="module")
def utterance(tmp_path_factory):
    """espeak-ng speech at 16 kHz, and where its speech starts and ends (s), from its own energy."""
    path = tmp_path_factory.mktemp("vad") / "u.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "Hello there, how are you doing today?"], check=True)
    x, sr = sf.read(path, dtype="float32")
    x = soxr.resample(x, sr, VAD_RATE).astype(np.float32)
    frames = np.abs(x[: x.size // 160 * 160]).reshape(-1, 160).max(axis=1)  # 10 ms peaks
    loud = np.flatnonzero(frames > 0.02)
    return x, loud[0] / 100, (loud[-1] + 1) / 100


def feed(det, x, sr, chunk_s=0.25):
    step = int(sr * chunk_s)
    events = []
    for i in range(0, len(x), step):
        events += det.push(x[i:i + step], sr)
    return events


def silence(seconds, sr=VAD_RATE):
    return np.zeros(int(seconds * sr), np.float32)


def test_speech_then_silence_is_one_turn(utterance):
    x, start, end = utterance
    det = TurnDetector(end_silence_ms=600)
    events = feed(det, np.concatenate([silence(1.0), x, silence(1.5)]), VAD_RATE)
    assert [e.kind for e in events] == ["start", "end"]
    assert abs(events[0].at - (1.0 + start)) < 0.25
    assert abs(events[1].at - (1.0 + end)) < 0.35
    turn = events[1].audio
    assert turn.dtype == np.float32 and events[1].sample_rate == VAD_RATE
    # the turn holds the speech (plus the pre-roll and a short tail), not the silences around it
    assert end - start - 0.3 < turn.size / VAD_RATE < end - start + 0.7
    # the turn is the input itself, from the pre-roll (200 ms) before the start of speech
    first = int(round(events[0].at * VAD_RATE)) - int(0.2 * VAD_RATE)
    clip = np.concatenate([silence(1.0), x, silence(1.5)])
    assert np.array_equal(turn, clip[first:first + turn.size])
    assert not det.in_turn


def test_turn_does_not_end_during_short_pauses(utterance):
    x, start, end = utterance
    det = TurnDetector(end_silence_ms=800)
    # a 0.4 s pause between two sentences stays one turn; then 1.2 s of silence ends it
    events = feed(det, np.concatenate([silence(0.5), x, silence(0.4), x, silence(1.2)]), VAD_RATE)
    assert [e.kind for e in events] == ["start", "end"]


def test_two_turns_after_long_silence(utterance):
    x, _, _ = utterance
    det = TurnDetector(end_silence_ms=500)
    events = feed(det, np.concatenate([x, silence(1.0), x, silence(1.0)]), VAD_RATE)
    assert [e.kind for e in events] == ["start", "end", "start", "end"]


def test_silence_and_quiet_noise_are_no_turn():
    det = TurnDetector()
    rng = np.random.default_rng(0)
    noise = (0.003 * rng.standard_normal(VAD_RATE * 3)).astype(np.float32)
    assert feed(det, np.concatenate([silence(2.0), noise]), VAD_RATE) == []
    assert det.seconds == pytest.approx(5.0, abs=0.05)


def test_any_rate_channels_and_chunking_give_the_same_turn(utterance):
    x, _, _ = utterance
    clip = np.concatenate([silence(0.5), x, silence(1.0)])
    reference = feed(TurnDetector(), clip, VAD_RATE)
    # 48 kHz int16 stereo in 0.1 s chunks, as a browser sends it
    hi = soxr.resample(clip, VAD_RATE, 48000)
    stereo = (np.stack([hi, hi], axis=1) * 32767).astype(np.int16)
    other = feed(TurnDetector(), stereo, 48000, chunk_s=0.1)
    assert [e.kind for e in other] == [e.kind for e in reference] == ["start", "end"]
    for a, b in zip(reference, other):
        assert abs(a.at - b.at) <= 0.07  # within two 32 ms VAD windows
    assert other[1].sample_rate == 48000  # the turn comes at the microphone's rate
    assert abs(other[1].audio.size / 48000 - reference[1].audio.size / VAD_RATE) <= 0.07


def test_max_turn_length_ends_a_turn(utterance):
    x, _, _ = utterance
    det = TurnDetector(max_turn_seconds=1.0, end_silence_ms=2000)
    events = feed(det, np.concatenate([x, x]), VAD_RATE)
    ends = [e for e in events if e.kind == "end"]
    assert ends and ends[0].audio.size <= 1.1 * VAD_RATE


def test_bad_settings_and_chunks_are_value_errors():
    with pytest.raises(ValueError, match="threshold"):
        TurnDetector(threshold=1.5)
    with pytest.raises(ValueError, match="end_silence_ms"):
        TurnDetector(end_silence_ms=-1)
    det = TurnDetector()
    with pytest.raises(ValueError, match="sample_rate"):
        det.push(np.zeros(100, np.float32), 0)
    with pytest.raises(ValueError, match="dtype"):
        det.push(np.array(["a"] * 10), 16000)


@pytest.mark.slow
def test_importing_silero_keeps_torch_threads():
    """silero_vad sets torch to 1 thread when imported; s2s.serve.vad puts the count back."""
    code = ("import torch; torch.set_num_threads(2); from s2s.serve.vad import TurnDetector; TurnDetector(); "
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"


def test_pause_gives_the_turn_early_and_resume_takes_it_back(utterance):
    x, start, end = utterance
    det = TurnDetector(end_silence_ms=1000, pause_events=True)
    clip = np.concatenate([silence(0.5), x, silence(0.4), x, silence(1.2)])
    events = feed(det, clip, VAD_RATE, chunk_s=0.02)  # 20 ms frames, as the conversation mode sends
    kinds = [e.kind for e in events]
    # the 0.4 s gap: a pause, then speech resumes; the final silence: a pause, then the end
    assert kinds.count("start") == 1 and kinds.count("end") == 1
    assert kinds[-2:] == ["pause", "end"] and "resume" in kinds
    pause, last = events[-2], events[-1]
    assert pause.at == last.at and np.array_equal(pause.audio, last.audio)  # the turn was final at the pause
    assert det.pause * 512 / VAD_RATE < 0.2  # ... after ~0.13 s of silence instead of 1 s
    assert kinds.index("resume") > kinds.index("pause")


def test_a_shorter_pause_comes_sooner_and_a_start_carries_its_onset(utterance):
    x, start, end = utterance
    clip = np.concatenate([silence(0.5), x, silence(1.2)])
    at = {}
    for ms in (64, 100):
        det = TurnDetector(end_silence_ms=1000, pause_events=True, pause_ms=ms)
        events, t = [], 0.0
        for i in range(0, len(clip), 320):  # 20 ms frames: note when each event is known
            t += 0.02
            events += [(t, e) for e in det.push(clip[i:i + 320], VAD_RATE)]
        at[ms] = next(t for t, e in events if e.kind == "pause")
        onset = next(e for _, e in events if e.kind == "start")
        # the onset holds the pre-roll and the speech that started the turn: what a backchannel is weighed on
        assert 0.2 <= onset.audio.size / VAD_RATE <= 0.5 and np.abs(onset.audio).max() > 0.05
    assert 0.02 <= at[100] - at[64] <= 0.1
    with pytest.raises(ValueError, match="pause_ms"):
        TurnDetector(pause_events=True, pause_ms=-5)


def test_a_turn_ended_elsewhere_makes_the_next_speech_a_new_turn(utterance):
    x, start, end = utterance
    det = TurnDetector(end_silence_ms=1000, pause_events=True, pause_ms=64)
    kinds = [e.kind for e in feed(det, np.concatenate([silence(0.5), x, silence(0.3)]), VAD_RATE, chunk_s=0.02)]
    assert kinds[0] == "start" and kinds[-1] == "pause" and "end" not in kinds and det.in_turn
    det.end_turn()  # the conversation's turn head decided at the pause
    events = feed(det, np.concatenate([x, silence(1.2)]), VAD_RATE, chunk_s=0.02)
    assert events[0].kind == "start"  # not "resume": a new turn
    assert events[-1].kind == "end"
    assert events[-1].audio.size / VAD_RATE < len(x) / VAD_RATE + 0.5  # only the new speech
