"""The two-stage trainer (paper Sec. 4.2), cached by configuration and resumable.

Stage 1 (warm-up): the backbone is frozen and only the heads and the label graph learn
(paper: 10 epochs, lr 1e-3). Stage 2 (fine-tuning): everything learns, the backbone at a lower
learning rate than the heads and the graph (paper: 50 epochs, 1.5e-5 and 1.5e-4). AdamW with a
cosine schedule within each stage, BCE-with-logits weighted per sample (synthetic images carry
their own weight), bf16 autocast on CUDA. After every epoch the model is scored on the
validation set and a checkpoint is written; the best epoch by validation mAP is kept.

The released code's recipe is a set of options (``trcgl/configs/presets/released.yaml``), each in
its own module and only called here: the loss (:mod:`trcgl.losses`), repeat-factor sampling
(:mod:`trcgl.data.sampling`), the EMA of the fine-tuning weights (:mod:`trcgl.ema`), gradient
clipping, a loss weight of the extra images per stage, and class counts that include the extra rows.

An interrupted run resumes from its last checkpoint and ends with the same weights as an
uninterrupted one on CPU: the data order of each epoch is drawn from a generator seeded by
(seed, epoch), and the global random state is saved with the checkpoint.
"""
from __future__ import annotations

import dataclasses
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
from .data.sampling import RepeatedDataset, image_repeats
from .ema import evaluated, restore_ema, stage_ema
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
    selection = key_view({"empty_classes": cfg.eval.empty_classes}, "eval")   # the convention that picks the best epoch
    if selection:
        params["eval"] = selection
    device = select_device(cfg.device)
    folder = cache.get_or_compute(name, params, lambda work: _fit(cfg, train_set, val_set, groups, extra,
                                                                   seed, device, work))
    meta = json.loads((folder / "result.json").read_text())
    model = build_model(cfg, len(train_set.classes), counted_labels(cfg, train_set, extra))
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
NEUTRAL["train"].update({"db_beta": 0.9999, "db_max_margin": 0.2, "db_weight_power": 0.5,
                         "counts_include_extra": False, "sampler": "none", "repeat_threshold": 0.01,
                         "max_repeats": 10, "ema": False, "ema_decay": 0.9999, "grad_clip": None,
                         "extra_warmup_weight": None, "extra_finetune_weight": None})
NEUTRAL["eval"] = {"empty_classes": "exclude"}


def key_view(section: dict, name: str) -> dict:
    """A config section without the options that sit at their neutral value."""
    neutral = NEUTRAL.get(name, {})
    return {k: v for k, v in section.items() if not (k in neutral and neutral[k] == v)}


def _schedule(cfg) -> list[str]:
    return ["warmup"] * cfg.train.warmup_epochs + ["finetune"] * cfg.train.finetune_epochs


EXTRA_SCHEDULES = ("all", "pil")
SAMPLERS = ("none", "repeat_factor")


def counted_labels(cfg, train_set: ImageSet, extra: ImageSet | None = None):
    """The label rows that class counts (loss, sampler) and the label graph come from: the real
    training rows, plus the extra rows with ``train.counts_include_extra`` (the released code)."""
    if extra is None or not cfg.train.counts_include_extra:
        return train_set.Y
    return np.concatenate([train_set.Y, extra.Y])


def _stage_of(cfg, epoch: int) -> str:
    return "warmup" if epoch < cfg.train.warmup_epochs else "finetune"


def stage_weighted(cfg, extra: ImageSet | None, epoch: int) -> ImageSet | None:
    """The extra set with the loss weight of the epoch's stage (``train.extra_warmup_weight`` /
    ``extra_finetune_weight``; null keeps the set's own weights)."""
    t = cfg.train
    weight = t.extra_warmup_weight if _stage_of(cfg, epoch) == "warmup" else t.extra_finetune_weight
    if extra is None or weight is None:
        return extra
    return dataclasses.replace(extra, weights=np.full(len(extra), weight, np.float32))


def epoch_datasets(cfg, train_set: ImageSet, extra: ImageSet | None, seed: int, epochs: int) -> list:
    """The training data of every epoch (the same object each epoch, or each stage when the extra
    set's weight depends on the stage, unless PIL schedules the extra set)."""
    norm = normalisation(train_set)
    if extra is None or cfg.train.extra_schedule == "all":
        per_stage = {}
        for e in range(epochs):
            if _stage_of(cfg, e) not in per_stage:
                per_stage[_stage_of(cfg, e)] = epoch_dataset(cfg, train_set, extra, seed, e, norm)
        return [per_stage[_stage_of(cfg, e)] for e in range(epochs)]
    return [epoch_dataset(cfg, train_set, extra, seed, e, norm) for e in range(epochs)]


