"""How much of the question's meaning each prompt front-end carries: a linear probe.

    python scripts/frontend_probe.py --data data/corpus3/manifest.jsonl [--frontends whisper_tiny_en whisper_base]

Each prompt's features are pooled (mean and standard deviation over time), standardised, and a
logistic regression is trained on the train split's intents; the table gives its accuracy on
every held-out split (eval_oos: the out_of_scope intent, topics never trained on) and the
front-end's median time for the ARCTIC prompt (3 s, one thread). Features are cached beside the
manifest (s2s/data/dataset.py), so a second run only fits. A probe, not the model: the decoder
over the same features may use more or less of what they carry.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s2s.data.dataset import featurise  # noqa: E402
from s2s.io.audio import load_audio  # noqa: E402
from s2s.io.manifest import read_manifest  # noqa: E402
from s2s.models.frontend import load_frontend  # noqa: E402

ARCTIC = Path(__file__).resolve().parents[1] / "assets" / "eval" / "arctic_a0007.wav"


def pooled(feats: dict[str, torch.Tensor], rows: list[dict]) -> np.ndarray:
    return np.stack([torch.cat([feats[r["prompt_audio"]].mean(0), feats[r["prompt_audio"]].std(0)]).numpy()
                     for r in rows])


def probe(manifest: Path, rows: list[dict], name: str) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    fe = load_frontend(name)
    feats = featurise(manifest, rows, fe)
    train = [r for r in rows if r["split"] == "train"]
    scaler = StandardScaler().fit(pooled(feats, train))
    clf = LogisticRegression(max_iter=3000, C=0.5).fit(scaler.transform(pooled(feats, train)), [r["intent"] for r in train])
    out = {"frontend": name, "dim": fe.dim}
    for split in sorted({r["split"] for r in rows} - {"train"}):
        part = [r for r in rows if r["split"] == split]
        pred = clf.predict(scaler.transform(pooled(feats, part)))
        out[split] = float(np.mean(pred == np.array([r["intent"] for r in part])))
    wav = load_audio(str(ARCTIC), 16000)
    times = []
    for _ in range(11):
        t = time.perf_counter()
        fe.features(wav, 16000)
        times.append((time.perf_counter() - t) * 1e3)
    out["ms_3s_prompt"] = float(np.median(times))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="corpus manifest.jsonl")
    p.add_argument("--frontends", nargs="+", default=["whisper_tiny_en", "whisper_base"])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    manifest = Path(args.data)
    rows = read_manifest(manifest)
    results = [probe(manifest, rows, name) for name in args.frontends]
    splits = sorted(k for k in results[0] if k.startswith("eval_"))
    print("| front-end | " + " | ".join(splits) + " | ms, 3 s prompt |")
    print("|---" * (len(splits) + 2) + "|")
    for r in results:
        print(f"| {r['frontend']} ({r['dim']}) | " + " | ".join(f"{100 * r[s]:.1f}%" for s in splits)
              + f" | {r['ms_3s_prompt']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
