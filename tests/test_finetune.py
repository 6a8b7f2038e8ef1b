"""The fine-tune (s2s/training/finetune.py), its command (python -m s2s.finetune) and the app's
job queue (s2s/serve/finetune_jobs.py), run for real on a tiny checkpoint and spoken clips: a
checkpoint appears whole with its card or not at all, the base is never modified, two fine-tunes
of one session are refused, Cancel leaves nothing behind."""

import hashlib
import json
import subprocess
import sys
import time

import pytest
import torch

from s2s.data.recordings import read_folder, split_holdout
from s2s.models.checkpoint import save_checkpoint
from s2s.models.model import ModelConfig, S2SModel
from s2s.serve.finetune_jobs import FinetuneJobs, JobError
from s2s.training.finetune import CARD, RECIPE, FinetuneError, check_paths, publish, staging_dir, train_staged
from tests.test_recordings import flite

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from s2s.codecs.codec import load_codec

    codec = load_codec("world_vq")
    torch.manual_seed(0)
    cfg = ModelConfig(n_codebooks=codec.n_codebooks, cardinality=codec.cardinality, d_model=32, n_layer=1,
                      n_head=2, d_ff=32, max_reply_frames=300)
    return save_checkpoint(tmp_path_factory.mktemp("base") / "tiny", S2SModel(cfg), codec.describe())


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("person")
    for topic, text in (("capital_france", "What is the capital of France?"), ("banana_color", "What color is a banana?"),
                        ("spider_legs", "How many legs does a spider have?")):
        flite(d / f"{topic}.wav", text)
    return d


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_base_and_an_existing_folder_are_refused(base, tmp_path):
    with pytest.raises(FinetuneError, match="overlaps the base"):
        check_paths(base, base)
    with pytest.raises(FinetuneError, match="overlaps the base"):
        check_paths(base, base / "inside")
    (tmp_path / "taken").mkdir()
    with pytest.raises(FinetuneError, match="already exists"):
        check_paths(base, tmp_path / "taken")
    with pytest.raises(FinetuneError, match="is not a checkpoint"):
        check_paths(tmp_path, tmp_path / "new")


def test_a_fine_tune_appears_whole_with_its_card(base, clips, tmp_path):
    before = digest(base)
    train, held = split_holdout(read_folder(clips), 0.3)
    steps = []
    staged, card = train_staged(train, held, base, tmp_path / "mine", steps=3, replay=0,
                                on_step=lambda s, n, loss: steps.append(s))
    assert steps == [1, 2, 3] and not (tmp_path / "mine").exists()
    out = publish(staged, tmp_path / "mine", card)
    assert {"config.json", "model.safetensors", CARD} <= set(p.name for p in out.iterdir())
    saved = json.loads((out / CARD).read_text())
    assert (saved["trained_on"], saved["held_out"], saved["steps"]) == (2, 1, 3) and saved["base"] == str(base)
    assert not staging_dir(out).exists() and digest(base) == before
    from safetensors.torch import load_file

    a, b = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(a[k].float(), b[k].float()) for k in a)  # the weights did move


def test_a_fine_tune_that_fails_leaves_nothing(base, clips, tmp_path):
    train, held = split_holdout(read_folder(clips), 0.3)

    def boom(step, total, loss):
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train_staged(train, held, base, tmp_path / "mine", steps=5, replay=0, on_step=boom)
    assert not (tmp_path / "mine").exists() and not staging_dir(tmp_path / "mine").exists()
    assert list(tmp_path.iterdir()) == []


