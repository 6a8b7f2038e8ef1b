"""Codecs: waveform <-> 4 codebooks of discrete codes at 75 frames/s (WORLD-VQ, EnCodec 24 kHz).
Start at codec.py (`load_codec`, `python -m s2s.codecs.codec`). Imports only s2s.io."""
