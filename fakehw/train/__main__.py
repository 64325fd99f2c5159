"""``python -m fakehw.train``: the same as ``fake-train``."""

import sys

from fakehw.programs.launch import run

sys.exit(run("fake-train"))
