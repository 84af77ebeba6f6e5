"""img2img (SDEdit): noise the image part-way along the diffusion, then denoise it with a prompt.

The cheapest mimicry: no training, one image in, a variation out. ``strength`` is the fraction of
the schedule that is re-generated (0 returns the input's VAE round trip, 1 ignores the input).
Because SDEdit starts from the VAE latent of the input, an encoder-targeting protection shows up
here directly: the protected image's latent is the pattern's, so the edit grows from the pattern.
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline, StableDiffusionImg2ImgPipeline

from .pipeline import resize, seeded_generator, stack_images, working_size
from .settings import Img2ImgSettings


def as_img2img(pipe: DiffusionPipeline) -> StableDiffusionImg2ImgPipeline:
    """The img2img view of an SD pipeline, sharing its modules (no copy of the weights)."""
    if isinstance(pipe, StableDiffusionImg2ImgPipeline):
        return pipe
    # The constructor, not ``from_pipe``: same shared modules, without from_pipe's dtype re-cast.
    img2img_pipe = StableDiffusionImg2ImgPipeline(
        **pipe.components, requires_safety_checker=pipe.config.get("requires_safety_checker", False)
    )
    img2img_pipe.set_progress_bar_config(disable=True)
    return img2img_pipe


@torch.no_grad()
def img2img(
    pipe: DiffusionPipeline, images: torch.Tensor | list[torch.Tensor], settings: Img2ImgSettings = Img2ImgSettings()
) -> list[torch.Tensor]:
    """SDEdit each image (1×3×H×W or a batch, [0, 1]); returns a list of 1×3×H×W [0, 1] tensors,
    each the size of its input. Every image gets the same seed, so a clean and a protected copy
    of one picture are edited with identical noise and only the pixels differ."""
    if not 0 < settings.strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {settings.strength}")
    img2img_pipe = as_img2img(pipe)
    multiple = img2img_pipe.vae_scale_factor
    outputs = []
    for image in stack_images(images):
        height, width = image.shape[-2:]
        # The VAE needs sides divisible by its downscale; run there, then return to the input size.
        run_height, run_width = working_size(height, width, multiple=multiple, max_side=settings.max_side)
        result = img2img_pipe(
            prompt=settings.prompt,
            image=resize(image, run_height, run_width),
            strength=settings.strength,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            negative_prompt=settings.negative_prompt,
            generator=seeded_generator(settings.seed),
            output_type="pt",
        ).images
        outputs.append(resize(result.float().cpu(), height, width))
    return outputs


def img2img_pair(
    pipe: DiffusionPipeline, clean: torch.Tensor, protected: torch.Tensor, settings: Img2ImgSettings = Img2ImgSettings()
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDEdit a clean image and its protected copy (each 1×3×H×W, [0, 1]) with identical settings."""
    clean_out, protected_out = img2img(pipe, [clean, protected], settings)
    return clean_out, protected_out
