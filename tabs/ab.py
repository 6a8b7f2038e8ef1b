"""The A/B tab: blind listening. Two checkpoints answer the same prompt (the listener's recording
or upload, or a bundled example); the server flips a coin for which plays as A, records the
served pair under a random id (eval/votes.py, reports/votes.sqlite) and hands the page only
that id; the listener votes A / B / tie, and only then are the names shown. It writes
reports/, so on a public Space it is off unless the owner turns it on (tabs/common.py).

    python app.py                       # then the A/B tab; the votes go to reports/votes.sqlite
    python -m eval.run --checkpoints ckpts/ --votes reports/votes.sqlite   # win rates, ranking
"""

from __future__ import annotations

import secrets
from pathlib import Path

import gradio as gr

from eval.vote_store import VoteStore
from s2s.serve.guard import readable
from tabs.common import MAX_PROMPT_SECONDS, gpu, user_errors

# Both sides use one sampling setting and one seed per pair: the models are all that differs.
SAMPLING = {"temperature": 0.7, "top_k": 50, "top_p": 1.0}
MAX_REPLY_SECONDS = 8.0
VOTE_BUTTONS = {"A": "A is better", "tie": "Tie", "B": "B is better"}


def votes_path(wb) -> Path:
    return Path(wb.reports) / "votes.sqlite"


def _model(wb, choice, which: str) -> str:
    """A dropdown value -> its canonical label (so 'ckpts/x' and 'ckpts/x/' are one model)."""
    if choice is None or not str(choice).strip():
        raise ValueError(f"no checkpoint chosen as {which}; choices: {wb.guard.checkpoints()}")
    return wb.guard.label(wb.guard.resolve(choice, "checkpoint"))


def ab_serve(wb, audio, first, second):
    """Both checkpoints answer the prompt -> (audio A, audio B, pair id, status, vote buttons on)."""
    if audio is None:
        raise gr.Error("No prompt: record, upload or pick an example first.", title="Nothing to answer")
    with user_errors(audio):
        first, second = _model(wb, first, "checkpoint 1"), _model(wb, second, "checkpoint 2")
        if first == second:
            raise ValueError(f"checkpoint 1 and checkpoint 2 are both {first!r}: choose two different "
                             f"checkpoints of {wb.guard.checkpoints()}")
        store = VoteStore(votes_path(wb))  # a damaged database stops here, before any model runs
        prompt = readable(audio, MAX_PROMPT_SECONDS)  # refused before decoding when longer; decoded once
        seed = secrets.randbelow(2**31)
        replies = {}
        for name in (first, second):
            pipe = wb.pipeline(name)
            reply = pipe.respond(prompt, seed=seed, prompt_max_seconds=MAX_PROMPT_SECONDS,
                                 prompt_codes=False, **SAMPLING,
                                 max_seconds=min(MAX_REPLY_SECONDS, pipe.model.cfg.max_reply_frames / pipe.codec.frame_rate))
            replies[name] = (reply.sample_rate, reply.audio)
        pair = store.serve(first, second, prompt=Path(str(audio)).name)
    on = gr.update(interactive=True)
    return (replies[pair.a], replies[pair.b], pair.id,
            "Listen to **A** and **B**, then vote. The names are shown after your vote.", on, on, on)


def ab_vote(wb, pair_id, choice):
    """Store the vote for the pair this session was served -> (pair id cleared, the reveal, buttons off)."""
    if not pair_id:
        raise gr.Error("No pair to vote on: press 'Answer with both' first (a vote needs a pair the server played).",
                       title="Nothing to vote on")
    with user_errors():
        store = VoteStore(votes_path(wb))
        pair = store.vote(pair_id, choice)
        n = store.counts()["votes"]
    verdict = {"A": "A is better", "B": "B is better", "tie": "a tie"}[choice]
    off = gr.update(interactive=False)
    return ("", f"Your vote: **{verdict}**. A was `{pair.a}`, B was `{pair.b}`. "
                f"{n} votes in `{wb.guard.label(votes_path(wb))}`.", off, off, off)


def ab_choices(wb, first, second):
    """After a rescan: the dropdowns offer the checkpoints there are now."""
    choices = wb.guard.checkpoints()
    return gr.update(choices=choices, value=first), gr.update(choices=choices, value=second)


def build(wb, concurrency: int) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The tab's layout and events; returns its two checkpoint dropdowns (Rescan refreshes them)."""
    choices = wb.guard.checkpoints()
    others = [c for c in choices if c != wb.default]
    with gr.Tab("A/B", id="ab", elem_id="ab_tab"):
        gr.Markdown("Blind A/B: two checkpoints answer the same prompt, in an order the server picks at "
                    "random. Listen to both, vote; the names are shown after the vote. Votes are kept in "
                    "`reports/votes.sqlite`; `python -m eval.run --checkpoints ckpts/ --votes "
                    "reports/votes.sqlite` ranks the models from them.")
        with gr.Row():
            first = gr.Dropdown(choices, value=wb.default, label="Checkpoint 1", allow_custom_value=True)
            second = gr.Dropdown(choices, value=others[0] if others else None, label="Checkpoint 2",
                                 allow_custom_value=True)
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Audio(sources=["microphone", "upload"], type="filepath", elem_id="ab_in",
                                  label="Prompt: record or upload (up to 60 s), or pick an example")
                go = gr.Button("Answer with both", variant="primary")
                if wb.examples:
                    gr.Examples([[str(p)] for p, _ in wb.examples], inputs=[prompt], label="Examples",
                                example_labels=[label for _, label in wb.examples], elem_id="ab_examples")
            with gr.Column(scale=3):
                audio_a = gr.Audio(label="A", interactive=False, elem_id="ab_a")
                audio_b = gr.Audio(label="B", interactive=False, elem_id="ab_b")
                with gr.Row():
                    buttons = [gr.Button(text, interactive=False, elem_id=f"ab_vote_{choice}")
                               for choice, text in VOTE_BUTTONS.items()]
                result = gr.Markdown(elem_id="ab_result")
        pair = gr.State("")  # the served pair's id: server-side, per session; the names stay in the database
        go.click(gpu(wb.ab_serve), [prompt, first, second], [audio_a, audio_b, pair, result, *buttons],
                 concurrency_id="generate", concurrency_limit=concurrency, api_visibility="private")
        for button, choice in zip(buttons, VOTE_BUTTONS):
            button.click(lambda pair_id, choice=choice: wb.ab_vote(pair_id, choice), [pair],
                         [pair, result, *buttons], api_visibility="private")
    return first, second
