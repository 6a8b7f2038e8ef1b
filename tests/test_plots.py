"""Token-grid and loss figures: axes, labels and time alignment."""

import numpy as np
import pytest

from tabs.plots import loss_figure, spectrogram_db, token_grid_figure


def test_grid_and_spectrogram_share_one_time_axis():
    codes = np.random.default_rng(0).integers(0, 1024, (4, 150))  # 2 s at 75 frames/s
    audio = np.random.default_rng(1).standard_normal(48000).astype(np.float32) * 0.1
    fig = token_grid_figure(codes, 75.0, audio, 24000, title="reply")
    spec = next(a for a in fig.axes if a.get_ylabel() == "kHz")
    grid = next(a for a in fig.axes if a.get_yticklabels() and a.get_yticklabels()[0].get_text() == "cb 1")
    assert spec.get_shared_x_axes().joined(spec, grid)
    assert grid.get_xlim() == pytest.approx((0.0, 2.0))
    assert [t.get_text() for t in grid.get_yticklabels()] == ["cb 1", "cb 2", "cb 3", "cb 4"]
    assert "150 frames" in grid.get_xlabel() and spec.get_title(loc="left") == "reply"
    assert spec.get_ylim()[1] == pytest.approx(8.0)  # kHz, speech band only
    image = grid.get_images()[0].get_array()
    assert image.shape == (4, 150) and np.array_equal(image, codes)


def test_grid_without_audio_and_with_no_frames():
    fig = token_grid_figure(np.zeros((8, 0), dtype=np.int64), 75.0, title="empty")
    grid = fig.axes[0]
    assert [t.get_text() for t in grid.get_yticklabels()][-1] == "cb 8"
    assert any("no frames" in t.get_text() for t in grid.texts)
    with pytest.raises(ValueError, match=r"\[K, F\]"):
        token_grid_figure(np.zeros(10), 75.0)


def test_spectrogram_peak_is_zero_db_and_floored():
    sr = 16000
    tone = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr).astype(np.float32)
    db = spectrogram_db(tone, sr, n_fft=1024, hop=256)
    assert db.max() == pytest.approx(0.0) and db.min() >= -80.0
    assert abs(np.argmax(db.mean(axis=1)) * sr / 1024 - 1000) < sr / 1024  # the 1 kHz bin


def test_loss_figure_goes_log_when_the_range_is_wide():
    steps = np.arange(100)
    wide = loss_figure({"train": (steps, 100 * np.exp(-steps / 10) + 0.5), "val": (steps, np.ones(100))})
    assert wide.axes[0].get_yscale() == "log" and len(wide.axes[0].lines) == 2
    narrow = loss_figure({"loss": (steps, 3 + np.exp(-steps / 30))})
    assert narrow.axes[0].get_yscale() == "linear"
