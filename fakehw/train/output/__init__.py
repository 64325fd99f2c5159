"""What a run leaves on disk under ``fake-train --output-dir DIR``: TensorBoard event
files, one log file per rank, checkpoint directories (weights as sparse files), the
metrics JSONL and ``run.json``, each where the style's framework puts it.

``rundir`` builds the recorders for one run from its framework's ``layouts``;
``files`` writes files (sparse where they are weights), ``tensorboard`` the event
files, ``ranklogs`` the per-rank logs, ``checkpoints`` the checkpoint directories and
their retention, ``runfile`` the run's summary. None of it prints: what the console
says about it comes from the style.
"""
