"""A domain-pretrained backbone: the analogue of the paper's PadChest-trained initialisation.

The paper starts its ConvNeXtV2 from weights already trained on chest radiographs. No such
weights exist here, and starting from random weights with a few epochs leaves the tail at chance,
so the benchmark could not tell a working method from a broken one. This stage pretrains the
whole backbone (its timm network with global pooling and a linear head) on a **pool** of
train-split rows that the experiment never trains on, with **only the head classes in the loss**:
medium and tail labels are masked out, so no knowledge of the classes the paper's methods target
leaks into the start point. The best epoch is chosen by head-class mAP on the selection split;
with ``pretrain.patience`` the training runs until that score stops improving (at most
``pretrain.epochs``; :func:`trcgl.train.plateau_decisions`).
Every ConvNeXtV2 row (and each timm baseline, for its own architecture) then starts from it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .cache import atomic_torch_save, atomic_write_json
from .config import Config, defaults
from .runtime import processes
from .train import fit_classifier, load_classifier


#: The settings of the recipe taken from the package defaults, whatever the experiment's profile
#: sets: every key the trainer reads (:func:`trcgl.train.fit_classifier` on the recipe) that
#: :func:`pretraining_config` does not set.
RECIPE_DEFAULTS = ("model.checkpoint", "model.head_scale", "train.adamw_eps", "train.amp", "train.amp_cpu", "train.augment",
                   "train.drw_beta", "train.drw_epoch", "train.finetune_stages",
                   "train.ema", "train.grad_clip", "train.hflip", "train.ldam_max_margin", "train.loss",
                   "train.sampler", "train.weight_decay", "eval.empty_classes")

#: Every key the ``pretrain`` stage reads from its configuration (the recipe), so exactly what its
#: cache key holds: a default the recipe does not read (a new key, another section's setting)
#: leaves the pretrained backbones alone. Running the recipe under a view of these keys alone
#: raises on any other read (:meth:`trcgl.config.Config.restrict`; tests/test_pretraining.py).
READS = RECIPE_DEFAULTS + ("model.arch", "model.backbone", "model.head", "model.channels_last", "data.image_size", "deterministic", "device",
                           "train.warmup_epochs", "train.finetune_epochs", "train.backbone_lr", "train.head_lr",
                           "train.batch_size", "train.plateau_patience")


def pretraining_config(cfg) -> Config:
    """The fixed pretraining recipe for ``cfg``'s backbone, image size, determinism, device and
    ``pretrain`` settings: the package defaults of :data:`RECIPE_DEFAULTS`, the timm network with a
    linear head, and the whole network learning from the first epoch (no warm-up). The ``pretrain``
    stage runs under this configuration, so its key holds these values."""
    p = cfg.pretrain
    return cfg.replace({
        **defaults().leaves(RECIPE_DEFAULTS),
        "model.arch": "timm", "model.head": "linear",
        "train.warmup_epochs": 0, "train.finetune_epochs": p.epochs, "train.backbone_lr": p.lr,
        "train.head_lr": p.lr, "train.batch_size": p.batch_size, "train.plateau_patience": p.patience,
    })


def pretrain_backbone(cfg, pool, select, groups, seed: int, device, work: Path) -> None:
    """Train the recipe ``cfg`` (:func:`pretraining_config`) on ``pool`` with head-class labels
    only; write the backbone's weights (timm's own state dict, loadable by
    :func:`trcgl.models.backbone.create_timm_model`) and a summary."""
    head = np.asarray([g == "head" for g in groups])
    fit_dir = Path(work) / "training"
    fit_dir.mkdir(exist_ok=True)
    fit_classifier(cfg, pool, select, groups, None, seed, device, fit_dir, class_mask=head)
    if not processes().is_main:     # under a launcher every process trains (a stage built together); one writes
        return
    run = load_classifier(cfg, fit_dir, len(pool.classes), pool.Y, torch.device("cpu"))
    atomic_torch_save(run.model.backbone.state_dict(), Path(work) / "backbone.pth")
    atomic_write_json(Path(work) / "pretrain.json", {
        "backbone": cfg.model.backbone, "pool images": int(len(pool)), "classes in the loss": int(head.sum()),
        "best epoch": int(run.best_epoch), "epochs": int(len(run.history)), "most epochs": int(cfg.train.finetune_epochs),
        "patience": cfg.train.plateau_patience,
        "selection head mAP": float(run.history["selection_mAP"].max())})
