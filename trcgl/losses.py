"""Training losses: per-sample weighted BCE (the paper), and LDAM with deferred re-weighting.

LDAM {cite}`cao2019ldam`, multi-label form: class c gets a margin Δ_c ∝ n_c^(-1/4) (n_c its
training positives), scaled so the largest is ``max_margin``; a positive's logit is lowered by
s·Δ_c before the BCE (s is the cosine head's scale), so rare classes must be separated by a wider
margin. DRW: from epoch ``drw_epoch`` on, each class's terms are weighted by the inverse effective
number of samples (1 − β) / (1 − β^n_c), normalised to mean 1.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                 class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of w_n · mean_c (v_c ·) BCE(s_nc, y_nc): a sample of weight 0.5 counts half."""
    per = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if class_weights is not None:
        per = per * class_weights
    return (per.mean(1) * weights).mean()


def ldam_margins(counts, max_margin: float = 0.5) -> np.ndarray:
    """Δ_c = max_margin · n_c^(-1/4) / max_k n_k^(-1/4) (a class without positives counts as 1)."""
    n = np.maximum(np.asarray(counts, dtype=float), 1.0)
    m = n ** -0.25
    return max_margin * m / m.max()


def drw_weights(counts, beta: float = 0.9999) -> np.ndarray:
    """(1 − β) / (1 − β^n_c), normalised to mean 1 (deferred re-weighting)."""
    n = np.maximum(np.asarray(counts, dtype=float), 1.0)
    w = (1.0 - beta) / (1.0 - np.power(beta, n))
    return w / w.mean()


class TrainingLoss:
    """The loss a configuration's ``train`` section asks for, as a function of the epoch."""

    def __init__(self, cfg, train_counts):
        t = cfg.train
        if t.loss not in ("bce", "ldam"):
            raise ValueError(f"unknown train.loss '{t.loss}': choose bce or ldam")
        self.kind = t.loss
        self.margins = torch.tensor(ldam_margins(train_counts, t.ldam_max_margin), dtype=torch.float32)
        self.scale = cfg.model.head_scale
        self.drw = torch.tensor(drw_weights(train_counts, t.drw_beta), dtype=torch.float32)
        self.drw_epoch = t.drw_epoch

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor, epoch: int) -> torch.Tensor:
        cw = self.drw.to(logits.device) if self.drw_epoch is not None and epoch >= self.drw_epoch else None
        if self.kind == "ldam":
            logits = logits - self.scale * self.margins.to(logits.device) * y
        return weighted_bce(logits, y, w, cw)
