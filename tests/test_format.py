"""What the tabs show: loss curves read from a checkpoint's log, WAV chunks, the timing table."""

import io

import numpy as np
import soundfile as sf

from tabs.format import loss_curves, timing_table, wav_bytes


def test_loss_curves_from_a_list_and_from_a_log_inside_the_checkpoint(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "train_log.jsonl").write_text(
        '{"step": 10, "loss": 5.0, "lr": 0.001}\n{"step": 10, "val_loss": 5.5}\n{"step": 20, "loss": 4.0}\nbad\n')
    assert loss_curves(ck, {"log": "train_log.jsonl"}) == {"loss": ([10.0, 20.0], [5.0, 4.0]),
                                                          "val_loss": ([10.0], [5.5])}
    assert loss_curves(ck, {"losses": [3.0, 2.5]}) == {"loss": ([0.0, 1.0], [3.0, 2.5])}
    (tmp_path / "secret.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert loss_curves(ck, {"log": "../secret.jsonl"}) == {}  # outside the checkpoint: not read
    (ck / "log.csv").write_text("step,loss\n1,2.0\n2,1.5\n")
    assert loss_curves(ck, {"log": "log.csv"}) == {"loss": ([1.0, 2.0], [2.0, 1.5])}


def test_wav_bytes_round_trip():
    x = (0.5 * np.sin(np.linspace(0, 100, 4800))).astype(np.float32)
    data = wav_bytes(x, 24000)
    y, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert data[:4] == b"RIFF" and sr == 24000
    assert np.max(np.abs(y - x)) < 1e-4


def test_timing_table_lists_the_stages():
    t = {"load": 1.0, "encode": 10.0, "prefill": 5.0, "first_frame": 8.0, "time_to_first_audio": 20.0,
         "generate": 100.0, "decode": 30.0, "total": 150.0, "realtime_factor": 3.5}
    rows = dict(timing_table(t, 2.0))
    assert rows["time to first audio"] == "20 ms" and rows["prefill"] == "5 ms"
    assert rows["real-time factor"].startswith("3.50") and rows["reply length"] == "2.00 s"
