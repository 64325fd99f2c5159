"""``python -m fakehw.dcgmi``: the same as ``fake-dcgmi``."""

import sys

from fakehw.programs.launch import run

sys.exit(run("fake-dcgmi"))
