"""The argument parser of every FastProtect command line: misuse is one line and exit status 2.

argparse's default prints the whole usage block before the error; in batch logs and for people
that hides the one line that matters. ``--help`` still prints the full usage.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line, ``error: <message> (see <prog> --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

