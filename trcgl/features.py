"""Cached backbone features: a frozen backbone's output for every image of a set, computed once.

When a recipe never trains the backbone (``train.finetune_epochs: 0``: the paper's stage 1, heads
only, on a pretrained backbone), every run of every table would push the same images through the
same frozen backbone. The ``features`` stage does it once per (backbone, image set) and the
trainer then learns the heads from these tensors (seconds per run instead of minutes), which is
what makes five seeds of every arm affordable on a CPU. The backbone runs in eval mode, with the
training set's pixel normalisation.
"""
from __future__ import annotations

import numpy as np
import torch

from .data.datasets import ImageSet, normalisation


@torch.no_grad()
def compute_features(backbone: torch.nn.Module, image_set: ImageSet, mean: float, std: float, device,
                     batch_size: int = 256) -> np.ndarray:
    """float16 backbone outputs (N, D, h, w) or (N, D) of a set's images, normalised by (mean, std)."""
    backbone = backbone.to(device).eval()
    out = []
    for lo in range(0, len(image_set), batch_size):
        x = torch.from_numpy(image_set.images[lo:lo + batch_size]).to(device).float().div_(255.0)
        x = ((x - mean) / std)[:, None]
        out.append(backbone(x).float().cpu().half())
    return torch.cat(out).numpy()


def feature_normalisation(train_set: ImageSet) -> tuple[float, float]:
    """The pixel normalisation features are computed with (the training set's, as the trainer's)."""
    return normalisation(train_set)
