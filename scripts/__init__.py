"""Repository scripts (docs figures, weight bundling), run from the root: ``python -m scripts.NAME``."""
