"""``python -m fakehw.train``: the same as ``fake-train``."""

import sys

from fakehw.train.cli import main

sys.exit(main())
