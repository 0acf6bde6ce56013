"""The two-stage trainer (paper Sec. 4.2), resumable; the ``classifier`` stage caches it.

Stage 1 (warm-up): the backbone is frozen and only the heads and the label graph learn
(paper: 10 epochs, lr 1e-3). Stage 2 (fine-tuning): everything learns, the backbone at a lower
learning rate than the heads and the graph (paper: 50 epochs, 1.5e-5 and 1.5e-4); with
``train.finetune_stages: N`` only the backbone's last N stages (and the heads) learn, the stages
before them kept frozen in eval mode (a budget's choice, not the paper's). Stage 2 can also
continue another run (``start``: the ``finetune`` stage): the heads' best epoch of a stage 1 on
cached features, which is then this run's epoch 0 (kept when no fine-tuning epoch beats it on
the selection split). AdamW with a
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
(seed, epoch), and the global random state is saved with the checkpoint. A checkpoint that cannot
be used (unreadable, its checksum or shapes wrong, the best-epoch files it vouches for changed) is
set aside with a warning and the training starts over (:mod:`trcgl.checkpoints`).

**Input pipeline** (:mod:`trcgl.data.batches`): the real images and the whole extra set are held
as one uint8 tensor [real; extra] on the device (or pinned), with the labels beside it. An epoch is
a list of row indices (:class:`EpochRows`: the real rows and the extra rows the schedule admits,
each repeated as the sampler says), permuted by a generator seeded by (seed, epoch); batches are
gathered and normalised on the device. The loss weights of the epoch (the stage's extra weight)
and the horizontal flips (drawn from (seed, epoch) for every stored row) are per-row tensors too.

**Several processes** (``accelerate launch -m trcgl run ...``, :mod:`trcgl.runtime`): every
process builds the same model from the same seed and walks the same epoch lists; each trains on
its share of every global batch of ``train.batch_size`` rows, the model wrapped in
DistributedDataParallel (wrapped again when the fine-tuning stage unfreezes the backbone). The
selection split is scored in shares and gathered. Only the main process writes files
(checkpoints, best weights, history); every process resumes from the same checkpoint.
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

from .cache import atomic_torch_save, atomic_write_json, file_sha256, load_npy, save_npy
from .checkpoints import load_resume_checkpoint, save_checkpoint
from .data.augment import augment_images, check_augment
from .data.batches import DeviceTensor, Normalised, TensorBatches, seeded_order, split_range
from .data.datasets import ImageSet, normalisation, take
from .data.padchest import DataError
from .data.sampling import image_repeats
from .ema import evaluated, restore_ema, stage_ema
from .losses import TrainingLoss
from .metrics import ranking_means
from .models import build_model
from .runtime import Processes, autocast, images_per_second, processes, seed_everything, training_throughput

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

    def rows(self, extra: ImageSet, epoch: int, seed: int) -> np.ndarray:
        """Indices of the extra rows 0-based ``epoch`` trains on (empty: none this epoch)."""
        return np.arange(len(extra))

    def part(self, extra: ImageSet, epoch: int, seed: int) -> ImageSet | None:
        """The extra images of 0-based ``epoch`` (None: none this epoch)."""
        rows = self.rows(extra, epoch, seed)
        return take(extra, rows) if len(rows) else None

    @property
    def varies(self) -> bool:
        """Whether the part changes from epoch to epoch (then each epoch gets its own rows)."""
        return False


ALL_AT_ONCE = ExtraSchedule()


def _schedule(cfg) -> list[str]:
    return ["warmup"] * cfg.train.warmup_epochs + ["finetune"] * cfg.train.finetune_epochs


#: The learning rate's factor after the first stall of ``train.plateau_patience`` (ReduceLROnPlateau's 0.1).
PLATEAU_FACTOR = 0.1


def plateau_decisions(scores, patience: int) -> tuple[float, bool]:
    """``train.plateau_patience``: after epochs whose selection scores are ``scores``, the learning
    rate's factor for the next epoch and whether to stop. The rate is divided by 10 once, at the
    first epoch that ends ``patience`` epochs without a better score; training stops when, after
    that, ``patience`` epochs pass without a better score than the best (counted from the later of
    the best epoch and the reduction). A function of the history alone, so a resumed run decides
    as the uninterrupted one did."""
    best, best_at, reduced_at = -math.inf, 0, None
    for i, score in enumerate(scores, 1):
        if score > best:
            best, best_at = score, i
        if reduced_at is None:
            if i - best_at >= patience:
                reduced_at = i
        elif i - max(best_at, reduced_at) >= patience:
            return PLATEAU_FACTOR, True
    return (1.0 if reduced_at is None else PLATEAU_FACTOR), False


SAMPLERS = ("none", "repeat_factor")


def counted_labels(cfg, train_set: ImageSet, extra: ImageSet | None = None):
    """The label rows that class counts (loss, sampler) and the label graph come from: the real
    training rows, plus the extra rows with ``train.counts_include_extra`` (the released code)."""
    if extra is None or not cfg.train.counts_include_extra:
        return train_set.Y
    return np.concatenate([train_set.Y, extra.Y])


def _stage_of(cfg, epoch: int) -> str:
    return "warmup" if epoch < cfg.train.warmup_epochs else "finetune"


def extra_weights(cfg, extra: ImageSet, epoch: int) -> np.ndarray:
    """The loss weights of the extra rows in ``epoch``: the stage's ``train.extra_warmup_weight`` /
    ``extra_finetune_weight`` for every row, or the set's own weights where that is null."""
    t = cfg.train
    weight = t.extra_warmup_weight if _stage_of(cfg, epoch) == "warmup" else t.extra_finetune_weight
    return extra.weights.astype(np.float32) if weight is None else np.full(len(extra), weight, np.float32)


