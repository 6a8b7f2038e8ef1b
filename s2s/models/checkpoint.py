"""Checkpoints: a directory with config.json (model config, codec, prompt front-end, pattern,
special ids, training summary) and model.safetensors. Saved atomically; loaded without pickle.

    save_checkpoint("ckpts/run1", model, codec={"name": "world_vq", "params": {...}},
                    frontend={"name": "whisper_tiny_en", "params": {"sha256": ...}})
    model, meta = load_checkpoint("ckpts/run1", device="cpu", codec=codec, frontend=fe)  # refuses mismatches

A config without a "frontend" section (written before front-ends existed) hears codes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from s2s.models import patterns
from s2s.models.frontend import check_frontend
from s2s.models.model import ModelConfig, S2SModel

FORMAT = "s2s-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be used, with the reason and the path."""


def save_checkpoint(
    path: str | Path,
    model: S2SModel,
    codec: dict,
    training: dict | None = None,
    dtype: torch.dtype | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    frontend: dict | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write config.json + model.safetensors into a temporary sibling, then rename into place.

    codec: {"name": ..., "params": {...}} (Codec.describe()). dtype: e.g. torch.float16 to ship
    a small checkpoint (loading casts back to float32). extra_tensors: e.g. optimiser state,
    stored in a second safetensors file `extra.safetensors`. frontend: the description of the
    model's prompt front-end (s2s.models.frontend.model_frontend); may be left out for "codes" only.
    extra_files: more files of the checkpoint ({name: content}, e.g. meaning_topics.safetensors).
    """
    path = Path(path)
    if not isinstance(codec, dict) or "name" not in codec:
        raise ValueError(f"codec must be a dict with 'name' and 'params', got {codec!r}")
    cfg = model.cfg
    frontend = frontend or {"name": "codes", "params": {}}
    if frontend.get("name") != cfg.frontend:
        raise ValueError(f"the model hears front-end {cfg.frontend!r}; pass its description "
                         f"(s2s.models.frontend.model_frontend), got {frontend!r}")
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": cfg.to_dict(),
        "codec": {"name": codec["name"], "params": codec.get("params", {})},
        "frontend": {"name": frontend["name"], "params": frontend.get("params", {})},
        "pattern": {"name": "delay", "delays": list(range(cfg.n_codebooks))},
        "special_ids": patterns.special_ids(cfg.cardinality),
        "dtype": str(dtype or next(model.parameters()).dtype).replace("torch.", ""),
        "training": training or {},
    }
    state = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        if extra_tensors:
            extra = {k: v.detach().cpu().contiguous() for k, v in extra_tensors.items()}
            save_file(extra, str(tmp / "extra.safetensors"))
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def replace_dir(new: Path, target: Path) -> None:
    """Put directory `new` at `target`; an existing target is swapped out, then removed."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_config(path: str | Path) -> dict:
    """config.json of a checkpoint directory, validated; CheckpointError says what is wrong."""
    path = Path(path)
    if not path.is_dir():
        pickles = path.suffix in PICKLE_SUFFIXES
        hint = " (pickled checkpoints are refused: convert to safetensors)" if pickles else ""
        raise CheckpointError(f"checkpoint {str(path)!r} is not a directory{hint}")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no {CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{str(config_path)!r} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{str(config_path)!r} is not an s2s checkpoint config (format != {FORMAT!r})")
    for key in ("model", "codec"):
        if key not in config:
            raise CheckpointError(f"{str(config_path)!r} lacks the {key!r} section")
    return config


def check_codec(config: dict, codec: dict, where: str = "checkpoint") -> None:
    """Refuse to pair a checkpoint with a codec other than the one it was trained with."""
    want = config["codec"]
    if want["name"] != codec["name"] or want.get("params", {}) != codec.get("params", {}):
        raise CheckpointError(
            f"{where} was trained with codec {want['name']} {want.get('params', {})}, "
            f"not {codec['name']} {codec.get('params', {})}; load it with its own codec"
        )


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", codec: dict | None = None,
    frontend: dict | None = None,
) -> tuple[S2SModel, dict]:
    """Rebuild the model from config.json and load model.safetensors -> (model in eval mode, config).

    codec / frontend: the descriptions of the codec and prompt front-end the caller means to
    use; a mismatch is refused.
    """
    path = Path(path)
    config = read_config(path)
    if codec is not None:
        check_codec(config, codec, where=f"checkpoint {str(path)!r}")
    if frontend is not None:
        check_frontend(config, frontend, where=f"checkpoint {str(path)!r}")
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = f" (found {pickles}: pickled weights are refused, use safetensors)" if pickles else ""
        raise CheckpointError(f"checkpoint {str(path)!r} has no {WEIGHTS_FILE}{hint}")
    try:
        cfg = ModelConfig.from_dict(config["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} has a bad model config: {e}") from None
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{str(weights)!r} is not a readable safetensors file: {e}") from None
    model = S2SModel(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {names[:5]}{' ...' if len(names) > 5 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if names
        )
        raise CheckpointError(f"weights in {str(path)!r} do not match its config.json ({details})")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval(), config


def load_extra(path: str | Path) -> dict[str, torch.Tensor]:
    """The extra tensors (e.g. optimiser state) saved beside the weights, or {}."""
    extra = Path(path) / "extra.safetensors"
    return load_file(str(extra)) if extra.is_file() else {}
