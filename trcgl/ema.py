"""An exponential moving average of the classifier's weights during fine-tuning (``train.ema``),
as the released code keeps one: timm's ``ModelEmaV3``, decay 0.9999, created from the weights at
the start of the fine-tuning stage and updated after every optimiser step of it,
θ_ema ← d · θ_ema + (1 − d) · θ (buffers too). Validation, the choice of the best epoch and the
saved weights then use the EMA model. The decay is the same every step (``update`` without a step
count, so no warm-up of the decay).
"""
from __future__ import annotations

from timm.utils import ModelEmaV3
from torch import nn


def stage_ema(cfg, model: nn.Module, stage: str, current: ModelEmaV3 | None = None) -> ModelEmaV3 | None:
    """The EMA to keep in ``stage``: none unless ``train.ema`` and fine-tuning; the running one, or a
    new copy of the model's current weights at the first fine-tuning epoch."""
    if not cfg.train.ema or stage != "finetune":
        return None
    return current if current is not None else ModelEmaV3(model, decay=cfg.train.ema_decay)


def restore_ema(cfg, model: nn.Module, stage: str, state: dict | None) -> ModelEmaV3 | None:
    """The EMA of a resumed run: a fresh one whose weights are the saved EMA weights ``state``."""
    ema = stage_ema(cfg, model, stage)
    if ema is not None and state is not None:
        ema.module.load_state_dict(state)
    return ema


def evaluated(model: nn.Module, ema: ModelEmaV3 | None) -> nn.Module:
    """The weights that are validated and kept: the EMA's when there is one."""
    return ema.module if ema is not None else model
