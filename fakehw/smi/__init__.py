"""The look-alike of nvidia-smi: rendering of snapshots, never physics."""
