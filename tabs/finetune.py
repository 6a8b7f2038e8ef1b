"""The Fine-tune tab: say the questions in your own words, get a checkpoint that understands you.

The page shows one topic at a time ("Ask in your own words: the capital of France"), records (or
takes an upload of) each clip and checks it at once (s2s/data/recordings.py: too short, silent,
clipped, too long: said at once, re-record). A zip of clips + a CSV of file,topic can be added too.
Start runs `python -m s2s.finetune` on the live checkpoint in a process of its own, one at a time
per server, queued with a position (s2s/serve/finetune_jobs.py), with a progress bar and Cancel;
the result is a new checkpoint under ckpts/ with its card and a before / after table, and one
click opens the A/B tab with the two.

The recordings live in a folder of this browser session (under the system's temporary folder, not
served by the app), deleted when the fine-tune ends or after an hour. On a public Space the tab is
off unless its owner turns it on (tabs/common.py optional_tabs).
"""

from __future__ import annotations

import random
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr

from s2s.data.recordings import RecordingError, check_clip, example_question, read_upload, topics
from s2s.serve.finetune_jobs import FinetuneJobs, JobError
from s2s.training.finetune import RECIPE

DEFAULT_CLIPS = 20
MAX_APP_CLIPS = 60  # per session: a few minutes of speech
KEEP_SECONDS = 3600  # recordings not used by a fine-tune are deleted after an hour
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")
SESSIONS = Path(tempfile.gettempdir()) / "s2s-finetune"
COLUMNS = ["#", "topic", "seconds", "speech seconds"]


def sweep(now: float | None = None, root: Path = SESSIONS, keep_s: float = KEEP_SECONDS, busy=()) -> list[Path]:
    """Delete session folders untouched for keep_s (not those in `busy`, a running fine-tune's)."""
    now = time.time() if now is None else now
    gone = []
    for folder in root.glob("*") if root.is_dir() else []:
        if folder.is_dir() and str(folder) not in busy and now - folder.stat().st_mtime > keep_s:
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder)
    return gone


def new_session(n: int = DEFAULT_CLIPS) -> dict:
    order = list(topics())
    random.Random().shuffle(order)
    return {"id": uuid.uuid4().hex, "folder": "", "order": order, "index": 0, "clips": [], "job": None,
            "wanted": int(n)}


