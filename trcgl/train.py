"""The two-stage trainer (paper Sec. 4.2), resumable; the ``classifier`` stage caches it.

Stage 1 (warm-up): the backbone is frozen and only the heads and the label graph learn
(paper: 10 epochs, lr 1e-3). Stage 2 (fine-tuning): everything learns, the backbone at a lower
learning rate than the heads and the graph (paper: 50 epochs, 1.5e-5 and 1.5e-4). AdamW with a
cosine schedule within each stage, BCE-with-logits weighted per sample (synthetic images carry
their own weight), bf16 autocast on CUDA. After every epoch the model is scored on the
**selection** split and a checkpoint is written; the best epoch by selection mAP is kept. The
test split is never seen here: reported numbers come from the ``predictions`` stage.

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

from .cache import atomic_torch_save, atomic_write_json, load_npy, save_npy
from .data.datasets import ImageSet, XrayDataset, make_loader, normalisation, training_dataset
from .data.sampling import RepeatedDataset, image_repeats
from .ema import evaluated, restore_ema, stage_ema
from .losses import TrainingLoss
from .metrics import evaluate
from .models import build_model
from .runtime import seed_everything

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: nn.Module            # the best epoch's weights, in eval mode
    history: pd.DataFrame       # one row per epoch: stage, loss, selection mAP / mAUC
    selection_probs: np.ndarray  # the best model's probabilities on the selection split (N, C)
    best_epoch: int
    mean: float                 # input normalisation (training pixels)
    std: float
    folder: Path | None


def _after_epoch(epoch: int) -> None:
    """A hook called after each epoch's checkpoint (tests use it to simulate an interruption)."""


class ExtraSchedule:
    """Which part of the extra (synthetic / inpainted) set an epoch trains on. This one: all of it,
    every epoch. Other schedules (progressive incremental learning, :mod:`trcgl.inpaint.pil`)
    subclass it; the trainer knows nothing else about them."""

    name = "all"

    def part(self, extra: ImageSet, epoch: int, seed: int) -> ImageSet | None:
        """The extra images of 0-based ``epoch`` (None: none this epoch)."""
        return extra

    @property
    def varies(self) -> bool:
        """Whether the part changes from epoch to epoch (then each epoch gets its own dataset)."""
        return False


ALL_AT_ONCE = ExtraSchedule()


def _schedule(cfg) -> list[str]:
    return ["warmup"] * cfg.train.warmup_epochs + ["finetune"] * cfg.train.finetune_epochs


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


def epoch_datasets(cfg, train_set: ImageSet, extra: ImageSet | None, seed: int, epochs: int,
                   schedule: ExtraSchedule = ALL_AT_ONCE) -> list:
    """The training data of every epoch: the real set plus the part of the extra set that
    ``schedule`` admits, weighted for the epoch's stage (:func:`stage_weighted`); with
    ``train.sampler: repeat_factor`` each image repeated as the released code's sampler says, from
    the class counts of :func:`counted_labels`. The same object is reused while nothing changes
    (every epoch, or every epoch of a stage when the extra weight depends on the stage)."""
    if cfg.train.sampler not in SAMPLERS:
        raise ValueError(f"train.sampler must be one of {SAMPLERS}, got {cfg.train.sampler!r}")
    norm = normalisation(train_set)
    counts = counted_labels(cfg, train_set, extra).sum(0)

    def data(epoch: int):
        part = schedule.part(extra, epoch, seed) if extra is not None else None
        part = stage_weighted(cfg, part, epoch)
        ds = training_dataset(train_set, part, hflip=cfg.train.hflip, seed=seed, norm=norm)
        if cfg.train.sampler == "repeat_factor":   # the released code's sampler (trcgl.data.sampling)
            rows = train_set.Y if part is None else np.concatenate([train_set.Y, part.Y])
            ds = RepeatedDataset(ds, image_repeats(rows, counts, cfg.train.repeat_threshold, cfg.train.max_repeats))
        return ds

    if extra is not None and schedule.varies:
        return [data(e) for e in range(epochs)]
    per_stage = {}
    for e in range(epochs):
        per_stage.setdefault(_stage_of(cfg, e), data(e))
    return [per_stage[_stage_of(cfg, e)] for e in range(epochs)]


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


def fit_classifier(cfg, train_set: ImageSet, select_set: ImageSet, groups, extra: ImageSet | None, seed: int,
                   device, work: Path, schedule: ExtraSchedule = ALL_AT_ONCE) -> None:
    """Train the model ``cfg`` describes into ``work`` (the ``classifier`` stage): the best epoch
    by selection-split mAP is kept (best.pt, selection_probs.npy, history.csv, result.json)."""
    seed_everything(seed, cfg.deterministic)
    classes = train_set.classes
    labels = counted_labels(cfg, train_set, extra)
    model = build_model(cfg, len(classes), labels).to(device)
    mean, std = normalisation(train_set)
    loss_fn = TrainingLoss(cfg, labels.sum(0))
    plan = _schedule(cfg)
    sets = epoch_datasets(cfg, train_set, extra, seed, len(plan), schedule)
    batches = [math.ceil(len(ds) / cfg.train.batch_size) for ds in sets]

    def stage_steps(stage: str) -> int:
        return sum(b for b, s in zip(batches, plan) if s == stage)

    ckpt_path = work / "last.pt"
    start, history, best = 0, [], (-1.0, -1)
    stage, (opt, sched) = plan[0], _optimizer(cfg, model, plan[0], stage_steps(plan[0]))
    ema = stage_ema(cfg, model, stage)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
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
        P = predict(kept, select_set, mean, std, device)
        ev = evaluate(select_set.Y, P, classes, groups, cfg.eval.f1_threshold, empty=cfg.eval.empty_classes)
        history.append({"epoch": epoch + 1, "stage": stage, "loss": float(np.mean(losses)),
                        "selection_mAP": ev.means["mAP"], "selection_mAUC": ev.means["mAUC"]})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", mAP=f"{ev.means['mAP']:.3f}")
        if ev.means["mAP"] > best[0]:
            best = (ev.means["mAP"], epoch + 1)
            atomic_torch_save(kept.state_dict(), work / "best.pt")
            save_npy(work / "selection_probs.npy", P)
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "epoch": epoch, "stage": stage,
                            "history": history, "best": list(best), "rng": torch.get_rng_state(),
                            **({"ema": ema.module.state_dict()} if ema is not None else {})}, ckpt_path)
        _after_epoch(epoch)
    pd.DataFrame(history).to_csv(work / "history.csv", index=False)
    atomic_write_json(work / "result.json", {"best_epoch": best[1], "best_selection_mAP": best[0],
                                             "mean": mean, "std": std, "device": str(device)})
    ckpt_path.unlink()  # the finished artifact keeps only the best weights


def load_classifier(cfg, folder: Path, num_classes: int, label_matrix: np.ndarray, device) -> TrainResult:
    """A trained classifier from its stage folder (weights loaded with ``weights_only=True``)."""
    meta = json.loads((folder / "result.json").read_text())
    model = build_model(cfg, num_classes, label_matrix)
    model.load_state_dict(torch.load(folder / "best.pt", map_location="cpu", weights_only=True))
    model.to(device).eval()
    return TrainResult(model, pd.read_csv(folder / "history.csv"), load_npy(folder / "selection_probs.npy"),
                       meta["best_epoch"], meta["mean"], meta["std"], folder)
