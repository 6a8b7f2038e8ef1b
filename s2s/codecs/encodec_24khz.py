"""EnCodec 24 kHz through transformers (`facebook/encodec_24khz`), on the CPU.

    codec = EncodecCodec(bandwidth=3.0)          # 1.5 / 3.0 / 6.0 kbps = 2 / 4 / 8 codebooks
    codes = codec.encode(wav, sr)                # LongTensor [4, F], F = ceil(T * 75 / 24000)
    audio = codec.decode(codes)                  # FloatTensor [F * 320] at 24 kHz

Weights resolve in this order: an explicit local folder (`weights=` or the environment
variable S2S_ENCODEC_PATH; if given it must work, nothing else is tried), the local Hugging
Face cache, a download. With none, CodecUnavailable says what was tried and how to fix it.
Random weights are never used silently: a model whose codebooks are all zero (random init, or
a checkpoint with missing tensors) is refused.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from s2s.codecs.base import Codec, CodecUnavailable

ENCODEC_REPO = "facebook/encodec_24khz"
ENCODEC_BANDWIDTHS = {1.5: 2, 3.0: 4, 6.0: 8}  # kbps -> codebooks (75 frames/s x 10 bits each)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment now (not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached (None if it may be): avoids ~25 s of retries offline."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy may reach it even where DNS cannot: let the real download try
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        socket.create_connection((host, port), timeout=3.0).close()
        return None
    except OSError as e:
        return f"cannot reach {host}:{port} ({e})"


def _from_pretrained(source: str | Path, **kwargs):
    """EncodecModel.from_pretrained, refusing checkpoints with missing tensors (= random init)."""
    from transformers import EncodecModel

    model, info = EncodecModel.from_pretrained(str(source), output_loading_info=True, **kwargs)
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise CodecUnavailable(
            f"EnCodec weights at {source} lack {len(missing)} tensors (e.g. {missing[:3]}); "
            "they would be random, refusing to use them"
        )
    return model


def resolve_encodec(weights: str | os.PathLike | None = None, *, download: bool = True):
    """Find EnCodec 24 kHz weights -> (EncodecModel, where they came from).

    Order: `weights` or $S2S_ENCODEC_PATH (a folder from save_pretrained / a hub snapshot;
    when given, only it is tried), then the Hugging Face cache, then a download (skipped
    when HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set, download=False, or the hub is
    unreachable). Raises CodecUnavailable listing every attempt and how to fix it.
    """
    if weights:
        explicit, how = weights, "weights="
    else:
        explicit, how = os.environ.get("S2S_ENCODEC_PATH"), "S2S_ENCODEC_PATH="
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise CodecUnavailable(
                f"EnCodec weights not found: {how}{str(explicit)!r} is not a folder. Point it at a "
                f"folder holding config.json + model.safetensors (e.g. EncodecModel.from_pretrained("
                f"'{ENCODEC_REPO}').save_pretrained(FOLDER) on a machine with internet)."
            )
        try:
            return _from_pretrained(path, local_files_only=True), str(path)
        except CodecUnavailable:
            raise
        except Exception as e:  # transformers raises OSError/ValueError/... for bad folders
            raise CodecUnavailable(
                f"could not load EnCodec weights from {how}{str(path)!r}: {type(e).__name__}: {e}"
            ) from None

    tried = ["explicit path: none given (weights= option or S2S_ENCODEC_PATH)"]
    cache = _hf_hub_cache()
    try:
        return _from_pretrained(ENCODEC_REPO, cache_dir=str(cache), local_files_only=True), f"cache {cache}"
    except CodecUnavailable as e:
        tried.append(f"Hugging Face cache {cache}: {e}")
    except Exception as e:
        tried.append(f"Hugging Face cache {cache}: {ENCODEC_REPO} not there ({type(e).__name__})")

    offline = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if _env_flag(v)]
    if offline:
        tried.append(f"download: skipped, {offline[0]}={os.environ[offline[0]]}")
    elif not download:
        tried.append("download: skipped, download=False")
    elif (why := _hub_unreachable()) is not None:
        tried.append(f"download: skipped, {why}")
    else:
        try:
            return _from_pretrained(ENCODEC_REPO, cache_dir=str(cache)), f"download of {ENCODEC_REPO}"
        except Exception as e:
            tried.append(f"download of {ENCODEC_REPO}: {type(e).__name__}: {str(e)[:300]}")

    raise CodecUnavailable(
        "EnCodec 24 kHz weights not available. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nFix: set S2S_ENCODEC_PATH to a folder saved from '{ENCODEC_REPO}' "
        "(config.json + model.safetensors), or run once with internet access so the "
        "Hugging Face cache holds it, or use the offline codec: load_codec('world_vq')."
    )


def check_bandwidth(bandwidth) -> float:
    try:
        bw = float(bandwidth)
    except (TypeError, ValueError):
        bw = None
    if bw not in ENCODEC_BANDWIDTHS:
        raise ValueError(
            f"bandwidth must be one of {sorted(ENCODEC_BANDWIDTHS)} kbps, got {bandwidth!r}"
        )
    return bw


class EncodecCodec(Codec):
    """EnCodec 24 kHz (transformers.EncodecModel) on the CPU.

    model= takes an already-built EncodecModel (tests, custom loading); otherwise the
    weights resolve as described in resolve_encodec().
    """

    name = "encodec_24khz"
    sample_rate = 24000
    frame_rate = 75.0
    cardinality = 1024
    # Streaming sizes, measured against the one-shot decode (full-size architecture, random
    # weights with k-means-style codebooks, a 4 s human recording, pushes of 1/5/15 frames;
    # max error / peak of the one-shot audio, after the first 7 frames):
    #   left context  2: 8.5e-5   4: 4.3e-5   6: 1.9e-5   8: 8.7e-6   10: 3.9e-6   16: 7e-7   32: 5e-7
    # Look-ahead 1 gave the same numbers as 0: the decoder is causal (causal convs,
    # right-trimmed transposed convs, one-way LSTM), so no frame waits for the next push.
    # Context is what matters (frame-rate conv kernel 7 = 6 frames, then the LSTM state):
    # 16 frames (213 ms) reaches the float-noise floor, with margin for a trained LSTM's
    # longer memory; at 15-frame pushes it costs ~2.5x the one-shot decode work
    # (1 thread, 5 s clip: stream RTF 0.26 vs 0.10).
    # The first 7 frames differ by up to 6e-4 when the first push is shorter than 7 frames:
    # the one-shot decode reflect-pads its start with frames 1..6, which a stream cannot see.
    # A 2.5 ms crossfade cut the step error at chunk edges 4-25x when context was too short.
    stream_context_frames = 16
    stream_lookahead_frames = 0
    stream_crossfade_ms = 2.5

    def __init__(
        self,
        bandwidth: float = 3.0,
        weights: str | os.PathLike | None = None,
        model=None,
        download: bool = True,
    ) -> None:
        bandwidth = check_bandwidth(bandwidth)
        if model is None:
            model, self.weights_source = resolve_encodec(weights, download=download)
        else:
            self.weights_source = f"given {type(model).__name__}"
        cfg = model.config
        got = (cfg.sampling_rate, cfg.codebook_size, cfg.audio_channels, int(np.prod(cfg.upsampling_ratios)))
        if got != (24000, 1024, 1, 320):
            raise ValueError(
                "EnCodec model must be 24 kHz mono, 1024 codes, hop 320 "
                f"(got sampling_rate, codebook_size, audio_channels, hop = {got})"
            )
        if bandwidth not in cfg.target_bandwidths:
            raise ValueError(
                f"this EnCodec model supports bandwidths {cfg.target_bandwidths}, got {bandwidth}"
            )
        self.n_codebooks = ENCODEC_BANDWIDTHS[bandwidth]
        if model.quantizer.get_num_quantizers_for_bandwidth(bandwidth) != self.n_codebooks:
            raise ValueError(f"EnCodec model does not map {bandwidth} kbps to {self.n_codebooks} codebooks")
        for i in range(self.n_codebooks):
            if not torch.any(model.quantizer.layers[i].codebook.embed != 0):
                raise CodecUnavailable(
                    f"EnCodec codebook {i} is all zeros ({self.weights_source}): the model is "
                    "untrained (random init encodes everything to code 0); refusing to use it"
                )
        self.model = model.to("cpu").eval()
        self.bandwidth = bandwidth
        self.params = {"bandwidth": bandwidth}

    def encode(self, wav, sr: int) -> torch.Tensor:
        """wav [C, T] or [T] at sr -> LongTensor [K, ceil(T' / 320)], T' = length at 24 kHz."""
        x = torch.from_numpy(self._mono_at_rate(wav, sr))[None, None]  # [B=1, C=1, T']
        with torch.inference_mode():
            out = self.model.encode(x, bandwidth=self.bandwidth)
        return out.audio_codes[0, 0].clone().long()  # [chunks=1, B, K, F] -> [K, F]

    def decode(self, codes) -> torch.Tensor:
        """LongTensor [K, F] -> FloatTensor [F * 320] at 24 kHz."""
        codes = self.check_codes(codes)
        if codes.shape[1] == 0:
            return torch.zeros(0)
        with torch.inference_mode():
            audio = self.model.decode(codes[None, None], [None]).audio_values  # [B=1, C=1, T]
        return audio[0, 0].float().clone()