def finetune_cli(*args):
    return subprocess.run([sys.executable, "-m", "s2s.finetune", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_the_command_prints_before_and_after(base, clips, tmp_path):
    out = tmp_path / "mine"
    done = finetune_cli("--data", clips, "--base", base, "--out", out, "--steps", 2, "--eval-set", "none", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads(done.stdout.strip().splitlines()[-1])
    groups = {(g["checkpoint"], g["group"]): g for g in card["before_after"]["summary"]}
    assert set(groups) == {("before", "heldout"), ("after", "heldout")} and groups["after", "heldout"]["n"] == 1
    assert json.loads((out / CARD).read_text())["before_after"] == card["before_after"]
    assert card["recipe"]["replay"] == RECIPE["replay"] > 0  # the default recipe, rehearsal included
    assert "your held-out clips" in (out / "before_after.md").read_text()


def test_the_command_refuses_bad_clips_by_name(base, clips, tmp_path):
    import numpy as np
    import soundfile as sf

    data = tmp_path / "data"
    data.mkdir()
    (data / "capital_france.wav").write_bytes((clips / "capital_france.wav").read_bytes())
    sf.write(data / "banana_color.wav", np.zeros(24000, dtype=np.float32), 16000)
    done = finetune_cli("--data", data, "--base", base, "--out", tmp_path / "mine", "--steps", 2, "--replay", 0)
    assert done.returncode != 0 and "banana_color.wav: silent or too short" in done.stderr
    assert not (tmp_path / "mine").exists() and not staging_dir(tmp_path / "mine").exists()


def wait_for(jobs, job_id, states, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        status = jobs.status(job_id)
        if status["state"] in states:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {jobs.status(job_id)} after {timeout} s")


def test_jobs_queue_one_at_a_time_and_cancel_writes_nothing(base, clips, tmp_path):
    jobs = FinetuneJobs()
    keep = tmp_path / "recordings"
    keep.mkdir()
    first = jobs.submit("alice", data=clips, base=base, out=tmp_path / "long", steps=2000, eval_set="none",
                        replay=0, cleanup=keep)
    with pytest.raises(JobError, match="already queued or running"):
        jobs.submit("alice", data=clips, base=base, out=tmp_path / "again", steps=2)
    second = jobs.submit("bob", data=clips, base=base, out=tmp_path / "bob", steps=2, eval_set="none", replay=0)
    status = wait_for(jobs, first.id, {"running"})
    assert jobs.status(second.id)["state"] == "queued" and jobs.status(second.id)["position"] == 1
    while "training" not in jobs.status(first.id)["text"]:
        time.sleep(0.2)
    assert jobs.cancel(first.id)
    status = wait_for(jobs, first.id, {"cancelled", "failed", "done"})
    assert status["state"] == "cancelled", status
    assert not (tmp_path / "long").exists() and not staging_dir(tmp_path / "long").exists()
    assert not keep.exists()  # the recordings went with the job
    status = wait_for(jobs, second.id, {"done", "failed", "cancelled"})
    assert status["state"] == "done", status
    assert (tmp_path / "bob" / CARD).is_file() and status["card"]["steps"] == 2


def test_a_failed_job_says_why(base, tmp_path):
    jobs = FinetuneJobs()
    job = jobs.submit("carol", data=tmp_path / "nothing-here", base=base, out=tmp_path / "x", steps=2)
    status = wait_for(jobs, job.id, {"done", "failed", "cancelled"})
    assert status["state"] == "failed" and "give a manifest (.jsonl) or a folder" in status["error"]


def test_train_only_prompt_leaves_the_reply_side_as_it_was(base, clips, tmp_path):
    from safetensors.torch import load_file

    train, held = split_holdout(read_folder(clips), 0.3)
    staged, card = train_staged(train, held, base, tmp_path / "p", steps=3, train_only="prompt", replay=0)
    a, b = load_file(base / "model.safetensors"), load_file(staged / "model.safetensors")
    moved = {k for k in a if not torch.equal(a[k].half(), b[k].half())}
    assert moved and all(k.startswith(("encoder.", "prompt_norm.", "feature_proj.")) for k in moved), moved
    assert card["recipe"]["train_only"] == "prompt"


def test_answers_from_two_processes_come_back_in_order(base, clips):
    from eval.before_after import answer_checkpoint
    from s2s.data.recordings import manifest_rows, topics

    rows = [{**r, "id": f"{r['id']}-{k}"} for k in range(3) for r in manifest_rows(read_folder(clips), "heldout", "h")]
    out = answer_checkpoint(base, "before", rows, topics(), workers=2)
    assert [r["id"] for r in out] == [r["id"] for r in rows] and len(rows) == 9
    assert all(r["checkpoint"] == "before" and "answer_correct" in r and not r["error"] for r in out), out[0]
