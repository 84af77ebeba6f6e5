"""FastProtect: near zero-cost protection of images against diffusion-model mimicry.

Importing this package is cheap: no model is built and nothing is downloaded until a
loader (``Protector.from_pretrained``, ``load_autoencoder``, ``load_perceptual``) is called.
"""

import os

# Idle OpenMP threads sleep instead of spinning. When other processes share the cores (a Space's
# vCPUs, a busy CI box), spinning made torch's default 2 threads ~10x slower than 1 thread; sleeping
# matched 1 thread (docs/BENCHMARKS.md). Only effective if torch is not imported yet; an explicit
# OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
