"""``python -m fakehw``: the same as the ``fakehw`` command."""

import sys

from fakehw.programs.launch import run

sys.exit(run("fakehw"))
