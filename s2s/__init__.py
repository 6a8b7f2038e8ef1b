"""s2s workbench: speech in, speech out, no text in between."""
