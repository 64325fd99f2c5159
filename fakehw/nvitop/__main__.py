"""``python -m fakehw.nvitop``: the same as ``fake-nvitop``."""

import sys

from fakehw.programs.launch import run

sys.exit(run("fake-nvitop"))
