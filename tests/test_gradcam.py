"""Grad-CAM maps are distributions at image resolution and find a planted lesion a trained model uses."""
import numpy as np
import pytest
import torch

from trcgl.cache import ArtifactCache
from trcgl.localization import grad_cam_maps, pair_scores
from trcgl.stages import train_classifier

from .test_train import GROUPS, toy_cfg, toy_set


def test_pair_scores_by_hand():
    a = np.array([[[0.7, 0.1], [0.1, 0.1]]])
    m = np.zeros((1, 4, 4), bool)
    m[0, :2, :2] = True                      # the top-left cell, fully
    s = pair_scores(a, m).iloc[0]
    assert np.isclose(s["mass"], 0.7) and np.isclose(s["chance mass"], 0.25) and s["hit"]


@pytest.mark.slow
def test_grad_cam_points_at_the_toy_lesion(tmp_path):
    train, val = toy_set(240, 0), toy_set(60, 1)
    r = train_classifier(toy_cfg(), train, val, GROUPS, cache=ArtifactCache(tmp_path))
    n = np.flatnonzero(val.Y[:, 0])[:8]                   # class 0: a bright square on the left
    maps = grad_cam_maps(r.model, val.images[n], [0] * len(n), r.mean, r.std, torch.device("cpu"))
    assert maps.shape == (len(n), 64, 64) and np.allclose(maps.sum((1, 2)), 1)
    left = maps[:, :, :32].sum((1, 2))
    assert (left > 0.5).mean() >= 0.75, left
