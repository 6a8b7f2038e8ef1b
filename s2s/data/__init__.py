"""Data building: the voices, the synthetic spoken-dialogue corpus, the bundled eval set, and the
training data (manifest -> cached codes and features -> batches)."""
