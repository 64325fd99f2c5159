"""``python -m fakehw``: the same as the ``fakehw`` command."""

import sys

from fakehw.cli import main

sys.exit(main())
