"""Codecs by name: waveform <-> discrete codes [K, F]. The front door over the backends.

Backends (both 24 kHz, 75 frames/s, 1024 entries per codebook):
- "encodec_24khz": EnCodec through transformers (s2s/codecs/encodec_24khz.py); bandwidth
  1.5 / 3.0 / 6.0 kbps = 2 / 4 / 8 codebooks (3.0 default). Runs on the CPU.
- "world_vq": offline WORLD vocoder + vector quantiser tables (s2s/codecs/world_vq.py, imported
  lazily so this module works without pyworld).
What every backend provides (Codec) and the streaming decoder they share: s2s/codecs/base.py.

    >>> codec = load_codec("encodec_24khz", bandwidth=3.0)
    >>> codes = codec.encode(wav, sr)            # LongTensor [4, F], F = ceil(T * 75 / 24000)
    >>> audio = codec.decode(codes)              # FloatTensor [F * 320] at 24 kHz
    >>> dec = codec.stream_decoder()
    >>> chunks = [dec.push(codes[:, i:i + 15]) for i in range(0, F, 15)] + [dec.flush()]

Run `python -m s2s.codecs.codec` to print which codec default_codec() picks here and why.
"""

from __future__ import annotations

import logging
import sys

from s2s.codecs.base import Codec, CodecUnavailable
from s2s.codecs.encodec_24khz import EncodecCodec

__all__ = ["Codec", "CodecUnavailable", "available_codecs", "codec_for", "default_codec", "load_codec"]

log = logging.getLogger(__name__)

CODECS = ("encodec_24khz", "world_vq")


def available_codecs() -> list[str]:
    return list(CODECS)


_ENCODEC_OPTIONS = ("bandwidth", "weights", "model", "download")


def load_codec(name: str, **options) -> Codec:
    """Build a codec by name: "encodec_24khz" (bandwidth, weights, model, download) or
    "world_vq" (tables). Unknown names/options/values raise ValueError listing valid ones."""
    if name == "encodec_24khz":
        bad = sorted(set(options) - set(_ENCODEC_OPTIONS))
        if bad:
            raise ValueError(f"unknown option(s) {bad} for encodec_24khz; valid: {list(_ENCODEC_OPTIONS)}")
        return EncodecCodec(**options)
    if name == "world_vq":
        from s2s.codecs.world_vq import WorldVQCodec

        bad = sorted(set(options) - {"tables"})
        if bad:
            raise ValueError(f"unknown option(s) {bad} for world_vq; valid: ['tables']")
        return WorldVQCodec(**options)
    raise ValueError(f"unknown codec {name!r}; available: {available_codecs()}")


def default_codec(**options) -> Codec:
    """EnCodec (options as for load_codec) when its weights resolve, else WORLD-VQ (default
    tables) with a logging warning; CodecUnavailable naming both problems if neither loads."""
    bad = sorted(set(options) - set(_ENCODEC_OPTIONS))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for default_codec; valid: {list(_ENCODEC_OPTIONS)}")
    try:
        return EncodecCodec(**options)
    except CodecUnavailable as e:
        from s2s.codecs.world_vq import WorldVQCodec

        try:
            codec = WorldVQCodec(tables=None)
        except CodecUnavailable as e2:
            raise CodecUnavailable(f"no codec is available.\n{e}\nWORLD-VQ fallback: {e2}") from None
        log.warning("EnCodec weights were not found, using the offline WORLD-VQ codec instead.\n%s", e)
        return codec


def codec_for(config: dict) -> Codec:
    """The codec a checkpoint was trained with, built from what its config.json records."""
    spec = config["codec"]
    options = {"bandwidth": spec["params"]["bandwidth"]} if spec["name"] == "encodec_24khz" else {}
    return load_codec(spec["name"], **options)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        c = default_codec()
    except CodecUnavailable as e:
        sys.exit(f"no codec available: {e}")
    print(f"default codec: {c!r} ({getattr(c, 'weights_source', 'tables')})")
