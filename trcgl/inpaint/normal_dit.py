"""The normal-radiograph generator (inpainting paper, Sec. 3.1.1): a latent diffusion transformer
(diffusers' ``DiTTransformer2DModel``) trained on normal images only, saved and loaded as a
diffusers ``DiTPipeline``.

Normal radiographs are plentiful, so this model never sees the long tail. The paper trains
DiT-XL/2 at 512 px on 321,086 normal images from seven datasets, in the latent space of Stable
Diffusion's autoencoder. Here the DiT works in the latent space of the autoencoder the
prompt-diffusion chapter trained (no pretrained VAE ships here) and learns from the normal
rows of the training split that are not in the classifier's training set. The DiT is
"class-conditional" with a single class (``normal``): diffusers' DiT always takes a class label.

Label dropout (p = 0.1, diffusers' default for DiT, for classifier-free guidance) is drawn by the
trainer from the epoch's generator, one draw per sample for all blocks as in the DiT paper,
instead of inside diffusers' blocks from the global random state: the draws are then the same
for any number of processes (each cuts its rows out of the global batch's draws, as for the
noise, :func:`trcgl.diffusion.training.noised_batch`). The latents are batched on the device, the
forward pass runs under bf16 autocast on CUDA (``diffusion.amp``), and under a launcher every
process trains on its share of each global batch (:mod:`trcgl.runtime`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiTPipeline, DiTTransformer2DModel
from diffusers.training_utils import EMAModel

from ..cache import atomic_write_json
from ..data.batches import TensorBatches
from ..diffusion.training import encode_latents, noised_batch, train_epochs
from ..runtime import autocast, processes, seed_everything

log = logging.getLogger(__name__)

#: The ``inpaint`` settings the DiT depends on.
DIT_KEYS = ("n_normal", "dit_layers", "dit_heads", "dit_head_dim", "dit_patch", "epochs", "lr", "batch_size", "ema_decay")
NORMAL = "normal"


@dataclass
class NormalDiT:
    pipeline: DiTPipeline
    history: pd.DataFrame
    folder: Path
    n_images: int


def build_dit(latent_size: int, latent_channels: int, layers: int, heads: int, head_dim: int,
              patch: int) -> DiTTransformer2DModel:
    """A small DiT (adaLN-Zero blocks, one class) over ``latent_size``² latents in ``patch``² patches."""
    return DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=head_dim, in_channels=latent_channels,
                                 out_channels=latent_channels, num_layers=layers, sample_size=latent_size,
                                 patch_size=patch, num_embeds_ada_norm=1)


def load_normal_dit(folder: Path, device) -> NormalDiT:
    """The DiT a ``normal-dit`` stage wrote, as a diffusers ``DiTPipeline``."""
    folder = Path(folder)
    pipe = DiTPipeline.from_pretrained(folder / "pipeline", local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    n = json.loads((folder / "dit.json").read_text())["images"]
    return NormalDiT(pipe, pd.read_csv(folder / "history.csv"), folder, n)


def class_labels(n: int, device) -> torch.Tensor:
    """The one class label (0 = normal) for n samples."""
    return torch.zeros(n, dtype=torch.long, device=device)


def own_label_dropout(dit: DiTTransformer2DModel) -> tuple[float, int]:
    """Turn off the label dropout inside the DiT's blocks (the trainer draws it, see the module
    docstring); returns (its probability, the null label's id)."""
    from diffusers.models.embeddings import LabelEmbedding

    embedders = [m for m in dit.modules() if isinstance(m, LabelEmbedding)]
    p = max((m.dropout_prob for m in embedders), default=0.0)
    for m in embedders:
        m.dropout_prob = 0.0
    return p, embedders[0].num_classes if embedders else 0


def fit_normal_dit(cfg, images: np.ndarray, vae, seed: int, device, work: Path) -> None:
    """Train the DiT on normal uint8 images in ``vae``'s latent space into ``work`` (the
    ``normal-dit`` stage), saved as a ``DiTPipeline``."""
    p, d = cfg.inpaint, cfg.diffusion
    procs = processes()
    procs.check_device(device)
    seed_everything(seed, cfg.deterministic)
    mu, sd = encode_latents(vae, images, device)
    dit = build_dit(mu.shape[-1], mu.shape[1], p.dit_layers, p.dit_heads, p.dit_head_dim, p.dit_patch).to(device)
    p_drop, null_label = own_label_dropout(dit)
    noise = DDPMScheduler(num_train_timesteps=d.train_timesteps, beta_schedule=d.beta_schedule, clip_sample=False)
    opt = torch.optim.AdamW(dit.parameters(), lr=p.lr, weight_decay=0.0)   # DiT: AdamW, no weight decay
    ema = EMAModel(dit.parameters(), decay=p.ema_decay)
    parts = {"model": dit, "optimizer": opt, "ema": ema}
    latents = TensorBatches(mu, device, sd=sd)
    net = procs.wrap(dit)

    def epoch(g):
        net.train()
        losses = []
        for b in latents.batches(torch.randperm(len(latents), generator=g), p.batch_size, procs.rank, procs.size):
            z_t, eps, t = noised_batch(noise, b.x, b.targets["sd"], b.shard, g)
            drop = (torch.rand(b.shard.size, generator=g) < p_drop)[b.shard.rows].to(device)
            labels = torch.where(drop, null_label, class_labels(len(drop), device))
            with autocast(device, d.amp):
                pred = net(z_t, timestep=t, class_labels=labels).sample
            loss = torch.nn.functional.mse_loss(pred.float(), eps) * b.shard.scale
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.step(dit.parameters())
            losses.append(loss.detach())
        return {"loss": procs.mean_of_steps(losses)}

    history = train_epochs(work, parts, p.epochs, seed * 15_485_863, "training the normal DiT", "dit", epoch, procs)
    ema.copy_to(dit.parameters())
    dit.eval()
    pipe = DiTPipeline(transformer=dit, vae=vae, scheduler=DDIMScheduler.from_config(noise.config, clip_sample=False),
                       id2label={0: NORMAL})
    if procs.is_main:
        pipe.save_pretrained(work / "pipeline")
        pd.DataFrame(history).to_csv(work / "history.csv", index=False)
        atomic_write_json(work / "dit.json", {"images": int(len(images)), "device": str(device),
                                              "processes": procs.size})
        (work / "last.pt").unlink(missing_ok=True)


@torch.no_grad()
def sample_normals(dit: NormalDiT, n: int, steps: int, seed: int) -> np.ndarray:
    """n unconditional samples (uint8 N×H×W) from the DiT pipeline (DDIM, no guidance)."""
    pipe = dit.pipeline
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = pipe(class_labels=[0] * n, guidance_scale=1.0, num_inference_steps=steps, generator=g, output_type="np").images
    return np.round(np.asarray(out)[..., 0] * 255).astype(np.uint8)
