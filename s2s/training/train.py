"""Train (or fine-tune) the speech-to-speech model on a corpus manifest.

    python -m s2s.training.train --preset 10m --data data/corpus/manifest.jsonl --codec world_vq --out ckpts/NAME
    python -m s2s.training.train ... --resume                         # continue ckpts/NAME at its step
    python -m s2s.training.train ... --init ckpts/base --filter accent=en-gb --lr 1e-4 --out ckpts/gb
    torchrun --nproc_per_node 2 -m s2s.training.train ...             # DistributedDataParallel (gloo on CPU)

The corpus is tokenised once by the codec and the prompts heard once by the prompt front-end
(--frontend; both cached, s2s/data/dataset.py). AdamW with linear
warm-up then cosine decay, gradient clipping, bf16 autocast on CUDA. Every --eval-every steps
a validation loss on the non-train splits; every --check-every steps a spoken check: replies to
a few eval prompts, transcribed by the offline Whisper, scored by WER and answer accuracy.
Checkpoints (atomic; optimiser state in extra.safetensors) every --save-every steps and at the
end; OUT/train_log.jsonl holds every logged loss and check.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from s2s.asr.wer import closest_answer, wer
from s2s.asr.whisper import load_asr
from s2s.codecs.codec import CodecUnavailable, load_codec
from s2s.data.dataset import (
    Batch,
    Pair,
    augment_features,
    augment_prompt,
    collate,
    corrupt_reply_input,
    crop_replies,
    epoch_batches,
    featurise,
    make_pairs,
    select_rows,
    tokenise,
)
from s2s.io.manifest import audio_path, read_manifest
from s2s.models import patterns
from s2s.models.checkpoint import check_codec, load_checkpoint, load_extra, read_config, save_checkpoint
from s2s.models.frontend import FrontendError, check_frontend, model_frontend
from s2s.models.generate import autocast
from s2s.models.meaning import TOPICS_FILE, topics_bytes
from s2s.models.model import S2SModel, preset_config
from s2s.serve.pipeline import Pipeline
from s2s.training.flags import codec_options, parse_args
from s2s.training.ranking import answer_ranking_accuracy
from s2s.training.teacher import DIM as TEACHER_DIM
from s2s.training.teacher import teacher_dir, teacher_embeddings, teacher_loss

LOG_FILE = "train_log.jsonl"
PROMPT_SIDE = ("feature_proj.", "encoder.", "prompt_norm.")  # what --train-only prompt trains


def copy_if_present(src: Path, dst: Path) -> None:
    """The training log travels with checkpoints: copy it where it exists."""
    if src.is_file():
        dst.write_bytes(src.read_bytes())


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    floor = args.lr * args.min_lr_ratio
    return floor + (args.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def loss_fn(model, batch, cardinality: int, onset_weight: float = 1.0, onset_steps: int = 0,
            teacher_weight: float = 0.0, teacher_tau: float = 0.05) -> torch.Tensor:
    """Mean cross-entropy over the reply's tokens; the first `onset_steps` steps weigh
    `onset_weight` times as much (the answer is decided there; later steps follow the reply).
    teacher_weight > 0 (and batch.teacher): plus that times the text teacher's loss on the
    pooled prompt memory (s2s/training/teacher.py)."""
    use_teacher = teacher_weight > 0 and batch.teacher is not None
    out = model(reply_in=batch.reply_in, **batch.model_inputs(), with_meaning=use_teacher)
    logits = out[0] if use_teacher else out  # [B, K, T, V]
    pad = patterns.special_ids(cardinality)["pad"]
    if onset_weight == 1.0 or onset_steps <= 0:
        loss = F.cross_entropy(logits.flatten(0, 2).float(), batch.target.flatten(), ignore_index=pad)
    else:
        nll = F.cross_entropy(logits.flatten(0, 2).float(), batch.target.flatten(), ignore_index=pad, reduction="none")
        t = batch.target.shape[-1]
        step_weight = torch.ones(t, device=nll.device)
        step_weight[:onset_steps] = onset_weight
        weight = step_weight.expand_as(batch.target).flatten() * (batch.target.flatten() != pad)
        loss = (nll * weight).sum() / weight.sum()
    return loss + teacher_weight * teacher_loss(out[1], batch.teacher, teacher_tau) if use_teacher else loss


def make_optimizer(model, args) -> torch.optim.AdamW:
    # No decay on norms, biases and the code embeddings (rows of rarely seen codes would shrink).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or name == "embedding.weight" else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), fused=True)


def optimizer_tensors(opt: torch.optim.AdamW, step: int) -> dict[str, torch.Tensor]:
    """AdamW state as flat tensors for safetensors (no pickle)."""
    out = {"train.step": torch.tensor(step)}
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"opt.{i}.{key}"] = torch.as_tensor(value)
    return out


def restore_optimizer(opt: torch.optim.AdamW, tensors: dict[str, torch.Tensor]) -> int:
    state_dict = opt.state_dict()
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, i, key = name.split(".", 2)
            state.setdefault(int(i), {})[key] = value
    state_dict["state"] = state
    opt.load_state_dict(state_dict)
    return int(tensors["train.step"])


class Trainer:
    def __init__(self, args, codec=None):
        self.args = args
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo")
        if args.device == "cuda" or (args.device is None and torch.cuda.is_available()):
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        else:
            self.device = torch.device("cpu")
        self.out = Path(args.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.codec = codec or load_codec(args.codec, **codec_options(args.codec_option))
        self.rows, self.val_rows = self.load_rows()
        self.teacher_folder = teacher_dir() if getattr(args, "teacher", "none") != "none" else None
        if self.teacher_folder:
            silent = [r["id"] for r in self.rows + self.val_rows if not str(r.get("prompt_text") or "").strip()]
            if silent:
                raise ValueError(f"--teacher {args.teacher} needs every prompt's text; {len(silent)} row(s) have none "
                                 f"in {str(args.data)!r}, e.g. {silent[:3]}")
        self.frontend_name = self.checkpoint_frontend() or args.frontend
        self.frontend, self.frontend_desc = model_frontend(self.frontend_name)
        self.topics = None  # meaning_topics.safetensors: the start checkpoint's, or made by run() with the teacher
        self.model, self.config, self.start_step, extra = self.build_model()
        if getattr(args, "train_only", "all") == "prompt":
            for name, p in self.model.named_parameters():
                p.requires_grad_(name.startswith(PROMPT_SIDE))
        self.opt = make_optimizer(self.model, args)
        if extra:
            self.start_step = restore_optimizer(self.opt, extra)
        self.ddp = self.model
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model)
        self.asr = None
        self.on_step = None  # called with (step, total steps, loss) after every step (a fine-tune's progress)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def load_rows(self) -> tuple[list[dict], list[dict]]:
        """Manifest rows for training and validation; every data error is raised here, before training."""
        data = Path(self.args.data)
        rows = select_rows(read_manifest(data), self.args.filter)
        unanswered = [r["id"] for r in rows if not str(r["response_text"]).strip()]
        if unanswered:
            raise ValueError(f"{len(unanswered)} row(s) of {str(data)!r} have no answer (empty response_text), "
                             f"e.g. {unanswered[:3]}: every intent needs its answer's text")
        train = [r for r in rows if r["split"] == "train"]
        if not train:
            raise ValueError(f"no training pairs in {str(data)!r} (filters: {self.args.filter or 'none'})")
        val = []  # up to 32 of each held-out split (e.g. eval_voices, eval_phrasings)
        for split in dict.fromkeys(r["split"] for r in rows if r["split"] != "train"):
            val += [r for r in rows if r["split"] == split][:32]
        return train, val

    def checkpoint_frontend(self) -> str | None:
        """The front-end of the checkpoint this run starts from (--init / --resume), if any."""
        start = self.out if self.args.resume else self.args.init
        if start is None or not (Path(start) / "config.json").is_file():
            return None
        return read_config(start)["model"].get("frontend", "codes")

    def build_model(self):
        args, codec = self.args, self.codec
        start = args.init
        if args.resume:
            if not (self.out / "config.json").is_file():
                raise ValueError(f"--resume: no checkpoint in {str(self.out)!r} to continue")
            start = self.out
        if start is not None:
            check_codec(read_config(start), codec.describe(), where=f"checkpoint {str(start)!r}")
            check_frontend(read_config(start), self.frontend_desc, where=f"checkpoint {str(start)!r}")
            model, config = load_checkpoint(start, device=self.device, codec=codec.describe())
            if (Path(start) / TOPICS_FILE).is_file():  # a fine-tune keeps its base's topic centroids
                self.topics = (Path(start) / TOPICS_FILE).read_bytes()
            if self.teacher_folder and model.cfg.meaning_dim != TEACHER_DIM:
                raise ValueError(f"--teacher {args.teacher}: checkpoint {str(start)!r} has no meaning head "
                                 f"(meaning_dim {model.cfg.meaning_dim}); train it from scratch with --teacher")
            model.train()
            extra = load_extra(start) if args.resume else {}
            if args.resume and self.main and not self.live_log.is_file():
                copy_if_present(self.out / LOG_FILE, self.live_log)
            return model, config, 0, extra
        cfg = preset_config(args.preset, n_codebooks=codec.n_codebooks, cardinality=codec.cardinality,
                            dropout=args.dropout, frontend=self.frontend_name, feature_dim=self.frontend.dim,
                            meaning_dim=TEACHER_DIM if self.teacher_folder else 0)
        torch.manual_seed(args.seed)
        return S2SModel(cfg).to(self.device).train(), {}, 0, {}

    def summary(self, step: int, extra: dict) -> dict:
        history = dict(self.config.get("training", {})) if self.args.init else {}
        return {
            "steps": step, "preset": self.model.cfg.preset, "data": str(self.args.data),
            "filters": self.args.filter, "pairs": len(self.rows), "lr": self.args.lr,
            "world_size": self.world, "log": LOG_FILE, "init": self.args.init,
            "init_training": history or None, "args": vars(self.args), **extra,
        }

    @property
    def live_log(self) -> Path:
        """Appended as training goes (OUT.train_log.jsonl); copied into OUT/ at every save,
        because a save replaces the checkpoint directory whole."""
        return self.out.parent / f"{self.out.name}.{LOG_FILE}"

    def log(self, record: dict) -> None:
        if self.main:
            with open(self.live_log, "a") as f:
                f.write(json.dumps(record) + "\n")

    def save(self, step: int, extra: dict) -> None:
        if not self.main:
            return
        save_checkpoint(self.out, self.model, self.codec.describe(), training=self.summary(step, extra),
                        extra_tensors=optimizer_tensors(self.opt, step), frontend=self.frontend_desc,
                        extra_files={TOPICS_FILE: self.topics} if self.topics else None)
        copy_if_present(self.live_log, self.out / LOG_FILE)

    @torch.no_grad()
    def validation_loss(self, pairs, max_steps: int | None = None) -> float:
        """Mean loss over the validation pairs; max_steps: only the steps trained so far (onset phase)."""
        self.model.eval()
        losses = []
        if max_steps:
            pairs = crop_replies(pairs, max_steps)
        for idx in epoch_batches(pairs, 0, self.args.batch_frames, seed=0):
            batch = collate([pairs[i] for i in idx], self.model.cfg.cardinality, max_steps).to(self.device)
            with autocast(self.device):
                losses.append(float(loss_fn(self.model, batch, self.model.cfg.cardinality)) * len(idx))
        self.model.train()
        return sum(losses) / len(pairs)

    def training_batch(self, batch_pairs: list[Pair], step: int, max_steps: int | None = None) -> Batch:
        """The step's batch, prompts perturbed (--stretch, --mask-spans) and reply inputs noised
        (--reply-noise); the random draws depend only on (seed, step): a resumed run replays them."""
        args = self.args
        card = self.model.cfg.cardinality
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        if args.stretch > 0 or args.mask_spans > 0:
            batch_pairs = [replace(
                p,
                prompt=None if p.prompt is None else augment_prompt(p.prompt, card, args.stretch, args.mask_spans, gen),
                features=None if p.features is None else augment_features(p.features, args.stretch, args.mask_spans, gen),
            ) for p in batch_pairs]
        batch = collate(batch_pairs, card, max_steps)
        return corrupt_reply_input(batch, card, args.reply_noise, gen) if args.reply_noise > 0 else batch

    def phases(self, pairs: list[Pair]) -> list[tuple[int, int, list[Pair], int | None]]:
        """(first step, end step, pairs, steps kept per reply): the onset phase (--crop-frames,
        until --crop-until) then full replies."""
        args = self.args
        crop_until = min(args.crop_until, args.steps) if args.crop_frames > 0 else 0
        phases = [(0, crop_until, crop_replies(pairs, args.crop_frames), args.crop_frames)] if crop_until else []
        return phases + [(crop_until, args.steps, pairs, None)]

    def phase_batches(self, pairs: list[Pair], begin: int, step: int, end: int):
        """Batch indices for the steps [step, end) of a phase that starts at `begin`. Epoch e of a
        phase depends only on (seed, e): a resumed run continues mid-epoch, bit for bit."""
        args = self.args
        per_rank = len(epoch_batches(pairs, 0, args.batch_frames, args.seed)) // self.world
        if per_rank == 0:
            raise ValueError(f"too few batches for {self.world} processes: lower --batch-frames")
        local = max(step, begin) - begin
        while begin + local < end:
            batches = epoch_batches(pairs, local // per_rank, args.batch_frames, args.seed)[: per_rank * self.world]
            for idx in batches[self.rank :: self.world][local % per_rank :]:
                if begin + local >= end:
                    return
                yield idx
                local += 1

    def ranking(self, pairs: list[Pair], answers: dict, max_steps: int | None = None) -> dict:
        """Answer-ranking accuracy (s2s/training/ranking.py) per split: rank_<split>. rank_train (on a few
        training pairs) against the held-out splits tells not listening from not generalising.
        max_steps: the steps trained so far (the onset phase): the ranking scores no more."""
        if not self.args.rank_steps or len(answers) < 2:
            return {}
        steps = min(self.args.rank_steps, max_steps or self.args.rank_steps)
        out = {}
        for split in dict.fromkeys(p.split for p in pairs):
            chosen = [p for p in pairs if p.split == split and p.intent in answers]
            if chosen:
                out[f"rank_{split}"] = answer_ranking_accuracy(self.model, chosen, answers, steps)
        return out

    def spoken_check(self) -> dict:
        """Replies to a few eval prompts -> Whisper WER and answer accuracy."""
        data = Path(self.args.check_data or self.args.data)
        all_rows = read_manifest(data)
        rows = [r for r in all_rows if r["split"] != "train"][: self.args.check_n]
        if not rows:
            return {}
        self.asr = self.asr or load_asr()
        answers = {r["intent"]: r["response_text"] for r in all_rows}
        self.model.eval()
        pipe = Pipeline(self.model, self.codec, {"codec": self.codec.describe()}, self.device)
        hyps = []
        for r in rows:
            reply = pipe.respond(str(audio_path(data, r["prompt_audio"])), seed=0)
            hyps.append(self.asr.transcribe(reply.audio, reply.sample_rate) if len(reply.audio) else "")
        self.model.train()
        refs = [r["response_text"] for r in rows]
        right = sum(closest_answer(h, answers) == r["intent"] for h, r in zip(hyps, rows))
        return {"check_wer": wer(hyps, refs).wer, "check_answer_accuracy": right / len(rows),
                "check_n": len(rows), "check_example": hyps[0]}

    def run(self) -> dict:
        args = self.args
        cfg = self.model.cfg
        keys = ("prompt_audio", "response_audio") if cfg.uses_codes else ("response_audio",)
        rows = self.rows + self.val_rows
        if self.main:
            codes = tokenise(args.data, rows, self.codec, workers=args.workers, keys=keys)
            feats = featurise(args.data, rows, self.frontend) if cfg.uses_features else None
        if self.world > 1:
            dist.barrier()
        if not self.main:
            codes = tokenise(args.data, rows, self.codec, workers=1, keys=keys)
            feats = featurise(args.data, rows, self.frontend) if cfg.uses_features else None
        teacher = None
        if self.teacher_folder:
            teacher = teacher_embeddings([r["prompt_text"] for r in rows], self.teacher_folder)
            self.topics = topics_bytes(teacher, self.rows)
        pairs = make_pairs(self.rows, codes, feats, use_codes=cfg.uses_codes, teacher=teacher)
        val_pairs = make_pairs(self.val_rows, codes, feats, use_codes=cfg.uses_codes, teacher=teacher)
        answers = {p.intent: p.reply for p in pairs if p.intent}
        card = self.model.cfg.cardinality
        step, last = self.start_step, {}
        stop = args.steps if args.stop_after is None else min(args.steps, step + args.stop_after)
        bar = tqdm(total=args.steps, initial=step, desc="training", disable=not self.main)
        started = time.time()
        for begin, end, phase_pairs, max_steps in self.phases(pairs):
            for idx in self.phase_batches(phase_pairs, begin, step, min(end, stop)):
                for group in self.opt.param_groups:
                    group["lr"] = lr_at(step, args)
                batch = self.training_batch([phase_pairs[i] for i in idx], step, max_steps).to(self.device)
                with autocast(self.device):
                    loss = loss_fn(self.ddp, batch, card, args.onset_weight, args.onset_steps,
                                   args.teacher_weight if teacher else 0.0, args.teacher_tau)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.clip)
                self.opt.step()
                step += 1
                bar.update()
                last["loss"] = loss.item()
                if self.on_step is not None:
                    self.on_step(step, args.steps, last["loss"])
                if step % args.log_every == 0 or step == stop:
                    bar.set_postfix(loss=f"{last['loss']:.3f}")
                    self.log({"step": step, "loss": last["loss"], "lr": lr_at(step - 1, args),
                              "grad_norm": float(grad_norm), "time": round(time.time() - started, 1)})
                if val_pairs and args.eval_every and (step % args.eval_every == 0 or step == stop) and self.main:
                    last["val_loss"] = self.validation_loss(val_pairs, max_steps)
                    last.update(self.ranking(val_pairs + pairs[:32], answers, max_steps))
                    self.log({"step": step, "val_loss": last["val_loss"],
                              **{k: v for k, v in last.items() if k.startswith("rank")}})
                if args.check_every and step % args.check_every == 0 and self.main:
                    last.update(self.spoken_check())
                    self.log({"step": step, **{k: v for k, v in last.items() if k.startswith("check")}})
                if (args.save_every and step % args.save_every == 0) or step == stop:
                    self.save(step, {**last, "wall_s": round(time.time() - started, 1)})
        bar.close()
        if self.main and args.export:
            export(self.out, args.export)
        if self.world > 1:
            dist.barrier()
        return {"step": step, **last}


def export(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """A shippable copy of a checkpoint: weights in fp16, no optimiser state, the log kept."""
    model, config = load_checkpoint(src)
    out = save_checkpoint(dst, model, config["codec"], training=config.get("training"), dtype=dtype,
                          frontend=config.get("frontend"))
    copy_if_present(Path(src) / LOG_FILE, out / LOG_FILE)
    copy_if_present(Path(src) / TOPICS_FILE, out / TOPICS_FILE)
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = Trainer(args).run()
    except (ValueError, CodecUnavailable, FrontendError) as e:
        raise SystemExit(f"error: {e}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
