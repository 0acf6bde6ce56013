"""The two-stage trainer (paper Sec. 4.2), cached by configuration and resumable.

Stage 1 (warm-up): the backbone is frozen and only the heads and the label graph learn
(paper: 10 epochs, lr 1e-3). Stage 2 (fine-tuning): everything learns, the backbone at a lower
learning rate than the heads and the graph (paper: 50 epochs, 1.5e-5 and 1.5e-4). AdamW with a
cosine schedule within each stage, BCE-with-logits weighted per sample (synthetic images carry
their own weight), bf16 autocast on CUDA. After every epoch the model is scored on the
validation set and a checkpoint is written; the best epoch by validation mAP is kept.

An interrupted run resumes from its last checkpoint and ends with the same weights as an
uninterrupted one on CPU: the data order of each epoch is drawn from a generator seeded by
(seed, epoch), and the global random state is saved with the checkpoint.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .cache import ArtifactCache, array_digest, atomic_torch_save
from .data.datasets import ImageSet, XrayDataset, make_loader, normalisation, training_dataset
from .losses import TrainingLoss
from .metrics import evaluate
from .models import build_model
from .runtime import seed_everything, select_device

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: nn.Module            # the best epoch's weights, in eval mode
    history: pd.DataFrame       # one row per epoch: stage, loss, validation mAP / mAUC
    val_probs: np.ndarray       # the best model's validation probabilities (N, C)
    best_epoch: int
    mean: float                 # input normalisation (training pixels)
    std: float
    folder: Path


def _after_epoch(epoch: int) -> None:
    """A hook called after each epoch's checkpoint (tests use it to simulate an interruption)."""


def image_set_key(image_set: ImageSet) -> str:
    """A short digest of an image set's pixels, labels and weights (part of the cache key)."""
    arrays = [image_set.images, image_set.Y, image_set.weights]
    if "progressive" in image_set.rows:   # which rows PIL schedules (inpainting chapter)
        arrays.append(image_set.rows["progressive"].fillna(True).to_numpy(bool))
    return array_digest(*arrays)


def train_classifier(cfg, train_set: ImageSet, val_set: ImageSet, groups, extra: ImageSet | None = None,
                     seed: int | None = None, cache: ArtifactCache | None = None, name: str = "classifier") -> TrainResult:
    """Train (or load) the model the configuration describes; returns the best epoch's model."""
    cache = cache or ArtifactCache()
    seed = cfg.seed if seed is None else seed
    params = {
        "stage": "classifier-v1", "model": key_view(cfg.model.to_dict(), "model"),
        "train": key_view(cfg.train.to_dict(), "train"),
        "seed": seed, "train_set": image_set_key(train_set), "val_set": image_set_key(val_set),
        "extra": image_set_key(extra) if extra is not None else None,
    }
    device = select_device(cfg.device)
    folder = cache.get_or_compute(name, params, lambda work: _fit(cfg, train_set, val_set, groups, extra,
                                                                   seed, device, work))
    meta = json.loads((folder / "result.json").read_text())
    model = build_model(cfg, len(train_set.classes), train_set.Y)
    model.load_state_dict(torch.load(folder / "best.pt", map_location="cpu", weights_only=True))
    model.to(device).eval()
    return TrainResult(model, pd.read_csv(folder / "history.csv"), np.load(folder / "val_probs.npy"),
                       meta["best_epoch"], meta["mean"], meta["std"], folder)


#: Options added after artifacts were cached: at these values they leave the cache key unchanged,
#: so a new option never invalidates models trained before it existed.
NEUTRAL = {
    "model": {"arch": "trcgl", "head": "linear", "head_scale": 10.0, "csra_lam": 0.1, "csra_temperature": 1.0},
    "train": {"loss": "bce", "ldam_max_margin": 0.5, "drw_epoch": None, "drw_beta": 0.9999,
              "extra_schedule": "all", "pil_beta": 0.5},
}
# the released code's options (issue 14), at their defaults (the paper's text)
NEUTRAL["model"].update({"final_norm": False, "feature_batchnorm": False, "gate_bias": True, "adjacency": "text",
                         "gcn_cosine_scale": 10.0, "gcn_projection": False})


def key_view(section: dict, name: str) -> dict:
    """A config section without the options that sit at their neutral value."""
    neutral = NEUTRAL.get(name, {})
    return {k: v for k, v in section.items() if not (k in neutral and neutral[k] == v)}


def _schedule(cfg) -> list[str]:
    return ["warmup"] * cfg.train.warmup_epochs + ["finetune"] * cfg.train.finetune_epochs


EXTRA_SCHEDULES = ("all", "pil")


def epoch_datasets(cfg, train_set: ImageSet, extra: ImageSet | None, seed: int, epochs: int) -> list:
    """The training data of every epoch (the same object each epoch unless PIL schedules the extra set)."""
    norm = normalisation(train_set)
    if extra is None or cfg.train.extra_schedule == "all":
        return [epoch_dataset(cfg, train_set, extra, seed, 0, norm)] * epochs
    return [epoch_dataset(cfg, train_set, extra, seed, e, norm) for e in range(epochs)]


