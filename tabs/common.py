"""What every tab uses: bad input shown as a message in the page, the prompt limit, ZeroGPU."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from s2s.codecs.codec import CodecUnavailable

MAX_PROMPT_SECONDS = 60.0
SKIP = gr.skip


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
