"""FastProtect: near zero-cost protection of images against diffusion-model mimicry.

Importing this package is cheap: no model is built and nothing is downloaded until a
loader (``Protector.from_pretrained``, ``load_autoencoder``, ``load_perceptual``) is called.
"""

__version__ = "0.1.0"
