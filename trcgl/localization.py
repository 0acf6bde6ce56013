"""Scoring attention maps against the phantom's ground-truth lesion masks.

A class attention map a_c (Eq. 12) is a distribution over the h × w feature grid. Against a
lesion mask (image resolution) we report two scores, each with its chance level:

* **mass inside the mask**: Σ a_c over the grid cells, weighted by the fraction of each cell the
  mask covers. A uniform map scores the mask's area fraction (the chance level).
* **pointing game**: 1 when the map's maximum falls in a cell the mask touches.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn


def mask_to_grid(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """Fraction of each of the h × w cells that the (H, W) mask covers."""
    H, W = mask.shape
    m = mask.astype(np.float64)
    return m.reshape(h, H // h, w, W // w).mean(axis=(1, 3))


def attention_mass(a: np.ndarray, cover: np.ndarray) -> float:
    """Σ_cells a · cover, for a map a that sums to one."""
    return float((a * cover).sum() / max(a.sum(), 1e-12))


def pointing_hit(a: np.ndarray, cover: np.ndarray) -> bool:
    return bool(cover.flat[int(np.argmax(a))] > 0)


def localization_scores(maps: np.ndarray, image_set, classes, groups, min_cover: float = 0.0) -> pd.DataFrame:
    """One row per (image, class) where the class is labelled and its lesion mask is not empty.

    ``maps`` are (N, C, h, w) attention maps of ``image_set`` (phantom source, with masks).
    """
    N, C, h, w = maps.shape
    rows = []
    for n in range(N):
        present = np.flatnonzero(image_set.Y[n])
        if not len(present):
            continue
        masks = image_set.masks(n)
        for c in present:
            if not masks[c].any():
                continue
            cover = mask_to_grid(masks[c], h, w)
            if cover.mean() <= min_cover:
                continue
            rows.append({"image": n, "class": classes[c], "group": groups[c],
                         "mass": attention_mass(maps[n, c], cover), "chance mass": float(cover.mean()),
                         "hit": pointing_hit(maps[n, c], cover), "chance hit": float((cover > 0).mean())})
    return pd.DataFrame(rows)


def localization_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean scores and their chance levels per group (and over all)."""
    if scores.empty:
        return pd.DataFrame()
    cols = ["mass", "chance mass", "hit", "chance hit"]
    by_group = scores.groupby("group")[cols].mean().reindex([g for g in ("head", "medium", "tail") if g in set(scores.group)])
    by_group.loc["all"] = scores[cols].mean()
    by_group["pairs"] = scores.groupby("group").size().reindex(by_group.index).fillna(len(scores)).astype(int)
    by_group.loc["all", "pairs"] = len(scores)
    return by_group


class _Logits(nn.Module):
    """Wraps a model that returns a dict so that grad-cam sees a logits tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["logits"]


def grad_cam_maps(model, images, class_ids, mean: float, std: float, device) -> np.ndarray:
    """Grad-CAM (grad-cam library) of class ``class_ids[n]`` on image n, at image resolution,
    normalised to sum to one (so it scores like an attention map). The target layer is the last
    stage of the backbone."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    backbone = model.backbone
    layer = backbone.stages[-1] if hasattr(backbone, "stages") else list(backbone.children())[-1]
    x = (torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0) - mean) / std
    was_training = model.training
    model.eval()
    with GradCAM(model=_Logits(model), target_layers=[layer]) as cam:
        maps = cam(input_tensor=x[:, None].to(device), targets=[ClassifierOutputTarget(int(c)) for c in class_ids])
    model.train(was_training)
    maps = np.maximum(maps, 0)
    sums = maps.sum(axis=(1, 2), keepdims=True)
    uniform = np.full_like(maps, 1.0 / maps[0].size)
    return np.where(sums > 0, maps / np.where(sums > 0, sums, 1), uniform)


def pair_scores(maps: np.ndarray, masks: np.ndarray) -> pd.DataFrame:
    """Mass inside the mask and pointing hit for paired (map, mask) at any common grid: the
    maps (P, h, w) against masks (P, H, W) reduced to that grid."""
    rows = []
    for a, m in zip(maps, masks):
        cover = mask_to_grid(m, *a.shape)
        rows.append({"mass": attention_mass(a, cover), "chance mass": float(cover.mean()),
                     "hit": pointing_hit(a, cover), "chance hit": float((cover > 0).mean())})
    return pd.DataFrame(rows)
