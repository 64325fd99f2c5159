"""``python -m fakehw.train``: the same as ``fake-train``."""

import sys

from fakehw.launch import run

sys.exit(run("fake-train"))
