"""Tests for the codecs (s2s/codecs/codec.py, codec_base.py, encodec_24khz.py): EnCodec backend
shapes/ranges/bandwidths, streaming decode vs one-shot decode, weight resolution (explicit
path, HF cache, offline error), load_codec errors.

The EnCodec model here has the real 24 kHz architecture (strides, kernels, causal convs,
2-layer LSTM) but narrow layers and random weights; its codebooks are filled with random
vectors because random init leaves them at zero (which would encode everything to code 0).
Run: python -m pytest -q tests/test_codec.py
"""

import logging

import numpy as np
import pytest
import torch
from transformers import EncodecConfig, EncodecModel

from s2s.codecs.base import StreamDecoder
from s2s.codecs.codec import CodecUnavailable, available_codecs, default_codec, load_codec
from s2s.codecs.encodec_24khz import ENCODEC_REPO, EncodecCodec, resolve_encodec

SR = 24000


def small_encodec(seed: int = 0, fill: bool = True) -> EncodecModel:
    torch.manual_seed(seed)
    model = EncodecModel(EncodecConfig(num_filters=8, hidden_size=32)).eval()
    if fill:
        with torch.no_grad():
            x = torch.from_numpy(speechlike(3.0, seed=99))[None, None]
            # A random encoder's output is a large constant plus tiny frame-to-frame changes,
            # so nearest-codeword choices would hinge on float rounding. Standardise its last
            # conv (per channel: zero mean, unit std over frames) to make the codes robust.
            last = model.encoder.layers[-1].conv
            emb = model.encoder(x)[0]  # [D, F]
            mu, sd = emb.mean(1), emb.std(1)
            last.parametrizations.weight.original0.div_(sd[:, None, None])
            last.bias.sub_(mu).div_(sd)
            # k-means-style init: codewords drawn from the encoder's own residuals + noise.
            residual = model.encoder(x)[0].T  # [F, D]
            for layer in model.quantizer.layers:
                pick = torch.randint(0, residual.shape[0], (layer.codebook.embed.shape[0],))
                noise = 0.3 * residual.std(0) * torch.randn_like(layer.codebook.embed)
                layer.codebook.embed.copy_(residual[pick] + noise)
                residual = residual - layer.decode(layer.encode(residual.T[None]))[0].T
    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Convolutions this small run faster on one thread, and much faster when other work
    # shares the 2 cores (two busy-waiting threads then slow each other down ~10x).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return small_encodec()


@pytest.fixture(scope="module")
def codec(model):
    return EncodecCodec(model=model, bandwidth=3.0)


