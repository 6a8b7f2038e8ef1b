"""Whisper ASR for scoring spoken replies: the public name of s2s/asr/whisper.py (training's spoken
check uses it too, and s2s does not import eval).

    from eval.asr import load_asr
    asr = load_asr()                  # best backend available offline; see s2s/asr/whisper.py for specs
    text = asr.transcribe(wav, sr)
"""

from s2s.asr.whisper import ASRError, load_asr

__all__ = ["ASRError", "load_asr"]
