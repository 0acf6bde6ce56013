"""Progressive incremental learning (PIL), Eq. (3) of the inpainting paper:
D = D_o + D_i (1 - e^(-βn)), n the epoch number.

Each epoch trains on all original images D_o and on the first round(|D_i| (1 - e^(-βn))) images
of a fixed random order of the inpainted set D_i, so images join and never leave. We count n
from 1 over the whole schedule (warm-up and fine-tuning), so the first epoch already sees a
fraction 1 - e^(-β) of D_i. Rows of an extra set whose ``progressive`` column is False (e.g.
prompt-diffusion images in the "both" arm) are always in.
"""
from __future__ import annotations

import math

import numpy as np

from ..data.datasets import ImageSet, take
from ..train import ExtraSchedule


def pil_fraction(n: int, beta: float) -> float:
    """1 - e^(-βn): the share of D_i in the training set at epoch n (n = 1, 2, ...)."""
    if n < 0:
        raise ValueError(f"the epoch number n must be >= 0, got {n}")
    if beta < 0:
        raise ValueError(f"PIL's beta must be >= 0, got {beta}")
    return 1.0 - math.exp(-beta * n)


def progressive_rows(extra: ImageSet) -> np.ndarray:
    """Bool per row: does PIL schedule it (the ``progressive`` column; all rows when absent)."""
    if "progressive" in extra.rows:
        return extra.rows["progressive"].fillna(True).to_numpy(bool)
    return np.ones(len(extra), dtype=bool)


def pil_count(n_progressive: int, n: int, beta: float) -> int:
    """How many progressive images are in at epoch n."""
    return int(round(n_progressive * pil_fraction(n, beta)))


def pil_rows(extra: ImageSet, epoch: int, beta: float, seed: int) -> np.ndarray:
    """Indices of the rows of ``extra`` trained on at 0-based ``epoch`` (n = epoch + 1), sorted."""
    prog = np.flatnonzero(progressive_rows(extra))
    order = prog[np.random.default_rng([seed, 7907]).permutation(len(prog))]
    return np.sort(np.concatenate([np.flatnonzero(~progressive_rows(extra)),
                                   order[:pil_count(len(prog), epoch + 1, beta)]]))


def pil_subset(extra: ImageSet, epoch: int, beta: float, seed: int) -> ImageSet | None:
    """The part of ``extra`` trained on at 0-based ``epoch`` (n = epoch + 1); None when empty."""
    keep = pil_rows(extra, epoch, beta, seed)
    return take(extra, keep) if len(keep) else None


class ProgressiveSchedule(ExtraSchedule):
    """PIL as the trainer's extra-set schedule (``train.extra_schedule: pil``)."""

    name = "pil"

    def __init__(self, beta: float):
        self.beta = float(beta)

    def rows(self, extra: ImageSet, epoch: int, seed: int) -> np.ndarray:
        return pil_rows(extra, epoch, self.beta, seed)

    @property
    def varies(self) -> bool:
        return True
