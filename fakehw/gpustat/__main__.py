"""``python -m fakehw.gpustat``: the same as ``fake-gpustat``."""

import sys

from fakehw.programs.launch import run

sys.exit(run("fake-gpustat"))
