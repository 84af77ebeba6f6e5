"""Mimicry demonstrations: what a personalised diffusion model makes of clean vs protected images.

* :mod:`attack.roundtrip` — VAE encode + decode, "what the fine-tuner's model sees" (CPU, instant).
* :mod:`attack.img2img` — SDEdit with ``StableDiffusionImg2ImgPipeline``.
* :mod:`attack.lora` — a quick DreamBooth-style LoRA (diffusers + peft) and the clean-vs-protected duel.
* :mod:`attack.compare` — the comparison grid and its numbers.

Importing this package (or any module in it) builds no model and downloads nothing.
"""
