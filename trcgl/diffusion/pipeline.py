"""Sampling (Eq. 4-6) and the diffusers pipeline that holds a trained prompt-latent diffusion model.

:class:`PromptDiffusionPipeline` is a ``diffusers.DiffusionPipeline``: ``save_pretrained(folder)``
writes the VAE, the UNet, the DDIM scheduler, the frozen text encoder with its tokenizer and the
learned context vectors (:class:`ContextVectors`) in diffusers' folder layout, and
``PromptDiffusionPipeline.from_pretrained(folder)`` loads them back with no network. Calling it
with prompts runs DDIM (Eq. 5) with classifier-free guidance (Eq. 4) and decodes with the VAE
(Eq. 6).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from tqdm import tqdm

from .models import guided_noise, predict_noise
from .text import PromptConditioner
from ..errors import TrcglError


class PipelineError(TrcglError, RuntimeError):
    """A diffusion pipeline folder is missing or incomplete."""


class ContextVectors(ModelMixin, ConfigMixin):
    """The m learnable context vectors C of Eq. 2 as a diffusers model (so the pipeline saves them).
    ``num_labels``: the width of the multi-hot label vector the UNet is also conditioned on (0: the
    prompt alone, the paper's condition)."""

    @register_to_config
    def __init__(self, num_sets: int = 1, m: int = 4, dim: int = 384, class_specific: bool = False,
                 max_length: int = 32, num_labels: int = 0):
        super().__init__()
        self.vectors = torch.nn.Parameter(torch.zeros(num_sets, m, dim))

    @classmethod
    def from_conditioner(cls, conditioner: PromptConditioner, num_labels: int = 0) -> "ContextVectors":
        n, m, d = conditioner.context.shape
        out = cls(num_sets=n, m=m, dim=d, class_specific=conditioner.class_specific,
                  max_length=conditioner.max_length, num_labels=num_labels)
        out.vectors.data.copy_(conditioner.context.detach().cpu())
        return out


class PromptDiffusionPipeline(DiffusionPipeline):
    """Text-guided latent diffusion with learned context vectors (paper Sec. 3.1)."""

    def __init__(self, vae: AutoencoderKL, unet: UNet2DConditionModel, scheduler: DDIMScheduler,
                 text_encoder, tokenizer, context: ContextVectors):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, text_encoder=text_encoder,
                              tokenizer=tokenizer, context=context)

    def conditioner(self) -> PromptConditioner:
        """A :class:`PromptConditioner` over this pipeline's encoder and context vectors."""
        cfg = self.context.config
        cond = PromptConditioner(self.tokenizer, self.text_encoder, m=cfg.m, max_length=cfg.max_length,
                                 class_specific=cfg.class_specific, num_classes=cfg.num_sets)
        cond.context.data.copy_(self.context.vectors.detach().to(cond.context.device))
        return cond.to(self.unet.device)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], class_ids: Sequence[int] | None = None,
                 guidance_scale: float = 3.0, num_inference_steps: int = 25, seed: int = 0,
                 batch_size: int = 64, batched_cfg: bool = True, unconditional: bool = False,
                 progress: bool = True, clip_latents: float | None = None, labels=None) -> np.ndarray:
        """Images (N, H, W) in [0, 1] for N prompts.

        ``labels`` (N, C multi-hot): the findings each prompt names, for a pipeline whose UNet is
        also conditioned on label vectors (``context.config.num_labels``); ignored otherwise.
        ``guidance_scale`` is ω of Eq. 4 (1 = conditional only, 0 = unconditional only);
        ``batched_cfg`` runs both branches in one forward pass (else two); ``unconditional``
        samples from the unconditional model alone (the baseline of the consistency score).
        ``clip_latents``: clip each step's predicted clean latent z_0 to ±this many standard
        deviations (DDIM's ``clip_sample``; the latents have unit variance), a common guard for
        small, briefly trained models; None leaves it off. Sample n of a call with a given
        ``seed`` always starts from the same noise.
        """
        self.scheduler = DDIMScheduler.from_config(self.scheduler.config, clip_sample=clip_latents is not None,
                                                   clip_sample_range=float(clip_latents or 1.0))
        cond_maker = self.conditioner().eval()
        device, dtype = self.unet.device, self.unet.dtype
        prompts = list(prompts)
        ids = None if class_ids is None else torch.as_tensor(list(class_ids), device=device)
        width = int(self.context.config.get("num_labels", 0))
        if width and not unconditional and labels is None:
            raise PipelineError(f"this pipeline is conditioned on label vectors ({width} classes): pass labels=")
        lab = None
        if width:
            lab = (torch.zeros(len(prompts), width) if labels is None or unconditional
                   else torch.as_tensor(np.asarray(labels), dtype=torch.float32))
            if lab.shape != (len(prompts), width):
                raise PipelineError(f"labels of shape {tuple(lab.shape)} for {len(prompts)} prompts and {width} classes")
            lab = lab.to(device, dtype)
        out = []
        starts = range(0, len(prompts), batch_size)
        for lo in tqdm(starts, desc="sampling", unit="batch", disable=not progress or len(starts) < 2):
            chunk = prompts[lo:lo + batch_size]
            B = len(chunk)
            uncond = cond_maker.unconditional(B).to(dtype)
            cond = uncond if unconditional else cond_maker(
                chunk, None if ids is None else ids[lo:lo + B]).to(dtype)
            y = None if lab is None else lab[lo:lo + B]
            y0 = None if lab is None else torch.zeros_like(y)
            latents = initial_noise(self.unet, seed, range(lo, lo + B)).to(device, dtype)
            latents = latents * self.scheduler.init_noise_sigma
            self.scheduler.set_timesteps(num_inference_steps)
            for t in self.scheduler.timesteps:
                if unconditional or guidance_scale == 0:
                    eps = predict_noise(self.unet, latents, t, uncond, y0)
                elif batched_cfg:
                    eps = guided_noise(self.unet, latents, t, cond, uncond, guidance_scale, y)    # Eq. 4
                else:
                    eps_u = predict_noise(self.unet, latents, t, uncond, y0)
                    eps_c = predict_noise(self.unet, latents, t, cond, y)
                    eps = eps_u + guidance_scale * (eps_c - eps_u)
                latents = self.scheduler.step(eps, t, latents, eta=0.0).prev_sample            # Eq. 5
            x = self.vae.decode(latents / self.vae.config.scaling_factor).sample              # Eq. 6
            out.append(((x.float().clamp(-1, 1) + 1) / 2)[:, 0].cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0, 0), np.float32)


