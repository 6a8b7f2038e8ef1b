"""The model and what it hears: config and presets, the delay pattern, the transformer, generation
with a KV cache, checkpoints, the prompt front-ends (Whisper tiny.en encoder or codec codes) and
the cross-attention map. Imports s2s.io and s2s.codecs."""
