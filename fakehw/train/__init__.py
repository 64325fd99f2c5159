"""fake-train: an LLM training run that drives the shared GPU model."""
