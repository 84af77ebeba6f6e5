"""``python -m fastprotect``: see :mod:`fastprotect.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
