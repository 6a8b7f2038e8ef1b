"""s2s workbench: speech in, speech out, no text in between.

The front door (everything else may change behind it):

    import s2s
    wav = s2s.load_audio("question.wav", 24000)     # validated mono float32 [T]
    s2s.available_codecs()                          # ["encodec_24khz", "world_vq"]
    codec = s2s.load_codec("world_vq")
    pipe = s2s.load_pipeline()                      # the bundled prototype, CUDA if present
    reply = pipe.respond("question.wav")
"""

import importlib

# Imported on first use, so `python -m s2s.serve.pipeline` (etc.) does not import its own module
# twice and `import s2s` stays cheap.
_FRONT_DOOR = {
    "AudioError": "s2s.io.audio",
    "load_audio": "s2s.io.audio",
    "available_codecs": "s2s.codecs.codec",
    "load_codec": "s2s.codecs.codec",
    "load_pipeline": "s2s.serve.pipeline",
}

__all__ = sorted(_FRONT_DOOR)


def __getattr__(name: str):
    if name not in _FRONT_DOOR:
        raise AttributeError(f"module 's2s' has no attribute {name!r}")
    return getattr(importlib.import_module(_FRONT_DOOR[name]), name)
