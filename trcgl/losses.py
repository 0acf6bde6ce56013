"""Training losses: per-sample weighted BCE (the paper), LDAM with deferred re-weighting, and the
released code's distribution-balanced loss.

LDAM {cite}`cao2019ldam`, multi-label form: class c gets a margin Δ_c ∝ n_c^(-1/4) (n_c its
training positives), scaled so the largest is ``max_margin``; a positive's logit is lowered by
s·Δ_c before the BCE (s is the cosine head's scale), so rare classes must be separated by a wider
margin. DRW: from epoch ``drw_epoch`` on, each class's terms are weighted by the inverse effective
number of samples (1 − β) / (1 − β^n_c), normalised to mean 1.

``released_db`` (the authors' released script): the same effective-number weights w_c (β = 0.9999,
mean 1); a positive margin m_c = 0.2 · minmax(1/w_c) (so the most frequent class gets 0.2 and the
rarest 0); logits − y · m_c; BCE weighted per class by w_c^0.5, summed over classes and averaged
over the batch (each sample times its own loss weight).
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


def released_db_terms(counts, beta: float = 0.9999, max_margin: float = 0.2, power: float = 0.5):
    """(class weights w_c^power, margins m_c) of the released loss from the class counts n_c.

    w_c = (1 − β) / (1 − β^n_c) normalised to mean 1 (a class without positives counts as 1);
    m_c = max_margin · (1/w_c − min 1/w) / (max 1/w − min 1/w), all 0 when every class has the same count.
    """
    w = drw_weights(counts, beta)
    inv = 1.0 / w
    span = inv.max() - inv.min()
    margins = max_margin * (inv - inv.min()) / span if span > 0 else np.zeros_like(inv)
    return w ** power, margins


def released_db_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                     class_weights: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of w_n · Σ_c v_c · BCE(s_nc − y_nc m_c, y_nc) (the released code's loss)."""
    per = nn.functional.binary_cross_entropy_with_logits(logits - targets * margins, targets, reduction="none")
    return ((per * class_weights).sum(1) * weights).mean()


LOSSES = ("bce", "ldam", "released_db")


class TrainingLoss:
    """The loss a configuration's ``train`` section asks for, as a function of the epoch."""

    def __init__(self, cfg, train_counts):
        t = cfg.train
        if t.loss not in LOSSES:
            raise ValueError(f"unknown train.loss '{t.loss}': choose one of {', '.join(LOSSES)}")
        self.kind = t.loss
        self.margins = torch.tensor(ldam_margins(train_counts, t.ldam_max_margin), dtype=torch.float32)
        self.scale = cfg.model.head_scale
        self.drw = torch.tensor(drw_weights(train_counts, t.drw_beta), dtype=torch.float32)
        self.drw_epoch = t.drw_epoch
        if self.kind == "released_db":
            cw, m = released_db_terms(train_counts, t.db_beta, t.db_max_margin, t.db_weight_power)
            self.db_weights, self.db_margins = (torch.tensor(v, dtype=torch.float32) for v in (cw, m))

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.kind == "released_db":
            return released_db_loss(logits, y, w, self.db_weights.to(logits.device), self.db_margins.to(logits.device))
        cw = self.drw.to(logits.device) if self.drw_epoch is not None and epoch >= self.drw_epoch else None
        if self.kind == "ldam":
            logits = logits - self.scale * self.margins.to(logits.device) * y
        return weighted_bce(logits, y, w, cw)
