"""Importing the library is cheap: no heavy optional library is loaded until a model is.

Each import runs in a fresh interpreter (``sys.modules`` of this one is full of everything). The
reliable check is which modules got imported; the wall time bound is generous (torch alone takes
1–3 s on a busy 2-core machine) and only catches a gross regression.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torchvision", "transformers", "diffusers", "lpips", "gradio", "sklearn", "torchmetrics")
WALL_BOUND_S = 6.0
PROBE = """
import json, sys, time
start = time.perf_counter()
import {module}
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "heavy": [name for name in {heavy!r} if name in sys.modules]}}))
"""


def cold_import(module: str) -> dict:
    code = PROBE.format(module=module, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["fastprotect.protect", "fastprotect.cli", "fastprotect.dummy", "fastprotect.metrics"])
def test_library_import_loads_no_heavy_library(module: str) -> None:
    runs = [cold_import(module) for _ in range(2)]  # the faster of two: the first may meet a cold file cache
    assert runs[0]["heavy"] == [], f"`import {module}` imported {runs[0]['heavy']}: import them where they are used"
    fastest = min(run["seconds"] for run in runs)
    assert fastest < WALL_BOUND_S, f"`import {module}` took {fastest:.1f} s (bound {WALL_BOUND_S} s)"



def test_every_console_script_names_a_function_of_this_tree() -> None:
    """pyproject.toml's console scripts point at ``module:function`` pairs that exist (an installed
    script would run another checkout's code, so this reads the entry points instead)."""
    import importlib
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"fastprotect", "fastprotect-train", "fastprotect-attack"} <= scripts.keys()
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function, None)), f"{name} = {target!r} names nothing callable"


def test_pyproject_lists_every_package_folder() -> None:
    """A non-editable ``pip install .`` ships only the packages pyproject.toml lists."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(init.parent.relative_to(root).parts)
        for top in ("fastprotect", "attack", "train")
        for init in (root / top).rglob("__init__.py")
    }
    assert folders - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
