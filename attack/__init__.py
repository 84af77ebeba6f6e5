"""Mimicry demonstrations: what a personalised diffusion model makes of clean vs protected images.

* :mod:`attack.roundtrip` — VAE encode + decode, "what the fine-tuner's model sees" (CPU, instant).
* :mod:`attack.img2img` — SDEdit with ``StableDiffusionImg2ImgPipeline``.
* :mod:`attack.lora` — a quick DreamBooth-style LoRA (diffusers + peft) and the clean-vs-protected duel.
* :mod:`attack.compare` — the comparison grid and its numbers.
* :mod:`attack.families` — the mimic families (``"sd-1.5"``, ``"flux.2-klein"``) and their Hub ids.
* :mod:`attack.mimic` — load a family's models and run each proof on them (the one dispatch point).
* :mod:`attack.flux2`, :mod:`attack.flux2_lora` — FLUX.2 [klein]: round
  trip, reference edit / SDEdit, LoRA duel.

Importing this package (or any module in it) builds no model and downloads nothing.
"""