def initial_noise(unet: UNet2DConditionModel, seed: int, indices) -> torch.Tensor:
    """z_T of samples ``indices``: sample n's noise depends on (seed, n) only, not on batching."""
    c, s = unet.config.in_channels, unet.config.sample_size
    return torch.stack([torch.randn(c, s, s, generator=torch.Generator().manual_seed(seed * 1_000_003 + int(n)))
                        for n in indices])


#: The files each component folder of a saved pipeline must hold (one of each tuple).
COMPONENT_FILES = {
    "unet": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "vae": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "context": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "scheduler": (("scheduler_config.json",),),
    "text_encoder": (("config.json",), ("model.safetensors", "pytorch_model.bin")),
    "tokenizer": (("tokenizer_config.json",),),
}
PIPELINE_HINT = ("set paths.diffusion_pipeline to a folder written by PromptDiffusionPipeline.save_pretrained "
                 "(e.g. runs/cache/prompt-diffusion/*/pipeline), or leave it null to train one")


def load_pipeline(path: str | Path, device: torch.device | str = "cpu") -> PromptDiffusionPipeline:
    """Load a saved pipeline folder; a missing or incomplete folder (a component absent or empty)
    is one :class:`PipelineError` naming the folder and what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise PipelineError(f"no trcgl diffusion pipeline at {path} (no such folder): {PIPELINE_HINT}")
    missing = [] if (path / "model_index.json").is_file() else ["model_index.json"]
    for name, groups in COMPONENT_FILES.items():
        lacking = [" or ".join(g) for g in groups if not any((path / name / f).is_file() for f in g)]
        if lacking:
            missing.append(f"{name}/ ({'no folder' if not (path / name).is_dir() else 'lacks ' + ', '.join(lacking)})")
    if missing:
        raise PipelineError(f"incomplete trcgl diffusion pipeline at {path}: missing {'; '.join(missing)}: {PIPELINE_HINT}")
    try:
        pipe = PromptDiffusionPipeline.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        reason = " ".join(str(err).split())[:160]
        raise PipelineError(f"the diffusion pipeline at {path} cannot be loaded ({type(err).__name__}: {reason}): "
                            f"{PIPELINE_HINT}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
