"""ModelCache: each checkpoint loaded once across threads, LRU, one EnCodec for every bandwidth,
load errors remembered."""

import threading

import pytest

from s2s.codecs.codec import CodecUnavailable, load_codec
from s2s.codecs.encodec_24khz import EncodecCodec
from s2s.serve.model_cache import ModelCache
from s2s.serve.pipeline import load_pipeline


def codec_loader(tiny):
    def load(name, bandwidth=3.0, model=None, **options):
        if name == "encodec_24khz":
            return EncodecCodec(model=model or tiny.model, bandwidth=bandwidth)
        return load_codec(name, **options)
    return load


def test_cache_loads_each_checkpoint_once_across_threads(tree, tiny_encodec):
    loads = []

    def counting_loader(path, **kw):
        loads.append(path)
        return load_pipeline(path, **kw)

    cache = ModelCache("cpu", pipeline_loader=counting_loader, codec_loader=codec_loader(tiny_encodec))
    path = tree / "ckpts" / "a"
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.pipeline(path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len(got) == 4 and all(p is got[0] for p in got)
    assert cache.pipeline(path) is got[0]


def test_cache_drops_the_least_recently_used_pipeline(tree, tiny_encodec):
    cache = ModelCache("cpu", codec_loader=codec_loader(tiny_encodec), max_pipelines=1)
    a, b = tree / "ckpts" / "a", tree / "ckpts" / "b"
    cache.pipeline(a)
    cache.pipeline(b)
    assert cache.loaded(a) is None and cache.loaded(b) is not None


def test_cache_shares_one_encodec_model_across_bandwidths(tiny_encodec):
    cache = ModelCache("cpu", codec_loader=codec_loader(tiny_encodec))
    low, high = cache.codec("encodec_24khz", 1.5), cache.codec("encodec_24khz", 6.0)
    assert (low.n_codebooks, high.n_codebooks) == (2, 8)
    assert low.model is high.model
    assert cache.codec("encodec_24khz", 1.5) is low
    assert cache.encodec_status() is None


def test_missing_encodec_weights_are_reported_once(tmp_path, monkeypatch):
    monkeypatch.setenv("S2S_ENCODEC_PATH", str(tmp_path / "no-weights"))
    calls = []

    def loader(name, **options):
        calls.append(name)
        return load_codec(name, **options)

    cache = ModelCache("cpu", codec_loader=loader)
    for _ in range(2):
        with pytest.raises(CodecUnavailable, match="no-weights"):
            cache.codec("encodec_24khz", 3.0)
    assert "not found" in cache.encodec_status()
    assert calls == ["encodec_24khz"]  # the failure is remembered, not retried per request


def test_cache_rejects_an_unknown_device():
    with pytest.raises(ValueError, match="device must be"):
        ModelCache("tpu")