def epoch_dataset(cfg, train_set: ImageSet, extra: ImageSet | None, seed: int, epoch: int, norm=None):
    """The training data of one (0-based) epoch: the real set plus the extra set, all of it
    (``train.extra_schedule: all``) or the part progressive incremental learning admits by then
    (``pil``, Eq. 3 of the inpainting paper; see :mod:`trcgl.inpaint.pil`)."""
    schedule = cfg.train.extra_schedule
    if schedule not in EXTRA_SCHEDULES:
        raise ValueError(f"train.extra_schedule must be one of {EXTRA_SCHEDULES}, got {schedule!r}")
    if extra is not None and schedule == "pil":
        from .inpaint.pil import pil_subset

        extra = pil_subset(extra, epoch, cfg.train.pil_beta, seed)
    return training_dataset(train_set, extra, hflip=cfg.train.hflip, seed=seed, norm=norm)


def _optimizer(cfg, model, stage: str, steps: int):
    t = cfg.train
    if stage == "warmup":
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        groups = [{"params": model.head_parameters(), "lr": t.warmup_lr}]
    else:
        for p in model.backbone.parameters():
            p.requires_grad_(True)
        groups = [{"params": list(model.backbone.parameters()), "lr": t.backbone_lr},
                  {"params": model.head_parameters(), "lr": t.head_lr}]
    opt = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0))))
    return opt, sched


@torch.no_grad()
def predict(model: nn.Module, image_set: ImageSet, mean: float, std: float, device: torch.device,
            batch_size: int = 128, with_attention: bool = False):
    """Sigmoid probabilities (N, C), and the attention maps (N, C, h, w) when asked."""
    model.eval()
    probs, maps = [], []
    for x, _, _ in make_loader(XrayDataset(image_set, mean, std), batch_size, shuffle=False):
        out = model(x.to(device))
        probs.append(torch.sigmoid(out["logits"].float()).cpu())
        if with_attention and "attention" in out:
            maps.append(out["attention"].float().cpu())
    P = torch.cat(probs).numpy()
    return (P, torch.cat(maps).numpy() if maps else None) if with_attention else P


def _fit(cfg, train_set, val_set, groups, extra, seed, device, work: Path) -> None:
    seed_everything(seed, cfg.deterministic)
    classes = train_set.classes
    model = build_model(cfg, len(classes), train_set.Y).to(device)
    mean, std = normalisation(train_set)
    loss_fn = TrainingLoss(cfg, train_set.Y.sum(0))
    plan = _schedule(cfg)
    sets = epoch_datasets(cfg, train_set, extra, seed, len(plan))
    batches = [math.ceil(len(ds) / cfg.train.batch_size) for ds in sets]

    def stage_steps(stage: str) -> int:
        return sum(b for b, s in zip(batches, plan) if s == stage)

    ckpt_path = work / "last.pt"
    start, history, best = 0, [], (-1.0, -1)
    stage, (opt, sched) = plan[0], _optimizer(cfg, model, plan[0], stage_steps(plan[0]))
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        start, history, best = ckpt["epoch"] + 1, ckpt["history"], tuple(ckpt["best"])
        if start < len(plan):
            stage = plan[start]
            opt, sched = _optimizer(cfg, model, stage, stage_steps(stage))
            if ckpt["stage"] == stage:
                opt.load_state_dict(ckpt["optimizer"])
                sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        log.info("resuming %s at epoch %d of %d", work.name, start + 1, len(plan))
    use_amp = cfg.train.amp and device.type == "cuda"
    bar = tqdm(range(start, len(plan)), desc="training", unit="epoch", initial=start, total=len(plan))
    for epoch in bar:
        if plan[epoch] != stage:
            stage = plan[epoch]
            opt, sched = _optimizer(cfg, model, stage, stage_steps(stage))
        model.train()
        ds = sets[epoch]
        for part in getattr(ds, "datasets", [ds]):
            part.set_epoch(epoch)
        losses = []
        for x, y, w in make_loader(ds, cfg.train.batch_size, shuffle=True, seed=seed * 100_003 + epoch):
            x, y, w = x.to(device), y.to(device), w.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)["logits"]
            loss = loss_fn(logits.float(), y, w, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        P = predict(model, val_set, mean, std, device)
        ev = evaluate(val_set.Y, P, classes, groups, cfg.eval.f1_threshold)
        history.append({"epoch": epoch + 1, "stage": stage, "loss": float(np.mean(losses)),
                        "val_mAP": ev.means["mAP"], "val_mAUC": ev.means["mAUC"]})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", mAP=f"{ev.means['mAP']:.3f}")
        if ev.means["mAP"] > best[0]:
            best = (ev.means["mAP"], epoch + 1)
            atomic_torch_save(model.state_dict(), work / "best.pt")
            np.save(work / "val_probs.npy", P)
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "epoch": epoch, "stage": stage,
                            "history": history, "best": list(best), "rng": torch.get_rng_state()}, ckpt_path)
        _after_epoch(epoch)
    pd.DataFrame(history).to_csv(work / "history.csv", index=False)
    (work / "result.json").write_text(json.dumps({"best_epoch": best[1], "best_val_mAP": best[0],
                                                  "mean": mean, "std": std, "device": str(device)}))
    ckpt_path.unlink()  # the finished artifact keeps only the best weights
