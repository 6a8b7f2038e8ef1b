"""What every tab uses: bad input shown as a message in the page, the prompt limit, ZeroGPU, and
which optional tabs a public Space shows.

    optional_tabs(None)                  # locally: all of OPTIONAL_TABS; on a Space: none
    optional_tabs("evaluate,ab")         # the owner's choice (app.py --enable-tabs, S2S_ENABLE_TABS)
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from s2s.codecs.codec import CodecUnavailable

MAX_PROMPT_SECONDS = 60.0
SKIP = gr.skip
# Tabs that write files or queue long jobs: Evaluate (eval.run, reports/app-eval-*), A/B (two
# models per prompt, reports/votes.sqlite) and Fine-tune (a training process, ckpts/NAME). A public Space is the internet: they are off there
# (no tab, no API endpoint) unless its owner turns them on.
OPTIONAL_TABS = ("ab", "evaluate", "finetune")
OPTIONAL_TAB_NAMES = {"ab": "A/B", "evaluate": "Evaluate", "finetune": "Fine-tune"}
ENABLE_TABS_ENV = "S2S_ENABLE_TABS"
SPACE_ENV = "SPACE_ID"  # set by Hugging Face on every Space


def optional_tabs(spec: str | None = None, environ=None) -> tuple[str, ...]:
    """The optional tabs to build. spec (app.py --enable-tabs), else the S2S_ENABLE_TABS
    environment variable: comma-separated names of OPTIONAL_TABS, "all" or "none". Neither
    given: all of them locally, none on a Hugging Face Space (SPACE_ID set)."""
    environ = os.environ if environ is None else environ
    if spec is None:
        spec = environ.get(ENABLE_TABS_ENV)
    if spec is None:
        return () if environ.get(SPACE_ENV) else OPTIONAL_TABS
    names = [n.strip().lower() for n in str(spec).split(",") if n.strip()]
    if names in (["all"], ["none"]):
        return OPTIONAL_TABS if names == ["all"] else ()
    bad = [n for n in names if n not in OPTIONAL_TABS]
    if bad:
        raise ValueError(f"unknown tab {bad[0]!r} in {spec!r} ({ENABLE_TABS_ENV} / --enable-tabs): "
                         f"choose from {', '.join(OPTIONAL_TABS)}, or all, or none")
    return tuple(n for n in OPTIONAL_TABS if n in names)


def gpu(fn):
    """spaces.GPU on a Hugging Face ZeroGPU Space; the function unchanged anywhere else."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(fn)


@contextmanager
def user_errors(upload=None):
    """Bad input (AudioError, CheckpointError, other ValueErrors, missing files or codecs) -> a
    message in the page, naming an upload by its file name only; the server goes on serving."""
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, FileNotFoundError, CodecUnavailable) as e:
        message = str(e).replace(str(upload), Path(upload).name) if isinstance(upload, str) else str(e)
        raise gr.Error(message, title=type(e).__name__) from None
