"""Tests for s2s/io/audio.py: every validation error with real files, mono mixing, resampling,
loudness normalisation, formats, and atomic saving. Run: python -m pytest -q tests/test_audio.py"""

import numpy as np
import pytest
import soundfile as sf
import torch

from s2s.io.audio import (
    PEAK_LIMIT,
    TARGET_DBFS,
    AudioError,
    load_audio,
    normalise_loudness,
    resample,
    save_audio,
    to_16k,
)


def tone(freq=440.0, seconds=1.0, sr=24000, amp=0.3):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * sr / len(x)


# ---------------------------------------------------------------- errors, with real files


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found.*nope.wav"):
        load_audio(tmp_path / "nope.wav", 24000)


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        load_audio(tmp_path, 24000)


def test_text_file_renamed_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is a text file, not a recording\n" * 20)
    with pytest.raises(AudioError, match="could not read.*notes.wav"):
        load_audio(p, 24000)


def test_truncated_wav_header(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(), 24000)
    bad = tmp_path / "cut.wav"
    bad.write_bytes(good.read_bytes()[:30])  # header cut before the data chunk
    with pytest.raises(AudioError, match="could not read.*cut.wav"):
        load_audio(bad, 24000)


def test_corrupt_flac(tmp_path):
    p = tmp_path / "broken.flac"
    p.write_bytes(b"fLaC" + np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError, match="could not read.*broken.flac"):
        load_audio(p, 24000)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(p, 24000)


def test_wav_with_no_samples(tmp_path):
    p = tmp_path / "nothing.wav"
    sf.write(p, np.zeros(0, np.float32), 24000)
    with pytest.raises(AudioError, match="empty.*0 samples"):
        load_audio(p, 24000)


def test_empty_array():
    with pytest.raises(AudioError, match="empty"):
        load_audio((np.zeros(0, np.float32), 24000), 24000)


def test_nan_samples(tmp_path):
    x = tone()
    x[100] = np.nan
    x[200] = np.inf
    p = tmp_path / "nan.wav"
    sf.write(p, x, 24000, subtype="FLOAT")  # float wav keeps the NaN/inf
    with pytest.raises(AudioError, match="2 NaN/inf"):
        load_audio(p, 24000)
    with pytest.raises(AudioError, match="NaN/inf"):
        load_audio((x, 24000), 24000)


def test_silent_file(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(p, np.full(24000, 2e-5, np.float32), 24000, subtype="FLOAT")
    with pytest.raises(AudioError, match="silent: peak 2.00e-05"):
        load_audio(p, 24000)


def test_quiet_but_not_silent_is_accepted_and_raised_to_target():
    x = load_audio((tone(amp=1e-3), 24000), 24000)
    rms_db = 20 * np.log10(float(x.pow(2).mean().sqrt()))
    assert abs(rms_db - TARGET_DBFS) < 0.1


def test_too_short(tmp_path):
    p = tmp_path / "blip.wav"
    sf.write(p, tone(seconds=0.15), 24000)
    with pytest.raises(AudioError, match="too short: 0.150 s"):
        load_audio(p, 24000)
    load_audio((tone(seconds=0.2), 24000), 24000)  # the limit itself is fine


def test_too_long(tmp_path):
    p = tmp_path / "long.wav"
    sf.write(p, tone(seconds=3.0, sr=8000), 8000)
    with pytest.raises(AudioError, match="too long: 3.00 s.*max_seconds is 2"):
        load_audio(p, 24000, max_seconds=2.0)
    with pytest.raises(AudioError, match="too long"):
        load_audio((tone(seconds=3.0, sr=8000), 8000), 24000, max_seconds=2.5)
    assert load_audio(p, 24000, max_seconds=3.5).numel() == 72000


@pytest.mark.parametrize("bad", [0, -24000, 24000.5, "24000", None, True, 10**7])
def test_bad_sample_rate_argument(bad):
    with pytest.raises(AudioError, match="sample_rate"):
        load_audio((tone(), 24000), bad)


def test_bad_sample_rate_in_tuple():
    with pytest.raises(AudioError, match="sample rate in the"):
        load_audio((tone(), 0), 24000)


def test_bad_max_seconds():
    with pytest.raises(AudioError, match="max_seconds"):
        load_audio((tone(), 24000), 24000, max_seconds=float("nan"))


def test_bad_source_types():
    with pytest.raises(AudioError, match="path or an"):
        load_audio(b"RIFF....", 24000)
    with pytest.raises(AudioError, match="numpy array"):
        load_audio(([0.1] * 24000, 24000), 24000)
    with pytest.raises(AudioError, match="square"):
        load_audio((np.ones((300, 300), np.float32) * 0.1, 1000), 1000)
    with pytest.raises(AudioError, match="shape"):
        load_audio((np.ones((2, 2, 24000), np.float32), 24000), 24000)


# ---------------------------------------------------------------- mono, layout, PCM


def test_stereo_file_mixed_to_mono(tmp_path):
    left, right = tone(440), tone(660, amp=0.2)
    p = tmp_path / "stereo.wav"
    sf.write(p, np.stack([left, right], axis=1), 24000, subtype="FLOAT")
    x = load_audio(p, 24000, normalise=False)
    assert x.shape == (24000,) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), (left + right) / 2, atol=1e-6)


