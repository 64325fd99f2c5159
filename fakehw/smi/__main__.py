"""``python -m fakehw.smi``: the same as ``fake-nvidia-smi``."""

import sys

from fakehw.programs.launch import run

sys.exit(run("fake-nvidia-smi"))