@dataclass
class EpochRows:
    """The training data of one epoch, as indices into the stored rows [real set; whole extra set]."""

    members: np.ndarray   # stored-row indices in dataset order, each as often as the sampler repeats it
    weights: np.ndarray   # (stored rows,) the epoch's loss weight of every stored row

    def __len__(self) -> int:
        return len(self.members)

    def order(self, seed: int) -> torch.Tensor:
        """The epoch's rows in training order: ``members`` permuted by a generator seeded by ``seed``."""
        return seeded_order(self.members, seed)


def epoch_rows(cfg, train_set: ImageSet, extra: ImageSet | None, seed: int, epochs: int,
               schedule: ExtraSchedule = ALL_AT_ONCE) -> list[EpochRows]:
    """The training data of every epoch: the real rows plus the extra rows that ``schedule``
    admits, weighted for the epoch's stage (:func:`extra_weights`); with ``train.sampler:
    repeat_factor`` each row repeated as the released code's sampler says, from the class counts
    of :func:`counted_labels`. The same object is reused while nothing changes (every epoch, or
    every epoch of a stage when the extra weight depends on the stage)."""
    if cfg.train.sampler not in SAMPLERS:
        raise ValueError(f"train.sampler must be one of {SAMPLERS}, got {cfg.train.sampler!r}")
    counts = counted_labels(cfg, train_set, extra).sum(0)
    n = len(train_set)

    def data(epoch: int) -> EpochRows:
        part = schedule.rows(extra, epoch, seed) if extra is not None else np.zeros(0, np.int64)
        members = np.concatenate([np.arange(n), n + np.asarray(part, dtype=np.int64)])
        weights = train_set.weights.astype(np.float32)
        if extra is not None:
            weights = np.concatenate([weights, extra_weights(cfg, extra, epoch)])
        if cfg.train.sampler == "repeat_factor":   # the released code's sampler (trcgl.data.sampling)
            rows = train_set.Y if extra is None else np.concatenate([train_set.Y, extra.Y])
            members = np.repeat(members, image_repeats(rows[members], counts, cfg.train.repeat_threshold,
                                                       cfg.train.max_repeats))
        return EpochRows(members, weights)

    if extra is not None and schedule.varies:
        return [data(e) for e in range(epochs)]
    per_stage = {}
    for e in range(epochs):
        per_stage.setdefault(_stage_of(cfg, e), data(e))
    return [per_stage[_stage_of(cfg, e)] for e in range(epochs)]


def counted_or_stored(train_set: ImageSet, extra: ImageSet | None) -> np.ndarray:
    """The stored rows' labels [real; whole extra set] as float32 (the loss's targets)."""
    Y = train_set.Y if extra is None else np.concatenate([train_set.Y, extra.Y])
    return Y.astype(np.float32)