def _folder(state: dict) -> Path:
    if not state["folder"]:  # a new one after each start: the last one goes with its fine-tune
        state["folder"] = str(SESSIONS / f"{state['id']}-{uuid.uuid4().hex[:6]}")
    folder = Path(state["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    folder.touch()  # the sweep counts an hour from the last clip
    return folder


def question(state: dict) -> str:
    topic = state["order"][state["index"] % len(state["order"])]
    done = len(state["clips"])
    more = "" if done < state["wanted"] else " (enough for a fine-tune: add more if you like, or start)"
    return (f"**Clip {done + 1}** of {state['wanted']}{more}: topic `{topic}`. Ask in your own words, "
            f"for example: *\u201c{example_question(topic)}\u201d*")


def clips_table(state: dict) -> list[list]:
    return [[k + 1, c["topic"], c["seconds"], c["speech_seconds"]] for k, c in enumerate(state["clips"])]


def _view(state: dict, message: str):
    return state, question(state), clips_table(state), message


def _add(state: dict, rec) -> None:
    state["clips"].append({"topic": rec.topic, "file": str(rec.path), "seconds": rec.seconds,
                           "speech_seconds": rec.speech_seconds})


def add_clip(wb, audio, state):
    """A recorded (or uploaded) clip of the current topic: checked, kept, next topic."""
    state = state or new_session()
    if not audio:
        return _view(state, "Record a clip first (or upload one).") + (gr.update(),)
    if len(state["clips"]) >= MAX_APP_CLIPS:
        return _view(state, f"At most {MAX_APP_CLIPS} clips per fine-tune: start it, or remove some.") + (None,)
    topic = state["order"][state["index"] % len(state["order"])]
    try:
        rec = check_clip(audio, topic, name=f"clip {len(state['clips']) + 1}")
    except RecordingError as e:
        gr.Warning(str(e))
        return _view(state, f"\u26a0 {e}") + (None,)
    folder = _folder(state)
    kept = folder / f"{topic}_{len(state['clips']) + 1}{Path(audio).suffix.lower() or '.wav'}"
    shutil.copyfile(audio, kept)
    _add(state, check_clip(kept, topic, name=f"clip {len(state['clips']) + 1}"))
    state["index"] += 1
    return _view(state, f"Kept clip {len(state['clips'])} ({rec.seconds:.1f} s, topic `{topic}`).") + (None,)


def skip_topic(wb, state):
    state = state or new_session()
    state["index"] += 1
    return _view(state, "Skipped that topic.")


def remove_last(wb, state):
    state = state or new_session()
    if not state["clips"]:
        return _view(state, "No clips to remove.")
    clip = state["clips"].pop()
    Path(clip["file"]).unlink(missing_ok=True)
    return _view(state, f"Removed the last clip (topic `{clip['topic']}`).")


def add_upload(wb, zip_file, csv_file, state):
    """A zip of clips (+ a CSV of file,topic; without it, clip names are topics)."""
    state = state or new_session()
    if not zip_file:
        return _view(state, "Choose a zip of clips first.")
    target = _folder(state) / f"upload-{uuid.uuid4().hex[:6]}"
    try:
        recs = read_upload(zip_file, csv_file, target)
        if len(state["clips"]) + len(recs) > MAX_APP_CLIPS:
            raise RecordingError(f"{len(recs)} clips would make {len(state['clips']) + len(recs)}: at most "
                                 f"{MAX_APP_CLIPS} per fine-tune")
    except RecordingError as e:
        shutil.rmtree(target, ignore_errors=True)
        gr.Warning(str(e))
        return _view(state, f"\u26a0 {e}")
    for rec in recs:
        _add(state, rec)
    return _view(state, f"Added {len(recs)} clips from the zip.")


def jobs(wb) -> FinetuneJobs:
    if getattr(wb, "finetune_jobs", None) is None:
        wb.finetune_jobs = FinetuneJobs()
    return wb.finetune_jobs


def start(wb, checkpoint, name, steps, holdout, state):
    """Queue the fine-tune of the live checkpoint on this session's clips."""
    state = state or new_session()
    try:
        sweep(busy=busy_folders(wb) + [state["folder"]])
        if len(state["clips"]) < 2:
            raise ValueError(f"{len(state['clips'])} clip(s): record at least 2 ({DEFAULT_CLIPS} are better)")
        name = (name or "").strip() or f"mine-{time.strftime('%Y%m%d-%H%M%S')}"
        if not NAME.match(name):
            raise ValueError(f"checkpoint name {name!r}: letters, digits, '_', '-' and '.', at most 60, "
                             "starting with a letter or digit")
        out = wb.finetune_root / name
        if out.exists():
            raise ValueError(f"a checkpoint named {name!r} exists already: choose another name")
        base = wb.guard.resolve(checkpoint, "checkpoint")
        # the clips kept by this page are the data (each file is named by its topic)
        folder = _folder(state)
        data = folder / "clips"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir()
        try:
            for k, clip in enumerate(state["clips"]):
                shutil.copyfile(clip["file"], data / f"{clip['topic']}_{k + 1}{Path(clip['file']).suffix}")
        except FileNotFoundError:
            shutil.rmtree(folder, ignore_errors=True)
            state.update(clips=[], folder="")
            raise ValueError("your clips were deleted (recordings are kept for an hour): record them again") from None
        job = jobs(wb).submit(state["id"], data=data, base=base, out=out, steps=int(steps), holdout=float(holdout),
                              eval_set=wb.finetune_eval_set, cleanup=folder)
    except (ValueError, JobError) as e:
        raise gr.Error(str(e)) from None
    state = {**state, "job": job.id, "base": wb.guard.label(base), "out": wb.guard.label(out),
             "folder": "", "clips": []}  # the folder goes with the job; a new fine-tune starts afresh
    return state, progress_html(0.0, "queued"), "", gr.update(visible=False)


def progress_html(fraction: float, text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return (f"<div id='ft_progress'><progress value='{fraction:.3f}' max='1' style='width:100%'></progress>"
            f"<p>{text}</p></div>")


def poll(wb, state):
    """Progress of this session's fine-tune; the table and the A/B button when it is done."""
    if not state or not state.get("job"):
        return gr.skip(), gr.skip(), gr.skip()
    status = jobs(wb).status(state["job"])
    if status["state"] == "done" and status.get("card"):
        card = status["card"]
        table = card.get("markdown") or ""
        return (progress_html(1.0, f"done in {card.get('seconds', 0):.0f} s: `{state['out']}`"),
                f"### Before / after\n\nBase `{state['base']}` \u2192 `{state['out']}` "
                f"({card['trained_on']} clips trained on, {card['held_out']} held out, {card['steps']} steps)\n\n{table}",
                gr.update(visible=True))
    text = status["text"] if status["state"] != "failed" else f"failed: {_plain(wb, status['error'])}"
    return progress_html(status.get("fraction", 0.0), text), gr.skip(), gr.update(visible=False)


def _plain(wb, message: str) -> str:
    """An error for the page: folders of the server named by their labels, not their paths."""
    for path in sorted({str(SESSIONS), str(wb.finetune_root.parent)}, key=len, reverse=True):
        message = message.replace(path + "/", "").replace(path, "")
    return message


def cancel(wb, state):
    if state and state.get("job") and jobs(wb).cancel(state["job"]):
        return "Cancelling: the fine-tune stops and writes nothing."
    return "No fine-tune of yours is running."


def open_ab(wb, state):
    if not state or not state.get("out"):
        return gr.skip(), gr.skip(), gr.skip()
    return gr.Tabs(selected="ab"), gr.update(value=state["base"]), gr.update(value=state["out"])


def build(wb, ckpt, tabs, ab_dropdowns) -> list:
    """The tab's layout and events. ckpt: the live checkpoint box (the base); tabs and
    ab_dropdowns: for "Open in A/B" (None when the A/B tab is off). Returns the components
    first_view fills when the page loads."""
    with gr.Tab("Fine-tune", elem_id="finetune_tab"):
        gr.Markdown("Teach the live checkpoint your voice: say each question in your own words (about "
                    f"{DEFAULT_CLIPS} clips), then start. A part of your clips is kept out of the training and "
                    "answered by the base and the tuned model, with the bundled eval set, so you see what "
                    "was gained and what was lost. The new checkpoint is written under `ckpts/`; the live "
                    "one is never changed. Your clips are deleted when the fine-tune ends (or after an hour).")
        state = gr.State(None)
        ask = gr.Markdown(elem_id="ft_question")
        with gr.Row():
            clip = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Your question",
                            elem_id="ft_clip", scale=3)
            with gr.Column(scale=1):
                keep = gr.Button("Keep this clip", variant="primary", elem_id="ft_keep")
                skip = gr.Button("Skip this topic", size="sm")
                drop = gr.Button("Remove the last clip", size="sm")
        message = gr.Markdown(elem_id="ft_message")
        table = gr.Dataframe(headers=COLUMNS, label="Your clips", interactive=False, elem_id="ft_clips")
        with gr.Accordion("Or upload a zip of clips (+ a CSV of file,topic)", open=False):
            with gr.Row():
                zip_file = gr.File(label="clips.zip", file_types=[".zip"], type="filepath", elem_id="ft_zip")
                csv_file = gr.File(label="topics.csv (optional: else each clip's name is its topic)",
                                   file_types=[".csv"], type="filepath", elem_id="ft_csv")
            add_zip = gr.Button("Add the zip's clips", size="sm", elem_id="ft_add_zip")
        with gr.Row():
            name = gr.Textbox(label="New checkpoint name (under ckpts/)", placeholder="mine-DATE-TIME", scale=2,
                              elem_id="ft_name")
            steps = gr.Slider(10, 200, value=RECIPE["steps"], step=10, label="steps", scale=1, elem_id="ft_steps")
            holdout = gr.Slider(0.1, 0.5, value=0.3, step=0.05, label="share held out for before/after", scale=1)
        with gr.Row():
            go = gr.Button("Start fine-tune", variant="primary", elem_id="ft_start")
            stop = gr.Button("Cancel", elem_id="ft_cancel")
        progress = gr.HTML(elem_id="ft_status")
        result = gr.Markdown(elem_id="ft_result")
        to_ab = gr.Button("Open in A/B: base against tuned", visible=False, elem_id="ft_open_ab")
        timer = gr.Timer(1.0)

        view = [state, ask, table, message]
        private = {"api_visibility": "private"}
        gr.on([clip.stop_recording, clip.upload, keep.click], lambda a, s: add_clip(wb, a, s), [clip, state],
              view + [clip], **private)
        skip.click(lambda s: skip_topic(wb, s), state, view, **private)
        drop.click(lambda s: remove_last(wb, s), state, view, **private)
        add_zip.click(lambda z, c, s: add_upload(wb, z, c, s), [zip_file, csv_file, state], view, **private)
        go.click(lambda c, n, st, h, s: start(wb, c, n, st, h, s), [ckpt, name, steps, holdout, state],
                 [state, progress, result, to_ab], **private)
        stop.click(lambda s: cancel(wb, s), state, message, **private)
        timer.tick(lambda s: poll(wb, s), state, [progress, result, to_ab], **private)
        if ab_dropdowns is not None:
            to_ab.click(lambda s: open_ab(wb, s), state, [tabs, *ab_dropdowns], **private)
        else:
            to_ab.click(lambda: "The A/B tab is off on this server.", None, message, **private)
    return view


def first_view(wb):
    """A fresh session and its first question (when the page loads); old recordings swept."""
    sweep(busy=busy_folders(wb))
    return _view(new_session(), "")


def busy_folders(wb) -> list[str]:
    """Recording folders a queued or running fine-tune still needs."""
    if getattr(wb, "finetune_jobs", None) is None:
        return []
    return [j.cleanup for j in wb.finetune_jobs.jobs.values() if j.state in ("queued", "running") and j.cleanup]
