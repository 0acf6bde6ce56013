"""The released reading's training recipe: augmentations (albumentations), stochastic depth (timm)
and AdamW's ε, each checked where it acts."""
import logging

import numpy as np
import pytest
import torch

from trcgl import load_config
from trcgl.config import ConfigError
from trcgl.data.augment import AUGMENTATIONS, augment_images


def test_released_augmentations_are_the_named_transforms_seeded_by_seed_and_epoch():
    names = [type(t).__name__ for t in AUGMENTATIONS["released"]()]
    assert names == ["HorizontalFlip", "Affine", "CLAHE", "RandomBrightnessContrast", "GaussNoise", "CoarseDropout"]
    rng = np.random.default_rng(0)
    x = (rng.random((64, 32, 32)) * 255).astype(np.uint8)
    a = augment_images("released", x, seed=3, epoch=1)
    assert a.shape == x.shape and a.dtype == np.uint8
    assert np.array_equal(a, augment_images("released", x, seed=3, epoch=1))        # a resumed epoch repeats
    assert not np.array_equal(a, augment_images("released", x, seed=3, epoch=2))
    assert not np.array_equal(a, augment_images("released", x, seed=4, epoch=1))
    changed = np.array([not np.array_equal(a[i], x[i]) for i in range(len(x))])
    assert 0.8 < changed.mean() <= 1.0          # six transforms at p = 0.5: all untouched only 1/64 of the time
    assert augment_images("none", x, 0, 0) is x
    with pytest.raises(ConfigError, match="train.augment must be one of none, released"):
        augment_images("heavy", x, 0, 0)


def test_a_flip_alone_mirrors_exactly_the_images_it_draws():
    import albumentations as A

    from trcgl.data import augment

    x = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    saved = AUGMENTATIONS["released"]
    try:
        AUGMENTATIONS["flip"] = lambda: [A.HorizontalFlip(p=1.0)]
        out = augment.augment_images("flip", x, 0, 0)
    finally:
        AUGMENTATIONS.pop("flip")
    assert np.array_equal(out, x[:, :, ::-1]) and AUGMENTATIONS["released"] is saved


def test_drop_path_is_timms_stochastic_depth_and_leaves_evaluation_alone():
    from trcgl.models.backbone import Backbone

    torch.manual_seed(0)
    plain = Backbone("convnextv2_atto", 2)
    torch.manual_seed(0)
    deep = Backbone("convnextv2_atto", 2, drop_path_rate=0.2)
    probs = [m.drop_prob for m in deep.modules() if type(m).__name__ == "DropPath"]
    # timm's linear schedule over all 12 blocks of the atto (depths 2, 2, 6, 2), the first at 0 (no
    # module); the backbone cut after stage 2 keeps blocks 2-10 of it
    assert probs == pytest.approx(np.linspace(0, 0.2, 12)[1:10].tolist())
    assert not any(type(m).__name__ == "DropPath" for m in plain.modules())
    x = torch.randn(2, 1, 64, 64)
    plain.eval(), deep.eval()
    assert torch.equal(plain(x), deep(x))                      # same weights; no drop when evaluating
    deep.train()
    torch.manual_seed(1)
    assert not torch.equal(deep(x), plain(x))                  # paths dropped while training


def test_adamw_eps_is_the_configured_one():
    from trcgl.models import build_model
    from trcgl.train import _optimizer

    Y = np.eye(3, dtype=np.uint8).repeat(4, 0)
    for eps in (1e-8, 1e-5):
        cfg = load_config("smoke", {"train.adamw_eps": eps, "model.gcn_embed_dim": 8, "model.gcn_hidden_dim": 8})
        opt, _ = _optimizer(cfg, build_model(cfg, 3, Y), "finetune", 10)
        assert all(g["eps"] == eps for g in opt.param_groups)


def test_the_trainer_feeds_each_epoch_its_augmented_pixels_and_skips_loudly_on_cached_features(tmp_path, caplog,
                                                                                               monkeypatch):
    """On images every epoch trains on augment_images(stored pixels, seed, epoch) (real rows, then
    the extra rows); heads on cached features cannot see augmented pixels: the trainer says so
    and trains exactly as without."""
    from trcgl import train as train_mod
    from trcgl.train import fit_classifier

    from .test_train import GROUPS, heads_only_toy, toy_cfg, toy_set

    seen = []

    def recorded(name, images, seed, epoch):
        seen.append((name, images.copy(), seed, epoch))
        return augment_images(name, images, seed, epoch)

    monkeypatch.setattr(train_mod, "augment_images", recorded)
    train, val, extra = toy_set(24, 0), toy_set(16, 1), toy_set(8, 4)
    cfg = toy_cfg(**{"train.augment": "released", "train.warmup_epochs": 1, "train.finetune_epochs": 1,
                     "pretrain.enabled": False})
    fit_classifier(cfg, train, val, GROUPS, extra, 3, torch.device("cpu"), tmp_path / "images")
    assert [(n, s, e) for n, _, s, e in seen] == [("released", 3, 0), ("released", 3, 1)]
    assert all(np.array_equal(x, np.concatenate([train.images, extra.images])) for _, x, _, _ in seen)

    cfg, train, select, cached = heads_only_toy(2)
    weights = {}
    for augment in ("none", "released"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="trcgl.train"):
            fit_classifier(cfg.replace({"train.augment": augment}), train, select, GROUPS, None, 0, torch.device("cpu"),
                           tmp_path / f"heads-{augment}", features=cached)
        said = any("has no effect here" in r.getMessage() for r in caplog.records)
        assert said == (augment == "released")
        weights[augment] = torch.load(tmp_path / f"heads-{augment}" / "best.pt", weights_only=True)
    assert all(torch.equal(weights["none"][k], weights["released"][k]) for k in weights["none"])
    assert len(seen) == 2                                   # never called for cached features
