"""The Space's own wing: everything ``app.py`` needs that is not layout.

* :mod:`webapp.limits`: :class:`SpaceLimits`, every bound of the page in one frozen dataclass.
* :mod:`webapp.handlers`: the request handlers as plain functions of a typed
  :class:`webapp.handlers.SpaceContext`, so tests call them without a server.
* :mod:`webapp.space`: loading with a page-friendly outcome, the private temp workspace, one
  upload into a PNG, the batch ZIP and its report.
* :mod:`webapp.views`: the proof tabs (what a mimic sees, img2img, the LoRA duel) on top of
  :mod:`attack.mimic`.
* :mod:`webapp.examples`: the procedural example pictures (CC0).

The library (``fastprotect``) holds no Space code; nothing here is imported by it.
"""
