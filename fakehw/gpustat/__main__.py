"""``python -m fakehw.gpustat``: the same as ``fake-gpustat``."""

import sys

from fakehw.launch import run

sys.exit(run("fake-gpustat"))
