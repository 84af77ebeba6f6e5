"""The argument parser of every FastProtect command line: misuse is one line and exit status 2.

argparse's default prints the whole usage block before the error; in batch logs and for people
that hides the one line that matters. ``--help`` still prints the full usage.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, NoReturn


class OneLineArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line, ``error: <message> (see <prog> --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")



def field_values(text: str) -> dict[str, Any]:
    """'field=value,field=value' -> {field: value}: a config override on a command line (benchmarks, figures).
    Values read as JSON where they parse (numbers, true/false), else as text; a malformed item is argparse's error."""
    values: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected field=value[,field=value], got {text!r}")
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return values
