"""Training the latent diffusion model on the training split (paper Sec. 3.1, Eq. 3).

Two stages, each resumable after an interruption
(checkpoint per epoch in the cache's ``.partial`` folder, data order and noise drawn from
generators seeded by (seed, epoch); a checkpoint that cannot be used is set aside with a warning
and that stage starts over, :mod:`trcgl.checkpoints`):

1. an ``AutoencoderKL`` learns to compress the training images (L1 reconstruction + a small KL
   term); its latents are rescaled to unit variance (diffusers' ``scaling_factor``);
2. a ``UNet2DConditionModel`` learns to predict the noise of noised latents, conditioned by
   cross-attention on E_cond = [C ; E_n] (Eq. 2), with the objective
   L = E ||ε − ε_θ(z_t, t, E_cond)||² (Eq. 3). The text encoder is frozen, so every prompt is
   encoded once; the context vectors C learn with the UNet. Conditions are dropped (replaced by
   the unconditional one) with probability ``cond_dropout`` so the same network also learns ε_u
   for classifier-free guidance. An exponential moving average of the UNet weights is kept
   (diffusers' ``EMAModel``) and is what the saved pipeline holds.

The result is a :class:`~trcgl.diffusion.pipeline.PromptDiffusionPipeline` saved with
``save_pretrained`` inside the stage's folder and loaded back from there (the ``vae`` and
``prompt-diffusion`` stages of :mod:`trcgl.stages` cache both); ``paths.diffusion_pipeline``
loads a saved pipeline instead of training.

The training data (uint8 images for the VAE; posterior means and deviations, prompt encodings
and class ids for the UNet) are tensors held on the device and batched there
(:mod:`trcgl.data.batches`); with ``diffusion.amp`` the forward passes run under bf16 autocast on
CUDA. Under a launcher (:mod:`trcgl.runtime`) every process walks the same seeded permutation and
trains on its share of each global batch of ``diffusion.batch_size``; the noise, timesteps and
condition dropout are drawn for the whole global batch from the epoch's generator and each
process cuts its rows out, so the draws do not depend on the number of processes. Only the main
process writes files.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm import tqdm

from ..cache import atomic_write_json
from ..checkpoints import load_resume_checkpoint, save_checkpoint
from ..data.batches import Shard, TensorBatches, unit_range
from ..data.prompts import prompt_for_row
from ..runtime import Processes, autocast, processes, seed_everything
from .models import build_unet, build_vae, predict_noise
from .pipeline import ContextVectors, PromptDiffusionPipeline, load_pipeline
from .text import PromptConditioner, load_text_encoder

log = logging.getLogger(__name__)


@dataclass
class DiffusionRun:
    pipeline: PromptDiffusionPipeline
    history: pd.DataFrame | None   # per epoch: train loss, held-out loss (None for a loaded pipeline)
    folder: Path | None


#: The ``diffusion`` settings the trained model depends on (sampling, filtering and oracle
#: settings are not among them, so changing those never retrains the model).
TRAINING_KEYS = ("text_encoder", "context_vectors", "class_specific_context", "max_length", "cond_dropout", "n_train",
                 "pretrain_pool", "pretrain_epochs",
                 "vae_channels", "latent_channels", "vae_epochs", "vae_lr", "kl_weight", "unet_channels",
                 "attention_levels", "pooled_condition", "label_condition", "label_dropout", "repeat_factor",
                 "target_groups",
                 "epochs", "lr", "batch_size", "amp", "ema_decay", "train_timesteps", "beta_schedule",
                 "prediction_type", "snr_gamma")


def _after_epoch(stage: str, epoch: int) -> None:
    """A hook called after each checkpoint (tests use it to simulate an interruption)."""


# ----------------------------------------------------------------------------- data

def diffusion_rows(cfg, train_set, seed: int, n: int | None = None) -> np.ndarray:
    """Training-set indices the diffusion model learns from: all, or ``diffusion.n_train`` rows
    (``n`` when given) taken rarest-class first (a row counts as rare as its rarest label), so
    tail and medium rows are all in and the head fills the rest."""
    n, N = cfg.diffusion.n_train if n is None else n, len(train_set.Y)
    if n is None or n >= N:
        return np.arange(N)
    counts = train_set.Y.sum(0).astype(float)
    rarest = np.where(train_set.Y == 1, counts[None], np.inf).min(1)
    tie = np.random.default_rng(seed).random(N)
    return np.sort(np.lexsort((tie, rarest))[:n])


def epoch_rows(cfg, Y: np.ndarray, groups=None) -> np.ndarray:
    """Each row's count of appearances per epoch: 1, or with ``diffusion.repeat_factor`` = t the
    repeat-factor sampling of :mod:`trcgl.data.sampling` over the **target classes** (a row repeats
    round(sqrt(t / f_c)) times, at most 10, for its rarest target class c, f_c being c's share of
    all label counts; rows without a target class appear once), so that a tail class is seen more
    often than its few dozen rows would allow while the other rows keep their share. ``groups``:
    each class's group, for ``diffusion.target_groups`` (None: every class counts)."""
    from ..data.sampling import image_repeats
    from .generate import target_classes

    t = cfg.diffusion.repeat_factor
    if t is None:
        return np.ones(len(Y), np.int64)
    Y = np.asarray(Y)
    if groups is not None:
        wanted = np.zeros(Y.shape[1], bool)
        wanted[target_classes(cfg, groups)] = True
        return image_repeats(Y * wanted[None].astype(Y.dtype), counts=Y.sum(0), threshold=t)
    return image_repeats(Y, threshold=t)


