"""The phantom lesions are learnable: a small CNN trained on a few thousand phantoms beats chance."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score

from trcgl import load_config
from trcgl.data.datasets import XrayDataset, make_loader, normalisation, training_dataset
from trcgl.data.padchest import build_cohort
from trcgl.runtime import seed_everything
from trcgl.stages import build_image_set


@pytest.mark.slow
def test_a_small_cnn_beats_chance_on_head_classes(real_table, session_cache):
    cfg = load_config("smoke", {"data.n_train": 2000, "data.n_test": 800, "data.image_size": 32,
                                "phantom.render_size": 64, "data.min_train_positives": 20,
                                "data.min_test_positives": 10})
    cohort = build_cohort(real_table, "paper", 42)
    train, val = (build_image_set(cfg, cohort, s, session_cache) for s in ("train", "test"))
    seed_everything(0)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 30))
    opt = torch.optim.AdamW(net.parameters(), 2e-3)
    ds = training_dataset(train)
    for epoch in range(4):
        net.train()
        for x, y, _ in make_loader(ds, 64, True, epoch):
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
            opt.step()
    net.eval()
    mean, std = normalisation(train)
    with torch.no_grad():
        P = torch.cat([torch.sigmoid(net(x)) for x, _, _ in make_loader(XrayDataset(val, mean, std), 256, False)]).numpy()
    head = [c for c, g in enumerate(cohort.groups) if g == "head"]
    aucs = [roc_auc_score(val.Y[:, c], P[:, c]) for c in head]
    assert np.mean(aucs) > 0.75, aucs
    assert sum(a > 0.7 for a in aucs) >= 8, aucs