def epoch_dataset(cfg, train_set: ImageSet, extra: ImageSet | None, seed: int, epoch: int, norm=None):
    """The training data of one (0-based) epoch: the real set plus the extra set, all of it
    (``train.extra_schedule: all``) or the part progressive incremental learning admits by then
    (``pil``, Eq. 3 of the inpainting paper; see :mod:`trcgl.inpaint.pil`), the extra images
    weighted for the epoch's stage (:func:`stage_weighted`); with ``train.sampler: repeat_factor``
    each image repeated as the released code's sampler says, from the class counts of
    :func:`counted_labels` (the whole extra set when it is counted)."""
    schedule = cfg.train.extra_schedule
    if schedule not in EXTRA_SCHEDULES:
        raise ValueError(f"train.extra_schedule must be one of {EXTRA_SCHEDULES}, got {schedule!r}")
    if cfg.train.sampler not in SAMPLERS:
        raise ValueError(f"train.sampler must be one of {SAMPLERS}, got {cfg.train.sampler!r}")
    counts = counted_labels(cfg, train_set, extra).sum(0)
    if extra is not None and schedule == "pil":
        from .inpaint.pil import pil_subset

        extra = pil_subset(extra, epoch, cfg.train.pil_beta, seed)
    extra = stage_weighted(cfg, extra, epoch)
    ds = training_dataset(train_set, extra, hflip=cfg.train.hflip, seed=seed, norm=norm)
    if cfg.train.sampler == "repeat_factor":   # the released code's sampler (trcgl.data.sampling)
        rows = train_set.Y if extra is None else np.concatenate([train_set.Y, extra.Y])
        ds = RepeatedDataset(ds, image_repeats(rows, counts, cfg.train.repeat_threshold, cfg.train.max_repeats))
    return ds


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
    labels = counted_labels(cfg, train_set, extra)
    model = build_model(cfg, len(classes), labels).to(device)
    mean, std = normalisation(train_set)
    loss_fn = TrainingLoss(cfg, labels.sum(0))
    plan = _schedule(cfg)
    sets = epoch_datasets(cfg, train_set, extra, seed, len(plan))
    batches = [math.ceil(len(ds) / cfg.train.batch_size) for ds in sets]

    def stage_steps(stage: str) -> int:
        return sum(b for b, s in zip(batches, plan) if s == stage)

    ckpt_path = work / "last.pt"
    start, history, best = 0, [], (-1.0, -1)
    stage, (opt, sched) = plan[0], _optimizer(cfg, model, plan[0], stage_steps(plan[0]))
    ema = stage_ema(cfg, model, stage)
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
            ema = restore_ema(cfg, model, stage, ckpt.get("ema") if ckpt["stage"] == stage else None)
        torch.set_rng_state(ckpt["rng"])
        log.info("resuming %s at epoch %d of %d", work.name, start + 1, len(plan))
    use_amp = cfg.train.amp and device.type == "cuda"
    bar = tqdm(range(start, len(plan)), desc="training", unit="epoch", initial=start, total=len(plan))
    for epoch in bar:
        if plan[epoch] != stage:
            stage = plan[epoch]
            opt, sched = _optimizer(cfg, model, stage, stage_steps(stage))
            ema = stage_ema(cfg, model, stage, ema)
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
            if cfg.train.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            losses.append(loss.item())
        kept = evaluated(model, ema)   # the EMA weights when train.ema is on
        P = predict(kept, val_set, mean, std, device)
        ev = evaluate(val_set.Y, P, classes, groups, cfg.eval.f1_threshold, empty=cfg.eval.empty_classes)
        history.append({"epoch": epoch + 1, "stage": stage, "loss": float(np.mean(losses)),
                        "val_mAP": ev.means["mAP"], "val_mAUC": ev.means["mAUC"]})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", mAP=f"{ev.means['mAP']:.3f}")
        if ev.means["mAP"] > best[0]:
            best = (ev.means["mAP"], epoch + 1)
            atomic_torch_save(kept.state_dict(), work / "best.pt")
            np.save(work / "val_probs.npy", P)
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "epoch": epoch, "stage": stage,
                            "history": history, "best": list(best), "rng": torch.get_rng_state(),
                            **({"ema": ema.module.state_dict()} if ema is not None else {})}, ckpt_path)
        _after_epoch(epoch)
    pd.DataFrame(history).to_csv(work / "history.csv", index=False)
    (work / "result.json").write_text(json.dumps({"best_epoch": best[1], "best_val_mAP": best[0],
                                                  "mean": mean, "std": std, "device": str(device)}))
    ckpt_path.unlink()  # the finished artifact keeps only the best weights
