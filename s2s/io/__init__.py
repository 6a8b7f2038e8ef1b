"""Files in and out, at the bottom of the data flow: audio (read, validate, resample, save),
the corpus manifest, and model weights shipped in pip packages. Imports nothing else of s2s."""
