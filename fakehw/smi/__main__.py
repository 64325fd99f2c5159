"""``python -m fakehw.smi``: the same as ``fake-nvidia-smi``."""

import sys

from fakehw.smi.cli import main

sys.exit(main())
