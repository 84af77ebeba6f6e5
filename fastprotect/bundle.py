"""Where the bundled checkpoints live, in a checkout and in an installed package.

Two are bundled, both trained against TAEF2: ``taef2-generator`` (the default: the perturbation
generator, fastprotect.generator) and ``taef2-mixture`` (the paper's mixture of perturbations,
selectable with ``--method mixture``). In the repository (and an editable install) they are
``checkpoints/<name>`` beside the ``fastprotect`` folder. ``pip install .`` ships the same folders
inside the package as ``fastprotect/checkpoints/<name>`` (``pyproject.toml`` maps the repository's
``checkpoints/`` onto the package ``fastprotect.checkpoints``), so the default works there too.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_CHECKPOINTS = {"generator": "taef2-generator", "mixture": "taef2-mixture"}
BUNDLED_METHODS = tuple(BUNDLED_CHECKPOINTS)
BUNDLED_CHECKPOINT_NAME = BUNDLED_CHECKPOINTS["generator"]  # the default

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


def bundled_checkpoint_for(method: str) -> Path:
    """The bundled checkpoint of ``method`` (a key of BUNDLED_CHECKPOINTS)."""
    if method not in BUNDLED_CHECKPOINTS:
        raise ValueError(f"unknown method {method!r}; bundled: {', '.join(BUNDLED_METHODS)}")
    return bundled_checkpoint(BUNDLED_CHECKPOINTS[method])