def rarest_class(Y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per row, the index of its rarest present class (the key of class-specific context)."""
    return np.where(Y == 1, counts[None].astype(float), np.inf).argmin(1)


def training_prompts(image_set, class_set, seed: int = 0) -> list[str]:
    """One prompt per image from its labels and its sentences' localizations."""
    names = np.asarray(class_set.classes)
    rows = image_set.rows
    return [prompt_for_row(names[image_set.Y[i] == 1], class_set, rows["sentences"].iloc[i],
                           rows["ImageID"].iloc[i], seed) for i in range(len(image_set))]


# ----------------------------------------------------------------------------- stage 1: VAE

def load_vae(folder: Path, device) -> AutoencoderKL:
    """The autoencoder a ``vae`` stage wrote. diffusers records the folder it was loaded from in
    the config, which pipelines saved with it copy: that is reset to the plain name "vae", so an
    artifact's bytes do not depend on where the run directory lies."""
    vae = AutoencoderKL.from_pretrained(Path(folder) / "vae", local_files_only=True)
    vae.register_to_config(_name_or_path="vae")
    return vae.to(device).eval()


class _VAEStep(nn.Module):
    """One training forward of the autoencoder (encode, draw z from the posterior with the given
    standard-normal ``noise``, decode) as one module, so that DistributedDataParallel sees it."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, noise: torch.Tensor):
        post = self.vae.encode(x).latent_dist
        z = post.mean + post.std * noise
        return self.vae.decode(z).sample, post.kl()


def fit_vae(cfg, images: np.ndarray, seed: int, device, work: Path) -> None:
    """Train the autoencoder on uint8 images (N×H×W) into ``work`` (the ``vae`` stage)."""
    d = cfg.diffusion
    procs = processes()
    procs.check_device(device)
    seed_everything(seed, cfg.deterministic)
    vae = build_vae(1, d.latent_channels, tuple(d.vae_channels)).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=d.vae_lr)
    data = TensorBatches(images, device, unit_range)
    with torch.no_grad():     # the latent shape, for drawing the posterior noise of a whole global batch
        latent = vae.encode(data.gather(torch.arange(1))[0]).latent_dist.mean.shape[1:]
    step = procs.wrap(_VAEStep(vae))
    parts = {"model": vae, "optimizer": opt}

    def epoch(g):
        step.train()
        losses = []
        for b in data.batches(torch.randperm(len(data), generator=g), d.batch_size, procs.rank, procs.size):
            noise = torch.randn((b.shard.size, *latent), generator=g)[b.shard.rows].to(device)
            with autocast(device, d.amp):
                recon, kl = step(b.x, noise)
            loss = ((recon.float() - b.x).abs().mean() + d.kl_weight * kl.float().mean()) * b.shard.scale
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return {"loss": procs.mean_of_steps(losses)}

    history = train_epochs(work, parts, d.vae_epochs, seed * 7919, "training the VAE", "vae", epoch, procs)
    vae.eval()
    mu, _ = encode_latents(vae, images, device, scaled=False)
    vae.register_to_config(scaling_factor=float(1.0 / mu.std()))   # unit-variance latents (as in SD)
    if procs.is_main:
        vae.save_pretrained(work / "vae")
        pd.DataFrame(history).to_csv(work / "history.csv", index=False)
        (work / "last.pt").unlink(missing_ok=True)


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: np.ndarray, device, scaled: bool = True, batch_size: int = 128):
    """Posterior means and standard deviations (N, c, h, w) of uint8 images, times the scaling factor."""
    mus, sds = [], []
    for x, _ in TensorBatches(images, device, unit_range).in_order(batch_size):
        post = vae.encode(x).latent_dist
        mus.append(post.mean.float().cpu())
        sds.append(post.std.float().cpu())
    mu, sd = torch.cat(mus), torch.cat(sds)
    f = vae.config.scaling_factor if scaled else 1.0
    return mu * f, sd * f


# ----------------------------------------------------------------------------- stage 2: UNet + context

def load_diffusion(folder: Path, device) -> DiffusionRun:
    """The trained pipeline of a ``prompt-diffusion`` stage (or a loaded pipeline folder)."""
    folder = Path(folder)
    history = pd.read_csv(folder / "history.csv") if (folder / "history.csv").exists() else None
    return DiffusionRun(load_pipeline(folder / "pipeline", device), history, folder)


def build_conditioner(cfg, num_classes: int) -> PromptConditioner:
    d = cfg.diffusion
    tokenizer, encoder = load_text_encoder(d.text_encoder, cfg.paths.text_encoder)
    return PromptConditioner(tokenizer, encoder, m=d.context_vectors, max_length=d.max_length,
                             class_specific=d.class_specific_context, num_classes=num_classes)


@torch.no_grad()
def encode_prompts(conditioner: PromptConditioner, prompts, batch_size: int = 256) -> torch.Tensor:
    """E_n (Eq. 1) of every prompt, computed once (N, L, d) on the CPU."""
    return torch.cat([conditioner.encode(prompts[i:i + batch_size]).cpu()
                      for i in range(0, len(prompts), batch_size)])


class _Denoiser(nn.Module):
    """ε_θ(z_t, t, E_cond) with E_cond composed from the learnable context vectors (Eq. 2-3): the
    UNet and the conditioner as one module, so that DistributedDataParallel averages the
    gradients of both (the text encoder inside is frozen)."""

    def __init__(self, unet, conditioner: PromptConditioner):
        super().__init__()
        self.unet, self.conditioner = unet, conditioner

    def forward(self, z_t, t, E, class_ids, drop, labels=None):
        return predict_noise(self.unet, z_t, t, self.conditioner.compose(E, class_ids, drop), labels)


def label_vectors(Y: torch.Tensor, drop: torch.Tensor, label_dropout: float, shard: Shard,
                  g: torch.Generator) -> torch.Tensor:
    """The multi-hot labels a training batch is conditioned on: each present label dropped with
    probability ``label_dropout`` (so the model also learns partial label sets), all of a row's
    labels dropped where its condition is (``drop``: the unconditional label vector is all zeros).
    The draws come from ``g`` for the whole global batch, cut to ``shard``'s rows (as the noise)."""
    keep = (torch.rand((shard.size, Y.shape[1]), generator=g) >= label_dropout)[shard.rows]
    return Y.float() * keep.to(Y.device) * (~drop).float()[:, None]


def denoising_target(noise, z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict: ε (Eq. 3) or, with ``prediction_type: v_prediction``,
    v = α_t ε − σ_t z_0 (the scheduler's ``get_velocity``)."""
    return eps if noise.config.prediction_type == "epsilon" else noise.get_velocity(z0, eps, t)


def loss_weights(noise, t: torch.Tensor, snr_gamma: float | None) -> torch.Tensor | None:
    """Min-SNR-γ weights per sample (Hang et al. 2023, as diffusers' example trainers compute them):
    min(SNR(t), γ) / SNR(t) for ε-prediction, min(SNR(t), γ) / (SNR(t) + 1) for v-prediction;
    None (equal weights, Eq. 3) when ``snr_gamma`` is null."""
    if snr_gamma is None:
        return None
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise, t)
    base = snr + 1 if noise.config.prediction_type == "v_prediction" else snr
    return torch.clamp(snr, max=snr_gamma) / base


def _latent_rows(cfg, image_set, idx, class_set, conditioner, vae, counts, groups, seed: int, device):
    """The rows ``idx`` of ``image_set`` as the UNet's training data (posterior latents, prompt
    encodings, rarest-class ids by the training set's ``counts``, labels) and each row's copies
    per epoch (:func:`epoch_rows`)."""
    prompts = training_prompts(image_set, class_set, seed)
    E = encode_prompts(conditioner, [prompts[i] for i in idx])
    cids = torch.from_numpy(rarest_class(image_set.Y[idx], counts))
    Y = torch.from_numpy(image_set.Y[idx].astype(np.float32))
    repeats = torch.from_numpy(np.repeat(np.arange(len(idx)), epoch_rows(cfg, image_set.Y[idx], groups)))
    mu, sd = encode_latents(vae, image_set.images[idx], device)
    return TensorBatches(mu, device, sd=sd, E=E, c=cids, y=Y), repeats, mu.shape[-1]


def fit_prompt_diffusion(cfg, class_set, train_set, select_set, vae: AutoencoderKL, seed: int, device,
                         work: Path, groups=None, pool=None) -> None:
    """Train the UNet and context vectors (Eq. 3) on ``train_set`` in ``vae``'s latent space into
    ``work`` (the ``prompt-diffusion`` stage); the held-out probe is drawn from ``select_set``;
    ``groups`` (each class's group) say which classes the tail-balanced batches balance.

    ``pool`` (with ``diffusion.pretrain_pool`` > 0): rows disjoint from every split that the model
    learns from first, ``diffusion.pretrain_epochs`` epochs on the ``pretrain_pool`` rarest-first
    of them (their own labels and prompts; the same batches, optimiser and EMA), then
    ``diffusion.epochs`` on the training rows: the paper's generator was pretrained on other
    patients' radiographs (RoentGen) before it met the training set. Each phase resumes on its own."""
    d = cfg.diffusion
    procs = processes()
    procs.check_device(device)
    if d.pretrain_pool and pool is None:
        raise ValueError("diffusion.pretrain_pool > 0 needs the pool's images")
    idx = diffusion_rows(cfg, train_set, seed)
    seed_everything(seed, cfg.deterministic)
    counts = train_set.Y.sum(0)
    conditioner = build_conditioner(cfg, len(class_set.classes)).to(device)
    latents, repeats, size = _latent_rows(cfg, train_set, idx, class_set, conditioner, vae, counts, groups, seed, device)
    n_labels = len(class_set.classes)
    # a fixed held-out probe: 256 selection images, fixed noise and timesteps (comparable across runs)
    n_probe = min(256, len(select_set))
    v_mu, _ = encode_latents(vae, select_set.images[:n_probe], device)
    v_E = encode_prompts(conditioner, training_prompts(select_set, class_set, seed)[:n_probe])
    v_c = torch.from_numpy(rarest_class(select_set.Y[:n_probe], counts))
    v_y = torch.from_numpy(select_set.Y[:n_probe].astype(np.float32)) if d.label_condition else None
    gp = torch.Generator().manual_seed(12345)
    v_eps = torch.randn(v_mu.shape, generator=gp)
    v_t = torch.randint(0, d.train_timesteps, (n_probe,), generator=gp)

    unet = build_unet(size, d.latent_channels, tuple(d.unet_channels), conditioner.dim,
                      d.attention_levels, pooled_condition=d.pooled_condition,
                      label_dim=n_labels if d.label_condition else 0).to(device)
    noise = DDPMScheduler(num_train_timesteps=d.train_timesteps, beta_schedule=d.beta_schedule,
                          prediction_type=d.prediction_type,
                          clip_sample=False)   # latents are not confined to [-1, 1]
    if not conditioner.m:
        conditioner.context.requires_grad_(False)     # no context vectors: nothing of the conditioner learns
    trainable = [p for p in unet.parameters()] + ([conditioner.context] if conditioner.m else [])
    opt = torch.optim.AdamW(trainable, lr=d.lr, weight_decay=1e-2)
    ema = EMAModel(unet.parameters(), decay=d.ema_decay)
    parts = {"model": unet, "context": conditioner, "optimizer": opt, "ema": ema}
    denoiser = procs.wrap(_Denoiser(unet, conditioner))
    context_start = conditioner.context.detach().clone()

    def epoch_on(latents: TensorBatches, repeats: torch.Tensor):
        """One epoch over ``latents`` (each row ``repeats`` times): the pool's or the training rows'."""
        return lambda g: epoch(g, latents, repeats)

    def epoch(g, latents, repeats):
        denoiser.train()
        losses, grads = [], []
        order = repeats[torch.randperm(len(repeats), generator=g)]
        for b in latents.batches(order, d.batch_size, procs.rank, procs.size):
            z_t, eps, t, z0 = noised_batch(noise, b.x, b.targets["sd"], b.shard, g, with_clean=True)
            drop = (torch.rand(b.shard.size, generator=g) < d.cond_dropout)[b.shard.rows].to(device)
            labels = None
            if d.label_condition:
                labels = label_vectors(b.targets["y"], drop, d.label_dropout, b.shard, g)
            with autocast(device, d.amp):
                pred = denoiser(z_t, t, b.targets["E"], b.targets["c"], drop, labels)
            err = ((pred.float() - denoising_target(noise, z0, eps, t)) ** 2).flatten(1).mean(1)      # Eq. 3
            w = loss_weights(noise, t, d.snr_gamma)
            loss = (err if w is None else err * w).mean() * b.shard.scale
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if conditioner.m and conditioner.context.grad is not None:
                grads.append(conditioner.context.grad.detach().norm())
            opt.step()
            ema.step(unet.parameters())
            losses.append(loss.detach())
        shift = (conditioner.context.detach() - context_start).norm() / context_start.norm().clamp_min(1e-12)
        return {"loss": procs.mean_of_steps(losses),
                "heldout_loss": _probe_loss(unet, ema, conditioner, noise, v_mu, v_E, v_c, v_eps, v_t, device, v_y),
                "context_grad_norm": float(torch.stack(grads).mean()) if grads else 0.0,
                "context_shift": float(shift) if conditioner.m else 0.0}

    pool_rows = 0
    if d.pretrain_pool:     # first the pool (its own checkpoint folder: a finished phase is restored, not rerun)
        pidx = diffusion_rows(cfg, pool, seed, n=d.pretrain_pool)
        pool_latents, pool_repeats, _ = _latent_rows(cfg, pool, pidx, class_set, conditioner, vae, counts, groups,
                                                     seed, device)
        (work / "pool").mkdir(exist_ok=True)
        pool_history = train_epochs(work / "pool", parts, d.pretrain_epochs, seed * 104_729 + 7_919,
                                    "pretraining the diffusion UNet on the pool", "pool",
                                    epoch_on(pool_latents, pool_repeats), procs)
        pool_rows = len(pidx)
        del pool_latents, pool_repeats
        if procs.is_main:
            pd.DataFrame(pool_history).to_csv(work / "pool_history.csv", index=False)
    history = train_epochs(work, parts, d.epochs, seed * 104_729, "training the diffusion UNet", "unet",
                           epoch_on(latents, repeats), procs)
    ema.copy_to(unet.parameters())
    unet.eval()
    pipe = PromptDiffusionPipeline(vae=vae, unet=unet, scheduler=DDIMScheduler.from_config(noise.config),
                                   text_encoder=conditioner.encoder, tokenizer=conditioner.tokenizer,
                                   context=ContextVectors.from_conditioner(conditioner,
                                                                           n_labels if d.label_condition else 0))
    if procs.is_main:
        pipe.save_pretrained(work / "pipeline")
        pd.DataFrame(history).to_csv(work / "history.csv", index=False)
        atomic_write_json(work / "rows.json", {"rows": len(idx), "pool rows": pool_rows,
                                               "device": str(device), "processes": procs.size})
        (work / "last.pt").unlink(missing_ok=True)
        (work / "pool" / "last.pt").unlink(missing_ok=True)


def noised_batch(noise, mu: torch.Tensor, sd: torch.Tensor, shard: Shard, g: torch.Generator,
                 with_clean: bool = False):
    """The input of one denoising step (Eq. 3) for the rows of ``shard`` (``mu``, ``sd``: their
    posterior means and deviations): z_0 drawn from N(mu, sd²), noise ε and timesteps t, all drawn
    from ``g`` for the whole global batch and cut to this process's rows; returns (z_t, ε, t), and
    z_0 after them with ``with_clean``."""
    shape = (shard.size, *mu.shape[1:])
    e0 = torch.randn(shape, generator=g)[shard.rows].to(mu.device)
    eps = torch.randn(shape, generator=g)[shard.rows].to(mu.device)
    t = torch.randint(0, noise.config.num_train_timesteps, (shard.size,), generator=g)[shard.rows].to(mu.device)
    z0 = mu + sd * e0
    return (noise.add_noise(z0, eps, t), eps, t) + ((z0,) if with_clean else ())


@torch.no_grad()
def _probe_loss(unet, ema, conditioner, noise, mu, E, cids, eps, t, device, labels=None) -> float:
    """Eq. 3 on the fixed held-out probe, with the EMA weights (what sampling will use): the
    unweighted error of the model's prediction target (ε, or v), conditioned on the probe rows'
    prompts (and labels, for a label-conditioned model)."""
    ema.store(unet.parameters())
    ema.copy_to(unet.parameters())
    unet.eval()
    total = 0.0
    for b in torch.arange(len(mu)).split(128):
        z_t = noise.add_noise(mu[b], eps[b], t[b])
        cond = conditioner.compose(E[b].to(device), cids[b].to(device))
        pred = predict_noise(unet, z_t.to(device), t[b].to(device), cond, None if labels is None else labels[b].to(device))
        target = denoising_target(noise, mu[b], eps[b], t[b]).to(device)
        total += torch.nn.functional.mse_loss(pred.float(), target, reduction="sum").item()
    ema.restore(unet.parameters())
    unet.train()
    return total / eps.numel()


# ----------------------------------------------------------------------------- checkpoints

def train_epochs(work: Path, parts: dict, epochs: int, seed_key: int, desc: str, stage: str, run_epoch,
                 procs: Processes | None = None) -> list:
    """The epoch loop every diffusion trainer shares: resume ``parts`` from the last checkpoint,
    run ``run_epoch(g)`` with a generator seeded by ``seed_key + epoch`` (its dict becomes the
    epoch's history row), checkpoint (the main process), call the ``_after_epoch`` hook. Returns
    the history. Every process resumes from the same checkpoint."""
    procs = procs or Processes()
    start, history = _resume(work, parts, procs)
    procs.barrier()     # every process has read the checkpoint before the main one writes the next
    for epoch in tqdm(range(start, epochs), desc=desc, unit="epoch", initial=start, total=epochs,
                      disable=not procs.is_main):
        history.append({"epoch": epoch + 1, **run_epoch(torch.Generator().manual_seed(seed_key + epoch))})
        if procs.is_main:
            _checkpoint(work, parts, epoch, history)
        _after_epoch(stage, epoch)
    return history


def _checkpoint(work: Path, parts: dict, epoch: int, history: list) -> None:
    state = {k: _state(v) for k, v in parts.items()}
    state.update(epoch=epoch, history=history, rng=torch.get_rng_state())
    save_checkpoint(state, work / "last.pt")


def _state(part):
    """What a checkpoint keeps of a part: the conditioner's context only (its encoder is frozen)."""
    return part.context.detach().clone() if isinstance(part, PromptConditioner) else part.state_dict()


def _resume(work: Path, parts: dict, procs: Processes) -> tuple[int, list]:
    """The first epoch to run and the history so far, ``parts`` restored from ``last.pt``; (0, [])
    when there is no checkpoint or it cannot be used (moved aside with a warning,
    :func:`trcgl.checkpoints.load_resume_checkpoint`): the training starts over."""
    path = work / "last.pt"

    def restore(state: dict) -> tuple[int, list]:
        start, history = state["epoch"] + 1, list(state["history"])
        if start < 1 or len(history) != start:
            raise ValueError(f"epoch {start} with {len(history)} history rows")
        for k, v in parts.items():
            if isinstance(v, PromptConditioner):
                if state[k].shape != v.context.shape:
                    raise ValueError(f"context vectors of shape {tuple(state[k].shape)}, not {tuple(v.context.shape)}")
                v.context.data.copy_(state[k])
            elif isinstance(v, EMAModel):
                _load_ema(v, state[k], parts["model"])
            else:
                v.load_state_dict(state[k])
        torch.set_rng_state(state["rng"])
        return start, history

    rollback = [_Context(v) if isinstance(v, PromptConditioner) else v for v in parts.values()]
    resumed = load_resume_checkpoint(path, restore, rollback=rollback, main=procs.is_main)
    if resumed is None:
        return 0, []
    log.info("resuming %s at epoch %d", work.name, resumed[0] + 1)
    return resumed


def _load_ema(ema: EMAModel, state: dict, model: nn.Module) -> None:
    """Restore an EMA of ``model``'s weights; its weights go where the model's are (diffusers keeps
    the loaded tensors where ``torch.load`` put them, the CPU, and its next step would then mix
    devices). Raises ValueError when they are not the model's shapes."""
    ema.load_state_dict(state)
    params = list(model.parameters())
    if [tuple(p.shape) for p in ema.shadow_params] != [tuple(p.shape) for p in params]:
        raise ValueError("the EMA weights are not of the model's shapes")
    ema.to(device=params[0].device)


class _Context:
    """The learnable context vectors of a conditioner as something with a state dict (what a
    failed resume rolls back)."""

    def __init__(self, conditioner: PromptConditioner):
        self.conditioner = conditioner

    def state_dict(self) -> dict:
        return {"context": self.conditioner.context.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.conditioner.context.data.copy_(state["context"])