def stored_pixels(train_set: ImageSet, extra: ImageSet | None) -> np.ndarray:
    """The stored rows' uint8 images [real set; whole extra set]."""
    if extra is None:
        return train_set.images
    if extra.classes != train_set.classes:
        raise DataError("the extra image set has other classes than the training set")
    if extra.size != train_set.size:
        raise DataError(f"the extra image set is {extra.size}px, the training set {train_set.size}px")
    return np.concatenate([train_set.images, extra.images])


def training_batches(train_set: ImageSet, extra: ImageSet | None, mean: float, std: float, device,
                     pixels: np.ndarray | None = None) -> TensorBatches:
    """The stored rows [real set; whole extra set] (uint8 pixels, normalised on the device by the
    real pixels' ``mean`` and ``std``) and their labels ``y``."""
    images = stored_pixels(train_set, extra) if pixels is None else pixels
    return TensorBatches(images, device, Normalised(mean, std), y=counted_or_stored(train_set, extra))


def hflips(n_real: int, n_extra: int, seed: int, epoch: int) -> np.ndarray:
    """Which stored rows are flipped left-right in ``epoch`` (``train.hflip``): a draw from (seed,
    epoch) per real row, from (seed + 1, epoch) per extra row, so a resumed run repeats them."""
    real = np.random.default_rng([seed, epoch]).random(n_real) < 0.5
    return np.concatenate([real, np.random.default_rng([seed + 1, epoch]).random(n_extra) < 0.5])


def finetuned_backbone(cfg, model) -> list[nn.Parameter]:
    """The backbone parameters stage 2 trains: all, or those of its last ``train.finetune_stages``
    stages and the norms after them (:meth:`trcgl.models.backbone.Backbone.split`)."""
    k = cfg.train.finetune_stages
    if k is None:
        return list(model.backbone.parameters())
    if not hasattr(model.backbone, "split"):
        from .config import ConfigError

        raise ConfigError(f"train.finetune_stages needs a ConvNeXt backbone (model.arch trcgl or csra), "
                        f"not model.arch {cfg.model.arch}; set it to null to fine-tune the whole network")
    _, tail = model.backbone.split(int(k))
    return [p for m in tail for p in m.parameters()]


def freeze_trunk(cfg, model, stage: str) -> None:
    """In stage 2 with ``train.finetune_stages``, the frozen stages in eval mode (no stochastic
    depth, no batch statistics) after the epoch's ``train()``."""
    if stage == "finetune" and cfg.train.finetune_stages is not None:
        trunk, _ = model.backbone.split(int(cfg.train.finetune_stages))
        for m in trunk:
            m.eval()


def _optimizer(cfg, model, stage: str, steps: int, factor: list[float] | None = None):
    """AdamW over what learns in ``stage``, its rate cosine-annealed over the stage's ``steps``; with
    ``train.plateau_patience`` constant instead, times ``factor[0]`` (:func:`plateau_decisions`)."""
    t = cfg.train
    if stage == "warmup":
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        groups = [{"params": model.head_parameters(), "lr": t.warmup_lr}]
    else:
        trained = finetuned_backbone(cfg, model)
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        for p in trained:
            p.requires_grad_(True)
        groups = [{"params": trained, "lr": t.backbone_lr},
                  {"params": model.head_parameters(), "lr": t.head_lr}]
    opt = torch.optim.AdamW(groups, weight_decay=t.weight_decay, eps=t.adamw_eps, foreach=True)   # one kernel per step
    if t.plateau_patience is not None:
        factor = factor if factor is not None else [1.0]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factor[0])
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0))))
    return opt, sched


@torch.no_grad()
def predict(model: nn.Module, image_set: ImageSet, mean: float, std: float, device: torch.device,
            batch_size: int = 128, with_attention: bool = False):
    """Sigmoid probabilities (N, C), and the attention maps (N, C, h, w) when asked."""
    data = TensorBatches(image_set.images, device, Normalised(mean, std))
    return predict_batches(model, data, batch_size, with_attention)


