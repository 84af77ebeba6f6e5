"""Where the bundled mixture checkpoint lives, in a checkout and in an installed package.

In the repository (and an editable install) it is ``checkpoints/taef2-mixture`` beside the
``fastprotect`` folder. ``pip install .`` ships the same folder inside the package as
``fastprotect/checkpoints/taef2-mixture`` (``pyproject.toml`` maps the repository's
``checkpoints/`` onto the package ``fastprotect.checkpoints``), so the default works there too.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_CHECKPOINT_NAME = "taef2-mixture"

_PACKAGE = Path(__file__).resolve().parent
REPO_CHECKPOINTS = _PACKAGE.parent / "checkpoints"  # a checkout or an editable install
PACKAGED_CHECKPOINTS = _PACKAGE / "checkpoints"  # a regular (wheel) install


def bundled_checkpoint(name: str = BUNDLED_CHECKPOINT_NAME) -> Path:
    """The folder of the bundled checkpoint ``name``: the repository's copy when there is one, else
    the installed package's. When neither exists, the repository path (so an error names it)."""
    for folder in (REPO_CHECKPOINTS / name, PACKAGED_CHECKPOINTS / name):
        if (folder / "config.json").is_file():
            return folder
    return REPO_CHECKPOINTS / name