def test_array_layouts_agree():
    ch = np.stack([tone(440), tone(550)])  # [C=2, T]
    a = load_audio((ch, 24000), 24000, normalise=False)
    b = load_audio((ch.T.copy(), 24000), 24000, normalise=False)  # [T, C]
    c = load_audio((torch.from_numpy(ch), 24000), 24000, normalise=False)
    np.testing.assert_allclose(a.numpy(), ch.mean(0), atol=1e-6)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_int16_array_scaled_to_float():
    pcm = (tone(amp=0.5) * 32767).astype(np.int16)
    x = load_audio((pcm, 24000), 24000, normalise=False)
    assert abs(float(x.abs().max()) - 0.5) < 1e-3


# ---------------------------------------------------------------- resampling, loudness


def test_resample_44k1_to_24k_length_and_pitch():
    x = load_audio((tone(440, 1.0, 44100), 44100), 24000, normalise=False)
    assert abs(x.numel() - 24000) <= 1
    assert abs(peak_hz(x.numpy(), 24000) - 440) < 1.5  # FFT bin = 1 Hz
    # amplitude preserved away from the edges (HQ filter passband is flat at 440 Hz)
    assert abs(float(x[2000:-2000].abs().max()) - 0.3) < 0.005


def test_resample_16k_to_24k_keeps_pitch():
    y = resample(tone(1000, 1.0, 16000), 16000, 24000)
    assert y.dtype == np.float32 and abs(len(y) - 24000) <= 1
    assert abs(peak_hz(y, 24000) - 1000) < 1.5


def test_normalise_sets_active_rms_and_ignores_pauses():
    speech = tone(amp=0.05, seconds=0.5)
    x = np.concatenate([speech, np.zeros(24000, np.float32), speech])
    y = normalise_loudness(x, 24000)
    active = np.concatenate([y[:12000], y[-12000:]])
    assert abs(20 * np.log10(np.sqrt(np.mean(active**2))) - TARGET_DBFS) < 0.2
    assert np.all(y[12000 + 480 : 36000 - 480] == 0)


def test_normalise_peak_limit_prevents_clipping():
    x = np.zeros(24000, np.float32)
    x[::2400] = 0.9  # sparse clicks: RMS target would need a huge gain
    x += tone(amp=0.001)
    y = load_audio((x, 24000), 24000)
    assert float(y.abs().max()) <= PEAK_LIMIT + 1e-6
    assert float(y.abs().max()) > PEAK_LIMIT - 0.01


# ---------------------------------------------------------------- formats and saving


@pytest.mark.parametrize("ext,subtype", [("flac", None), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")])
def test_compressed_formats(tmp_path, ext, subtype):
    p = tmp_path / f"clip.{ext}"
    sf.write(p, tone(440, 1.0, 44100), 44100, subtype=subtype)
    x = load_audio(p, 24000)
    assert abs(x.numel() - 24000) <= 24000 * 0.02  # lossy codecs may pad a frame
    assert abs(peak_hz(x.numpy(), 24000) - 440) < 2


def test_save_audio_roundtrip_and_atomic(tmp_path):
    wav = torch.from_numpy(tone(amp=0.5))
    wav[0] = 1.7  # out of range: clipped, not wrapped
    out = save_audio(tmp_path / "sub" / "reply.wav", wav, 24000)
    info = sf.info(out)
    assert (info.samplerate, info.subtype, info.channels) == (24000, "PCM_16", 1)
    back, _ = sf.read(out, dtype="float32")
    assert back[0] > 0.99
    np.testing.assert_allclose(back[1:], wav.numpy()[1:], atol=1 / 32768 + 1e-6)
    assert [f.name for f in out.parent.iterdir()] == ["reply.wav"]  # no temp file left


def test_save_audio_rejects_bad_input(tmp_path):
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "x.wav", np.full(100, np.nan, np.float32), 24000)
    with pytest.raises(AudioError, match="sample_rate"):
        save_audio(tmp_path / "x.wav", np.zeros(100, np.float32), -1)
    assert list(tmp_path.iterdir()) == []


def test_to_16k_validates_and_resamples():
    with pytest.raises(ValueError, match="empty"):
        to_16k(np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match=r"1-D waveform \[T\], got shape \(2, 100\)"):
        to_16k(np.zeros((2, 100)), 16000)
    with pytest.raises(ValueError, match="NaN"):
        to_16k(np.full(100, np.nan), 16000)
    with pytest.raises(ValueError, match="sr must be a positive int"):
        to_16k(np.zeros(100), None)
    t = np.arange(48000) / 48000
    y = to_16k(np.sin(2 * np.pi * 440 * t), 48000)
    assert y.dtype == np.float32 and len(y) == 16000
    peak = np.argmax(np.abs(np.fft.rfft(y)))  # 1 s at 16 kHz: bin index = Hz
    assert peak == 440
