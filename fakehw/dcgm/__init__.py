"""DCGM as the fake GPUs speak it: its fields (``fields``) and dcgm-exporter's counters
files (``counters``), for the exporter and ``fake-dcgmi``. Knows records, not physics."""
