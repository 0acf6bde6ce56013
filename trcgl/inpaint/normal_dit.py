"""The normal-radiograph generator (inpainting paper, Sec. 3.1.1): a latent diffusion transformer
(diffusers' ``DiTTransformer2DModel``) trained on normal images only, saved and loaded as a
diffusers ``DiTPipeline``.

Normal radiographs are plentiful, so this model never sees the long tail. The paper trains
DiT-XL/2 at 512 px on 321,086 normal images from seven datasets, in the latent space of Stable
Diffusion's autoencoder. Here the DiT works in the latent space of the autoencoder the
prompt-diffusion chapter trained (no pretrained VAE ships here) and learns from the normal
rows of the training split that are not in the classifier's training set. The DiT is
"class-conditional" with a single class (``normal``): diffusers' DiT always takes a class label.
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

from ..cache import ArtifactCache, array_digest
from ..data.datasets import build_image_set
from ..diffusion.training import encode_latents, noised_batch, train_epochs
from ..runtime import seed_everything, select_device

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


def normal_rows(cfg, cohort, exclude_ids, n: int, seed: int) -> np.ndarray:
    """Cohort rows labelled exactly ``normal``: frontal, training split, not in ``exclude_ids``
    (the classifier's training set), ``n`` of them drawn at random (all when fewer)."""
    frame = cohort.frame
    only_normal = frame["labels"].map(lambda labels: list(labels) == [NORMAL]).to_numpy()
    pool = np.flatnonzero(cohort.is_train & only_normal & frame["Projection"].isin(list(cfg.data.projections)).to_numpy()
                          & ~frame["ImageID"].isin(set(exclude_ids)).to_numpy())
    if len(pool) == 0:
        raise ValueError("no normal training-split rows outside the training set: the normal generator has nothing to learn")
    rng = np.random.default_rng(seed + 4409)
    return np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))


def normal_image_set(cfg, cohort, train_set, cache: ArtifactCache, seed: int | None = None):
    """The normal images the DiT learns from (rendered or read, cached like any split)."""
    seed = cfg.seed if seed is None else seed
    index = normal_rows(cfg, cohort, train_set.rows["ImageID"], cfg.inpaint.n_normal, seed)
    return build_image_set(cfg, cohort, "normal", cache, index=index)


def build_dit(latent_size: int, latent_channels: int, layers: int, heads: int, head_dim: int,
              patch: int) -> DiTTransformer2DModel:
    """A small DiT (adaLN-Zero blocks, one class) over ``latent_size``² latents in ``patch``² patches."""
    return DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=head_dim, in_channels=latent_channels,
                                 out_channels=latent_channels, num_layers=layers, sample_size=latent_size,
                                 patch_size=patch, num_embeds_ada_norm=1)


def vae_key(vae) -> str:
    """A digest of an autoencoder's weights (part of the DiT's cache key)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


def train_normal_dit(cfg, normal_set, vae, seed: int | None = None, cache: ArtifactCache | None = None) -> NormalDiT:
    """Train (or load from the cache) the DiT on ``normal_set`` in ``vae``'s latent space."""
    cache = cache or ArtifactCache()
    seed = cfg.seed if seed is None else seed
    device = select_device(cfg.device)
    params = {"stage": "normal-dit-v1", "inpaint": {k: cfg.inpaint[k] for k in DIT_KEYS}, "seed": seed,
              "images": array_digest(normal_set.images), "vae": vae_key(vae),
              "schedule": {k: cfg.diffusion[k] for k in ("train_timesteps", "beta_schedule")}}
    folder = cache.get_or_compute("normal-dit", params, lambda work: _fit(cfg, normal_set.images, vae, seed, device, work))
    pipe = DiTPipeline.from_pretrained(folder / "pipeline", local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    return NormalDiT(pipe, pd.read_csv(folder / "history.csv"), folder, len(normal_set))


def class_labels(n: int, device) -> torch.Tensor:
    """The one class label (0 = normal) for n samples."""
    return torch.zeros(n, dtype=torch.long, device=device)


def _fit(cfg, images, vae, seed, device, work: Path) -> None:
    p, d = cfg.inpaint, cfg.diffusion
    seed_everything(seed, cfg.deterministic)
    mu, sd = encode_latents(vae, images, device)
    dit = build_dit(mu.shape[-1], mu.shape[1], p.dit_layers, p.dit_heads, p.dit_head_dim, p.dit_patch).to(device)
    noise = DDPMScheduler(num_train_timesteps=d.train_timesteps, beta_schedule=d.beta_schedule, clip_sample=False)
    opt = torch.optim.AdamW(dit.parameters(), lr=p.lr, weight_decay=0.0)   # DiT: AdamW, no weight decay
    ema = EMAModel(dit.parameters(), decay=p.ema_decay)
    parts = {"model": dit, "optimizer": opt, "ema": ema}

    def epoch(g):
        dit.train()
        losses = []
        for b in torch.randperm(len(mu), generator=g).split(p.batch_size):
            z_t, eps, t = noised_batch(noise, mu, sd, b, g)
            pred = dit(z_t.to(device), timestep=t.to(device), class_labels=class_labels(len(b), device)).sample
            loss = torch.nn.functional.mse_loss(pred.float(), eps.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.step(dit.parameters())
            losses.append(loss.item())
        return {"loss": float(np.mean(losses))}

    history = train_epochs(work, parts, p.epochs, seed * 15_485_863, "training the normal DiT", "dit", epoch)
    ema.copy_to(dit.parameters())
    dit.eval()
    pipe = DiTPipeline(transformer=dit, vae=vae, scheduler=DDIMScheduler.from_config(noise.config, clip_sample=False),
                       id2label={0: NORMAL})
    pipe.save_pretrained(work / "pipeline")
    pd.DataFrame(history).to_csv(work / "history.csv", index=False)
    (work / "meta.json").write_text(json.dumps({"images": int(len(images)), "device": str(device)}))
    (work / "last.pt").unlink(missing_ok=True)


@torch.no_grad()
def sample_normals(dit: NormalDiT, n: int, steps: int, seed: int) -> np.ndarray:
    """n unconditional samples (uint8 N×H×W) from the DiT pipeline (DDIM, no guidance)."""
    pipe = dit.pipeline
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = pipe(class_labels=[0] * n, guidance_scale=1.0, num_inference_steps=steps, generator=g, output_type="np").images
    return np.round(np.asarray(out)[..., 0] * 255).astype(np.uint8)
