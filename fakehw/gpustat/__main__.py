"""``python -m fakehw.gpustat``: the same as ``fake-gpustat``."""

import sys

from fakehw.gpustat.cli import main

sys.exit(main())
