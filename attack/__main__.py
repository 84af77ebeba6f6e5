"""``python -m attack ...``: see :mod:`attack.cli`."""

import sys

from .cli import main

sys.exit(main())
