"""s2s workbench: speech in, speech out, no text in between.

The front door (everything else may change behind it):

    import s2s
    wav = s2s.load_audio("question.wav", 24000)     # validated mono float32 [T]
    s2s.available_codecs()                          # ["encodec_24khz", "world_vq"]
    codec = s2s.load_codec("world_vq")
    pipe = s2s.load_pipeline()                      # the bundled prototype, CUDA if present
    reply = pipe.respond("question.wav")
"""

from s2s.audio import AudioError, load_audio
from s2s.codec import available_codecs, load_codec
from s2s.pipeline import load_pipeline

__all__ = ["AudioError", "available_codecs", "load_audio", "load_codec", "load_pipeline"]
