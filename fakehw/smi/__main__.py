"""``python -m fakehw.smi``: the same as ``fake-nvidia-smi``."""

import sys

from fakehw.launch import run

sys.exit(run("fake-nvidia-smi"))
