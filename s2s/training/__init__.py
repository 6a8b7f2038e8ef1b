"""Training: the loop (single process or torchrun) and the answer ranking it watches."""
