"""Evaluation of speech-to-speech replies: metrics, ASR, latency, reports."""