def speechlike(seconds=1.0, sr=SR, seed=0):
    """A pitch glide with harmonics and noise bursts: varied enough to use many codes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = 120 + 60 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x = x + 0.3 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 2 * t) > 0.6)
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def clip_codes(codec):
    return codec.encode(torch.from_numpy(speechlike(2.0)), SR)  # [4, 150]


def hf_env(monkeypatch, home):
    monkeypatch.delenv("S2S_ENCODEC_PATH", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------- shapes, types, ranges


def test_encode_one_second_is_75_frames(codec):
    codes = codec.encode(torch.from_numpy(speechlike(1.0)), SR)
    assert codes.shape == (4, 75) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 1024
    assert all(len(set(row.tolist())) > 5 for row in codes)  # non-trivial codes
    assert (codec.name, codec.sample_rate, codec.frame_rate, codec.n_codebooks, codec.cardinality) == (
        "encodec_24khz", 24000, 75.0, 4, 1024)


def test_encode_matches_the_underlying_model(codec, model):
    x = torch.from_numpy(speechlike(0.5))
    with torch.no_grad():
        ref = model.encode(x[None, None], bandwidth=3.0).audio_codes[0, 0]
    assert torch.equal(codec.encode(x, SR), ref)


def test_decode_length_and_dtype(codec, clip_codes):
    audio = codec.decode(clip_codes)
    assert audio.shape == (clip_codes.shape[1] * 320,) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all() and float(audio.std()) > 0
    other = codec.decode(torch.roll(clip_codes, 1, dims=0))  # other codes -> other audio
    assert not torch.allclose(audio, other)


def test_partial_frame_rounds_up(codec):
    assert codec.encode(torch.from_numpy(speechlike(1.0))[:12345], SR).shape == (4, 39)  # ceil(12345/320)


@pytest.mark.parametrize("bandwidth,k", [(1.5, 2), (3.0, 4), (6.0, 8)])
def test_codebooks_per_bandwidth(model, bandwidth, k):
    c = EncodecCodec(model=model, bandwidth=bandwidth)
    codes = c.encode(torch.from_numpy(speechlike(0.4)), SR)
    assert c.n_codebooks == k and codes.shape == (k, 30)
    assert c.describe() == {"name": "encodec_24khz", "params": {"bandwidth": bandwidth}}
    assert c.decode(codes).shape == (30 * 320,)


def test_residual_codebooks_are_nested(model, codec):
    x = torch.from_numpy(speechlike(0.4))
    assert torch.equal(EncodecCodec(model=model, bandwidth=6.0).encode(x, SR)[:4], codec.encode(x, SR))


def test_other_rate_and_stereo_accepted(codec):
    x16 = speechlike(1.0, sr=16000)
    assert codec.encode(torch.from_numpy(x16), 16000).shape == (4, 75)
    stereo = np.stack([speechlike(1.0, 44100), speechlike(1.0, 44100, seed=1)])  # [C=2, T]
    assert codec.encode(torch.from_numpy(stereo), 44100).shape == (4, 75)
    same = np.stack([x16, x16])
    assert torch.equal(codec.encode(same, 16000), codec.encode(x16, 16000))  # numpy accepted too


def test_bad_codes_and_wavs_rejected(codec):
    with pytest.raises(ValueError, match=r"shape \[K=4, F\]"):
        codec.decode(torch.zeros(8, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 1024\).*1024\]"):
        codec.decode(torch.full((4, 10), 1024))
    with pytest.raises(ValueError, match="integer"):
        codec.decode(torch.zeros(4, 10))
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(torch.tensor([0.0, float("nan")] * 1000), SR)
    with pytest.raises(ValueError, match="sr"):
        codec.encode(torch.zeros(1000), 0)


def test_padded_batch_matches_one_by_one(codec, model):
    a, b = speechlike(1.0, seed=1), speechlike(0.6, seed=2)
    batch = torch.zeros(2, 1, a.size)
    batch[0, 0], batch[1, 0, : b.size] = torch.from_numpy(a), torch.from_numpy(b)
    mask = torch.zeros(2, 1, a.size, dtype=torch.bool)
    mask[0], mask[1, :, : b.size] = True, True
    with torch.no_grad():
        codes = model.encode(batch, padding_mask=mask, bandwidth=3.0).audio_codes[0]  # [B, K, F]
    ca, cb = codec.encode(a, SR), codec.encode(b, SR)
    assert torch.equal(codes[0], ca)
    # The encoder is causal, so the shorter clip agrees up to its last frame, whose
    # right padding differs (reflection of itself alone vs zeros of the batch): its embeddings
    # agree to float rounding, and so do its codes but for a rare near-tie of the residual
    # quantiser, which that rounding flips on some CPUs (one code of 176 on an AMD EPYC).
    n = cb.shape[1] - 1
    with torch.no_grad():
        together = model.encoder(batch)[1, :, :n]
        alone = model.encoder(torch.from_numpy(b)[None, None])[0, :, :n]
    assert torch.allclose(together, alone, atol=1e-3, rtol=1e-3)
    assert (codes[1, :, :n] == cb[:, :n]).float().mean() >= 0.97


# ---------------------------------------------------------------- streaming


@pytest.mark.parametrize("chunks", [[15], [1, 2, 3, 5, 8, 13], [40, 1, 1, 7]])
def test_stream_matches_one_shot(codec, clip_codes, chunks):
    ref = codec.decode(clip_codes).numpy()
    dec = codec.stream_decoder()
    out, edges, i, j = [], [], 0, 0
    while i < clip_codes.shape[1]:
        n = chunks[j % len(chunks)]
        piece = dec.push(clip_codes[:, i : i + n])
        out.append(piece)
        edges.append(sum(len(p) for p in out))
        i, j = i + n, j + 1
    out.append(dec.flush())
    y = torch.cat(out).numpy()
    assert len(y) == len(ref)
    assert np.corrcoef(y, ref)[0, 1] > 0.9999
    # The one-shot decode reflect-pads its first frames with frames 1..6, which a short
    # first push cannot see: compare from frame 7 on.
    scale = np.abs(ref).max()
    assert np.abs(y - ref)[7 * 320 :].max() < 1e-3 * scale
    # No click: at every chunk edge the step between samples is what the one-shot has.
    jumps = np.abs(np.diff(ref))
    for e in edges[1:-1]:
        if 7 * 320 < e < len(y):
            assert abs(y[e] - y[e - 1]) <= jumps.max()
            assert abs(abs(y[e] - y[e - 1]) - jumps[e - 1]) < 0.05 * jumps.max()


def test_crossfade_smooths_chunk_edges(codec, clip_codes):
    # With too little context the windows disagree a little at each edge; the crossfade
    # must make the step across an edge much closer to the one-shot decode's step.
    ref_jumps = np.abs(np.diff(codec.decode(clip_codes).numpy()))

    def worst_edge_excess(crossfade_ms):
        dec = StreamDecoder(codec, context_frames=2, lookahead_frames=0, crossfade_ms=crossfade_ms)
        out = [dec.push(clip_codes[:, i : i + 5]) for i in range(0, clip_codes.shape[1], 5)] + [dec.flush()]
        y = torch.cat(out).numpy()
        edges = np.cumsum([len(o) for o in out])[:-2]
        return max(abs(abs(y[e] - y[e - 1]) - ref_jumps[e - 1]) for e in edges)

    assert worst_edge_excess(2.5) < 0.5 * worst_edge_excess(0.0)


def test_stream_empty_pushes_and_reuse(codec, clip_codes):
    dec = codec.stream_decoder()
    assert dec.push(clip_codes[:, :0]).numel() == 0
    first = torch.cat([dec.push(clip_codes[:, :50]), dec.push(clip_codes[:, 50:]), dec.flush()])
    assert dec.flush().numel() == 0  # nothing pending after a flush
    second = torch.cat([dec.push(clip_codes[:, :50]), dec.push(clip_codes[:, 50:]), dec.flush()])
    assert first.numel() == clip_codes.shape[1] * 320
    assert torch.equal(first, second)  # the flush reset the decoder: same stream, same audio


def test_stream_rejects_bad_codes(codec):
    with pytest.raises(ValueError, match="shape"):
        codec.stream_decoder().push(torch.zeros(2, 3, dtype=torch.long))


# ---------------------------------------------------------------- weights and front door


def test_random_init_model_is_refused():
    with pytest.raises(CodecUnavailable, match="all zeros"):
        EncodecCodec(model=small_encodec(fill=False))


def test_offline_without_weights_raises_clear_error(monkeypatch, tmp_path):
    hf_env(monkeypatch, tmp_path)
    with pytest.raises(CodecUnavailable) as e:
        resolve_encodec()
    msg = str(e.value)
    for needle in ("S2S_ENCODEC_PATH", str(tmp_path / "hub"), "HF_HUB_OFFLINE=1", "world_vq"):
        assert needle in msg
    with pytest.raises(CodecUnavailable):
        load_codec("encodec_24khz")


def test_weights_from_explicit_path(monkeypatch, tmp_path, model):
    hf_env(monkeypatch, tmp_path / "empty_home")
    model.save_pretrained(tmp_path / "enc")
    x = torch.from_numpy(speechlike(0.5))
    want = EncodecCodec(model=model).encode(x, SR)
    c = EncodecCodec(weights=tmp_path / "enc")
    assert c.weights_source == str(tmp_path / "enc") and torch.equal(c.encode(x, SR), want)
    monkeypatch.setenv("S2S_ENCODEC_PATH", str(tmp_path / "enc"))
    assert torch.equal(load_codec("encodec_24khz").encode(x, SR), want)
    assert default_codec().name == "encodec_24khz"
    with pytest.raises(CodecUnavailable, match="missing_dir.*not a folder"):
        EncodecCodec(weights=tmp_path / "missing_dir")  # explicit path: no silent fallback


def test_weights_with_missing_tensors_refused(tmp_path, model):
    from safetensors.torch import load_file, save_file

    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in state.items() if "decoder" not in k}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(CodecUnavailable, match="lack"):
        EncodecCodec(weights=tmp_path)


def test_weights_from_hf_cache(monkeypatch, tmp_path, model):
    hf_env(monkeypatch, tmp_path)
    repo = tmp_path / "hub" / ("models--" + ENCODEC_REPO.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    model.save_pretrained(repo / "snapshots" / commit)
    c = EncodecCodec(bandwidth=1.5)
    assert c.weights_source.startswith("cache") and c.n_codebooks == 2


def test_load_codec_errors():
    assert available_codecs() == ["encodec_24khz", "world_vq"]
    with pytest.raises(ValueError, match="unknown codec 'mimi'.*encodec_24khz.*world_vq"):
        load_codec("mimi")
    with pytest.raises(ValueError, match=r"bandwidth must be one of \[1.5, 3.0, 6.0\].*12"):
        load_codec("encodec_24khz", bandwidth=12)
    with pytest.raises(ValueError, match="bandwidth.*'high'"):
        load_codec("encodec_24khz", bandwidth="high")
    with pytest.raises(ValueError, match="unknown option.*tables"):
        load_codec("encodec_24khz", tables="x.npz")


def test_default_codec_falls_back_to_world_vq(monkeypatch, tmp_path, caplog):
    world_vq = pytest.importorskip("s2s.codecs.world_vq")
    hf_env(monkeypatch, tmp_path)
    monkeypatch.setattr(world_vq, "DEFAULT_TABLES", tmp_path / "no_tables.npz")
    with pytest.raises(CodecUnavailable, match="(?s)EnCodec.*HF_HUB_OFFLINE.*WORLD-VQ fallback.*no_tables"):
        default_codec()
    rng = np.random.default_rng(0)
    tables = world_vq.save_tables(tmp_path / "tables.npz", *(rng.standard_normal(shape).astype(np.float32)
                                  for shape in world_vq.TABLE_SHAPES.values()))
    monkeypatch.setattr(world_vq, "DEFAULT_TABLES", tables)
    with caplog.at_level(logging.WARNING, logger="s2s.codecs.codec"):
        c = default_codec()
    assert c.name == "world_vq"
    assert "EnCodec weights were not found" in caplog.text and "HF_HUB_OFFLINE" in caplog.text
