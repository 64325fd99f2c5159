"""``python -m fakehw.nvitop``: the same as ``fake-nvitop``."""

import sys

from fakehw.nvitop.cli import main

sys.exit(main())