@torch.no_grad()
def predict_features(model: nn.Module, features: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Sigmoid probabilities (N, C) of a model's heads on cached backbone features."""
    return predict_batches(HeadOnly(model), TensorBatches(features, device, float32), batch_size)


@torch.no_grad()
def predict_batches(model: nn.Module, data: TensorBatches, batch_size: int = 128, with_attention: bool = False,
                    procs: Processes | None = None):
    """:func:`predict` on stored rows; with ``procs``, each process scores its share of the rows
    and every process gets all the probabilities (in row order)."""
    model.eval()
    n = len(data)
    lo, hi = split_range(n, procs.rank, procs.size) if procs is not None else (0, n)
    if procs is not None and with_attention:
        raise ValueError("attention maps are not gathered across processes")
    a, b = (lo, hi) if hi > lo or n == 0 else (n - 1, n)   # an empty share still runs (and drops) one row
    probs, maps = [], []
    for x, _ in data.in_order(batch_size, a, b):
        out = model(x)
        probs.append(torch.sigmoid(out["logits"].float()))
        if with_attention and "attention" in out:
            maps.append(out["attention"].float().cpu())
    P = torch.cat(probs)[:hi - lo] if probs else torch.zeros((0, 0))
    if procs is not None:
        P = procs.gather_rows(P, n)
    P = P.cpu().numpy()
    return (P, torch.cat(maps).numpy() if maps else None) if with_attention else P


class HeadOnly(nn.Module):
    """A model without its backbone: the module that learns from cached backbone features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.forward_head(features)


def float32(x: torch.Tensor) -> torch.Tensor:
    """Stored float16 features -> the float32 the heads compute in."""
    return x.float()


def train_steps(cfg, net: nn.Module, model: nn.Module, data: TensorBatches, order: torch.Tensor, loss_fn, opt, sched,
                ema, epoch: int, device, procs: Processes, columns: torch.Tensor | None = None) -> list[torch.Tensor]:
    """One epoch's optimiser steps over ``order`` (stored-row indices) in global batches of
    ``train.batch_size``, this process's share of each; ``net`` is the module to run (``model``,
    or its DistributedDataParallel wrapper). ``columns``: only these classes are in the loss (the
    pretraining's head classes). Returns each step's scaled loss (not synchronised)."""
    use_amp, on_cpu = cfg.train.amp, cfg.train.amp_cpu
    losses = []
    for b in data.batches(order, cfg.train.batch_size, procs.rank, procs.size):
        with autocast(device, use_amp, cpu=on_cpu):
            logits = net(b.x)["logits"]
        y = b.targets["y"]
        if columns is not None:
            logits, y = logits[:, columns], y[:, columns]
        loss = loss_fn(logits.float(), y, b.targets["w"], epoch) * b.shard.scale
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        losses.append(loss.detach())
    return losses


def trained_state(model: nn.Module, frozen: bool) -> dict:
    """What a checkpoint keeps: the whole state, or with a ``frozen`` backbone (heads on cached
    features) everything but the backbone, which is rebuilt from its starting weights."""
    state = model.state_dict()
    return {k: v for k, v in state.items() if not k.startswith("backbone.")} if frozen else state


def load_trained(model: nn.Module, state: dict, frozen: bool) -> None:
    """Load :func:`trained_state` into ``model`` (only the backbone may be missing)."""
    result = model.load_state_dict(state, strict=not frozen)
    if frozen and (result.unexpected_keys or any(not k.startswith("backbone.") for k in result.missing_keys)):
        raise RuntimeError(f"checkpoint does not fit the model: {result}")


#: the files of the best epoch so far, which a checkpoint vouches for by their SHA-256: the best
#: weights (best.pt; with a frozen backbone the best heads, kept as best-heads.pt until the end
#: makes best.pt a whole model) and the selection probabilities
BEST_HEADS = "best-heads.pt"
SELECTION_PROBS = "selection_probs.npy"


def check_best_files(work: Path, files: dict) -> None:
    """Raise ValueError unless the best-epoch files in ``work`` are those a checkpoint recorded
    (``{name: sha256}``, empty before the first best epoch): a resumed run keeps them when no
    later epoch is better, so a damaged one would be sealed into the artifact."""
    for name, want in files.items():
        path = Path(work) / name
        if not path.is_file() or file_sha256(path) != want:
            raise ValueError(f"{name} is {'missing' if not path.is_file() else 'not the one it recorded'}")


def fit_classifier(cfg, train_set: ImageSet, select_set: ImageSet, groups, extra: ImageSet | None, seed: int,
                   device, work: Path, schedule: ExtraSchedule = ALL_AT_ONCE, checkpoint: str | None = None,
                   features: dict | None = None, class_mask: np.ndarray | None = None,
                   start: Path | None = None) -> None:
    """Train the model ``cfg`` describes into ``work`` (the ``classifier`` stage): the best epoch
    by selection-split mAP is kept (best.pt, selection_probs.npy, history.csv, result.json).
    Under a launcher every process calls this with the same arguments (see the module docstring).

    ``checkpoint``: the backbone's starting weights (e.g. the pretraining stage's). ``features``:
    the frozen backbone's cached outputs for ``train``, ``select`` and ``extra`` (float16 arrays
    row-aligned with the sets); the heads then learn from them (a recipe that never trains the
    backbone: ``train.finetune_epochs: 0``). ``class_mask``: only these classes are in the loss and
    in the selection mAP (the pretraining's head classes). ``start``: the folder of a finished
    classifier of the same model (its best.pt, selection_probs.npy and result.json) that this run
    continues, its best epoch counted as epoch 0 (stage 2 after a stage 1 on cached features; the
    plan must then be fine-tuning only)."""
    procs = processes()
    procs.check_device(device)
    seed_everything(seed, cfg.deterministic)
    classes = train_set.classes
    labels = counted_labels(cfg, train_set, extra)
    model = build_model(cfg, len(classes), labels, checkpoint=checkpoint).to(device)
    mean, std = normalisation(train_set)
    mask = np.ones(len(classes), bool) if class_mask is None else np.asarray(class_mask, bool)
    columns = None if mask.all() else torch.as_tensor(np.flatnonzero(mask), device=device)
    loss_fn = TrainingLoss(cfg, labels.sum(0)[mask])
    plan = _schedule(cfg)
    if features is not None and "finetune" in plan:
        raise ValueError("cached features need a frozen backbone: train.finetune_epochs must be 0")
    if start is not None and "warmup" in plan:
        raise ValueError("a run that continues another (start) is fine-tuning only: train.warmup_epochs must be 0")
    epochs = epoch_rows(cfg, train_set, extra, seed, len(plan), schedule)
    frozen = features is not None   # the backbone never changes: checkpoints hold the rest
    check_augment(cfg.train.augment)
    augment = cfg.train.augment != "none"
    if augment and frozen:
        log.warning("train.augment=%s has no effect here: the heads learn from cached features of the "
                    "un-augmented images (train.finetune_epochs 0)", cfg.train.augment)
        augment = False
    if features is None:
        pixels = stored_pixels(train_set, extra)
        data = training_batches(train_set, extra, mean, std, device, pixels)
        select = TensorBatches(select_set.images, device, Normalised(mean, std))
        head = model
    else:
        stored = features["train"] if extra is None else np.concatenate([features["train"], features["extra"]])
        data = TensorBatches(stored, device, float32, y=counted_or_stored(train_set, extra))
        select = TensorBatches(features["select"], device, float32)
        head = HeadOnly(model)
        model.backbone.eval().requires_grad_(False)   # not in the graph: DDP must not wait for its gradients
    batches = [math.ceil(len(e) / cfg.train.batch_size) for e in epochs]

    def stage_steps(stage: str) -> int:
        return sum(b for b, s in zip(batches, plan) if s == stage)

    ckpt_path = work / "last.pt"
    best_path = work / (BEST_HEADS if frozen else "best.pt")
    factor = [1.0]      # the learning rate's plateau factor (train.plateau_patience)

    def restore(ckpt: dict):
        """The state of an interrupted run from its checkpoint (raises when it does not fit)."""
        load_trained(model, ckpt["model"], frozen)
        first, history, best = ckpt["epoch"] + 1, list(ckpt["history"]), tuple(ckpt["best"])
        if not 0 < first <= len(plan) or len(history) != first:
            raise ValueError(f"epoch {first} of {len(plan)} with {len(history)} history rows")
        check_best_files(work, ckpt["files"])
        stage = plan[min(first, len(plan) - 1)]
        opt, sched = _optimizer(cfg, model, stage, stage_steps(stage), factor)
        ema = None
        if first < len(plan):
            if ckpt["stage"] == stage:
                opt.load_state_dict(ckpt["optimizer"])
                sched.load_state_dict(ckpt["scheduler"])
            ema = restore_ema(cfg, model, stage, ckpt.get("ema") if ckpt["stage"] == stage else None)
        torch.set_rng_state(ckpt["rng"])
        return first, history, best, dict(ckpt["files"]), stage, opt, sched, ema

    resumed = load_resume_checkpoint(ckpt_path, restore, rollback=[model], main=procs.is_main)
    if resumed is None:     # no checkpoint, or one that cannot be used: from the start
        first, history, best, best_files = 0, [], (-1.0, -1), {}
        if start is not None:       # epoch 0: the run this one continues
            model.load_state_dict(torch.load(Path(start) / "best.pt", map_location="cpu", weights_only=True))
            best = (float(json.loads((Path(start) / "result.json").read_text())["best_selection_mAP"]), 0)
            if procs.is_main:
                best_files = {best_path.name: atomic_torch_save(trained_state(model, frozen), best_path),
                              SELECTION_PROBS: save_npy(work / SELECTION_PROBS, load_npy(Path(start) / SELECTION_PROBS))}
        stage, (opt, sched) = plan[0], _optimizer(cfg, model, plan[0], stage_steps(plan[0]), factor)
        ema = stage_ema(cfg, model, stage)
    else:
        first, history, best, best_files, stage, opt, sched, ema = resumed
        log.info("resuming %s at epoch %d of %d", work.name, first + 1, len(plan))
    procs.barrier()    # every process has read the checkpoint before the main one writes the next
    net = procs.wrap(head)
    bar = tqdm(range(first, len(plan)), desc="training" if start is None else "fine-tuning", unit="epoch",
               initial=first, total=len(plan), disable=not procs.is_main)
    for epoch in bar:
        if cfg.train.plateau_patience is not None:      # until the selection score stops improving
            factor[0], stop = plateau_decisions([h["selection_mAP"] for h in history], cfg.train.plateau_patience)
            if stop:
                break
            for group, base in zip(opt.param_groups, sched.base_lrs):
                group["lr"] = base * factor[0]
        if plan[epoch] != stage:
            stage = plan[epoch]
            opt, sched = _optimizer(cfg, model, stage, stage_steps(stage), factor)
            ema = stage_ema(cfg, model, stage, ema)
            net = procs.wrap(head)      # DDP over the parameters that learn in this stage
        net.train()
        freeze_trunk(cfg, model, stage)
        rows = epochs[epoch]
        data.set("w", rows.weights)
        data.set("flip", hflips(len(train_set), len(data) - len(train_set), seed, epoch) if cfg.train.hflip else None)
        if augment:         # the epoch's augmented copy of the stored images (seeded: a resumed run repeats it)
            data.inputs = DeviceTensor(augment_images(cfg.train.augment, pixels, seed, epoch), device)
        losses = train_steps(cfg, net, model, data, rows.order(seed * 100_003 + epoch), loss_fn, opt, sched, ema,
                             epoch, device, procs, columns)
        kept = evaluated(model, ema)   # the EMA weights when train.ema is on
        P = predict_batches(kept if features is None else HeadOnly(kept), select, procs=procs)
        score = ranking_means(select_set.Y[:, mask], P[:, mask], [g for g, m in zip(groups, mask) if m],
                              empty=cfg.eval.empty_classes)
        history.append({"epoch": epoch + 1, "stage": stage, "loss": procs.mean_of_steps(losses),
                        "selection_mAP": score["mAP"], "selection_mAUC": score["mAUC"],
                        "lr": float(opt.param_groups[-1]["lr"])})       # the heads' rate after the epoch's last step
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", mAP=f"{score['mAP']:.3f}")
        if score["mAP"] > best[0]:
            best = (score["mAP"], epoch + 1)
            if procs.is_main:
                best_files = {best_path.name: atomic_torch_save(trained_state(kept, frozen), best_path),
                              SELECTION_PROBS: save_npy(work / SELECTION_PROBS, P)}
        if procs.is_main:
            save_checkpoint({"model": trained_state(model, frozen), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "epoch": epoch, "stage": stage,
                             "history": history, "best": list(best), "files": best_files, "rng": torch.get_rng_state(),
                             **({"ema": ema.module.state_dict()} if ema is not None else {})}, ckpt_path)
        _after_epoch(epoch)
    if procs.is_main:
        if frozen:      # the best heads beside the (unchanged) starting backbone: a whole model again
            load_trained(model, torch.load(best_path, map_location="cpu", weights_only=True), frozen)
            atomic_torch_save(model.state_dict(), work / "best.pt")
        pd.DataFrame(history).to_csv(work / "history.csv", index=False)
        atomic_write_json(work / "result.json", {"best_epoch": best[1], "best_selection_mAP": best[0],
                                                 "mean": mean, "std": std, "device": str(device),
                                                 "processes": procs.size})
        ckpt_path.unlink()  # the finished artifact keeps only the best weights
        if frozen:
            best_path.unlink()


def trainer_benchmark(cfg, steps: int = 10, repeats: int = 3, device=None, num_classes: int = 30, seed: int = 0) -> dict:
    """Images per second of the trainer's optimiser steps (:func:`train_steps`: the input pipeline
    on stored uint8 images, the weighted loss, AdamW with its schedule) and of a bare timm loop
    (:func:`trcgl.runtime.training_throughput`: one fixed random batch, BCE, AdamW) on the same
    model (``cfg``'s, e.g. ``model.arch: timm`` for a plain timm network), image size and batch
    size; each the best of ``repeats`` runs of ``steps`` steps after one warm-up run. Not a test:
    a measurement for the reproduce page (``tools/benchmark_trainer.py``)."""
    device = torch.device(device or "cpu")
    size, batch = cfg.data.image_size, cfg.train.batch_size
    rng = np.random.default_rng(seed)
    n = steps * batch
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    Y = (rng.random((n, num_classes)) < 0.1).astype(np.uint8)
    torch.manual_seed(seed)
    model = build_model(cfg, num_classes, Y).to(device).train()
    data = TensorBatches(images, device, Normalised(float(images.mean() / 255), float(images.std() / 255)),
                         y=Y.astype(np.float32), w=np.ones(n, np.float32))
    loss_fn = TrainingLoss(cfg, Y.sum(0))
    opt, sched = _optimizer(cfg, model, "finetune", steps * (repeats + 1))
    procs = Processes()

    def trainer():
        losses = train_steps(cfg, model, model, data, seeded_order(n, seed), loss_fn, opt, sched, None, 0, device, procs)
        losses[-1].item()                       # wait for the last step (asynchronous on a GPU)

    trainer()   # warm-up
    ours = images_per_second(trainer, n, repeats)
    torch.manual_seed(seed)
    bare_model = build_model(cfg, num_classes, Y)
    bf16 = cfg.train.amp and (device.type == "cuda" or cfg.train.amp_cpu)
    bare = training_throughput(bare_model, size, batch, device, num_classes=num_classes, steps=steps, repeats=repeats,
                               bf16=bf16)
    return {"model": f"{cfg.model.arch}:{cfg.model.backbone}", "image_size": size, "batch_size": batch,
            "steps": steps, "device": str(device), "threads": torch.get_num_threads(),
            "precision": "bf16 autocast" if bf16 else "fp32",
            "trainer_images_per_s": ours, "bare_images_per_s": bare, "ratio": ours / bare}


def load_classifier(cfg, folder: Path, num_classes: int, label_matrix: np.ndarray, device) -> TrainResult:
    """A trained classifier from its stage folder (weights loaded with ``weights_only=True``)."""
    meta = json.loads((folder / "result.json").read_text())
    model = build_model(cfg, num_classes, label_matrix)
    model.load_state_dict(torch.load(folder / "best.pt", map_location="cpu", weights_only=True))
    model.to(device).eval()
    return TrainResult(model, pd.read_csv(folder / "history.csv"), load_npy(folder / "selection_probs.npy"),
                       meta["best_epoch"], meta["mean"], meta["std"], folder)
