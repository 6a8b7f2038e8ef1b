"""The bundled eval set's example prompts: one per intent, never outside the folder."""

import json

import numpy as np
import soundfile as sf

from s2s.data.eval_bundle import example_prompts


def test_example_prompts_one_per_intent_inside_the_folder(tmp_path):
    d = tmp_path / "eval"
    (d / "prompts").mkdir(parents=True)
    rows = []
    for intent in ("greet", "bye", "time"):
        for voice in ("v1", "v2"):
            sf.write(d / "prompts" / f"{intent}-{voice}.wav", np.zeros(1600), 16000)
            rows.append({"id": f"{intent}-{voice}", "intent": intent, "prompt_audio": f"prompts/{intent}-{voice}.wav",
                         "prompt_text": f"say {intent}", "response_audio": f"answers/{intent}.wav",
                         "response_text": intent})
    rows.insert(0, {"id": "x", "intent": "evil", "prompt_audio": "../../outside.wav",
                    "response_audio": "answers/evil.wav", "response_text": "evil"})
    (tmp_path / "outside.wav").write_bytes(b"")
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = example_prompts(d, n=2)
    assert [(p.name, label) for p, label in got] == [("greet-v1.wav", "say greet"), ("bye-v1.wav", "say bye")]
    assert example_prompts(tmp_path / "missing") == []
    (d / "manifest.jsonl").write_text("not json\n")  # a broken manifest: no examples, the app still starts
    assert example_prompts(d) == []
