"""The Space with dummy random models, for tests (no download, CPU, seconds).

The Protector is :func:`fastprotect.dummy.dummy_space_protector` (plumbing, not protection). Run
from the repository root to serve the app on 127.0.0.1::

    python -m tests.launch_dummy_app --port 7861 [--per-image] [--unavailable] [--lpips PATH] [--slow-protect S]

It prints ``WORKSPACE <folder>`` and then ``READY http://127.0.0.1:PORT`` once the server answers;
SIGTERM / SIGINT remove the workspace, Gradio's cache inside it (``webapp.privacy.guard``), as in the real Space.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

from fastprotect import environment
from fastprotect.dummy import dummy_space_protector

ROOT = Path(__file__).resolve().parents[1]


def shared_lpips_backbone() -> Path | None:
    """The real LPIPS AlexNet file in ../shared/weights, when this machine has it."""
    shared = Path(environment.get("FASTPROTECT_SHARED") or ROOT.parent / "shared")
    path = shared / "weights" / "alexnet_lpips_features.safetensors"
    return path if path.is_file() else None


def build_dummy_demo(*, per_image: bool = False, unavailable: bool = False, lpips_backbone=None, workspace=None, limits=None,
                     slow_protect_s: float = 0.0):
    """The dummy Space, not yet launched: launch it with ``app.launch(demo, limits)``. ``slow_protect_s``: each
    protection takes at least this long (browser tests act while a request runs)."""
    import app
    from webapp import space

    if workspace is not None:  # Gradio's example cache inside the app's temp space, not the repo
        os.environ["GRADIO_EXAMPLES_CACHE"] = str(workspace.root / "cached_examples")
    if unavailable:
        loaded = space.LoadOutcome(None, "WeightsUnavailableError: Could not get 'config.json' (tests: simulated offline start)")
    else:
        protector = dummy_space_protector(per_image=per_image, lpips_backbone=lpips_backbone)
        if slow_protect_s > 0:
            protector.protect = _slowed(protector.protect, slow_protect_s)
        loaded = space.LoadOutcome(protector)
    return app.build_demo(loaded, workspace=workspace, limits=limits)


def _slowed(protect, seconds: float):
    def slow(*args, **kwargs):
        time.sleep(seconds)
        return protect(*args, **kwargs)

    return slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--per-image", action="store_true")
    parser.add_argument("--unavailable", action="store_true", help="start as if no weights could be loaded")
    parser.add_argument("--lpips", default=None, help="LPIPS AlexNet backbone file (adaptive strength); default: ../shared/weights when present")
    parser.add_argument("--no-lpips", action="store_true", help="run without LPIPS (adaptive strength off)")
    parser.add_argument("--slow-protect", type=float, default=0.0, help="make each protection take at least this many seconds")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    import app
    from webapp import privacy, space
    from webapp.limits import SpaceLimits

    workspace = space.Workspace()
    # the dummy SD-VAE is slow on a busy CPU: its round trip runs on a small copy (the real Space's TAEF2 is fast)
    limits = dataclasses.replace(SpaceLimits.from_environment(), round_trip_max_side=128)
    privacy.guard(workspace, limits)  # as app.main(): Gradio's cache inside, timer, signals, orphans of crashed runs
    print(f"WORKSPACE {workspace.root}", flush=True)
    demo = build_dummy_demo(per_image=args.per_image, unavailable=args.unavailable, lpips_backbone=None if args.no_lpips else (args.lpips or shared_lpips_backbone()), workspace=workspace, limits=limits, slow_protect_s=args.slow_protect)
    workspace.keep_page_files()  # as app.main()
    app.launch(demo, limits, server_name="127.0.0.1", server_port=args.port, prevent_thread_lock=True, quiet=True)
    print(f"READY http://127.0.0.1:{args.port}", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
