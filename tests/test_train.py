"""The trainer: it learns a toy task, caches, and resumes after an interruption to the same result."""
import numpy as np
import pandas as pd
import pytest
import torch

from trcgl import load_config
from trcgl import train as train_mod
from trcgl.cache import ArtifactCache
from trcgl.data.datasets import ImageSet
from trcgl.losses import weighted_bce
from trcgl.stages import train_classifier
from trcgl.train import predict

CLASSES = ("left square", "right square", "bar")
GROUPS = ["head", "medium", "tail"]


def toy_set(n: int, seed: int) -> ImageSet:
    """64-px images: class 0 a bright square on the left, class 1 on the right, class 2 a bar."""
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, 3)) < [0.5, 0.4, 0.3]).astype(np.uint8)
    imgs = (rng.random((n, 64, 64)) * 60).astype(np.uint8)
    for i in range(n):
        if Y[i, 0]:
            imgs[i, 20:36, 6:22] = 220
        if Y[i, 1]:
            imgs[i, 28:44, 42:58] = 220
        if Y[i, 2]:
            imgs[i, 54:58, 8:56] = 220
    rows = pd.DataFrame({"ImageID": [f"toy{seed}-{i}" for i in range(n)]})
    return ImageSet(imgs, Y, np.ones(n, np.float32), rows, CLASSES)


def toy_cfg(**over):
    base = {"model.feature_stage": 2, "model.gcn_embed_dim": 16, "model.gcn_hidden_dim": 16,
            "train.warmup_epochs": 1, "train.finetune_epochs": 3, "train.batch_size": 16,
            "train.warmup_lr": 3e-3, "train.backbone_lr": 2e-3, "train.head_lr": 3e-3}
    base.update(over)
    return load_config("smoke", base, device="cpu")


def test_weighted_bce_by_hand():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    w = torch.tensor([1.0, 0.5])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)
    assert torch.isclose(weighted_bce(logits, y, w), (bce[0] + 0.5 * bce[1]) / 2)


@pytest.mark.slow
def test_trcgl_net_learns_a_toy_task_and_is_cached(tmp_path):
    cache = ArtifactCache(tmp_path)
    train, val = toy_set(240, 0), toy_set(120, 1)
    result = train_classifier(toy_cfg(), train, val, GROUPS, cache=cache)
    assert result.history.selection_mAP.max() > 0.9, result.history
    assert list(result.history.stage) == ["warmup", "finetune", "finetune", "finetune"]
    P = predict(result.model, val, result.mean, result.std, torch.device("cpu"))
    assert np.allclose(P, result.selection_probs, atol=1e-5)
    misses = cache.misses
    again = train_classifier(toy_cfg(), train, val, GROUPS, cache=cache)
    assert cache.misses == misses and again.best_epoch == result.best_epoch


def test_component_rows_switch_one_part_at_a_time():
    from trcgl.tables import CCA, FULL, GAP_ONLY, component_rows

    v = {r.name: r.cfg for r in component_rows(load_config("smoke"))}
    flags = {k: (c.model.channel_gate, c.model.spatial_attention, c.model.label_gcn) for k, c in v.items()}
    assert flags == {GAP_ONLY: (False, False, False), CCA: (True, True, False), FULL: (True, True, True)}
    assert all(c.train == load_config("smoke").train for c in v.values())


def test_masked_classes_leave_no_trace_in_the_weights(tmp_path):
    """The pretraining's loss holds the head classes only (``class_mask``): whatever labels the masked
    classes carry, training gives the very same weights and history (no tail knowledge leaks in);
    unmasking them changes the weights."""
    from dataclasses import replace

    from trcgl.train import fit_classifier

    cfg = toy_cfg(**{"model.arch": "timm", "model.head": "linear", "pretrain.enabled": False,
                     "train.warmup_epochs": 0, "train.finetune_epochs": 2})
    train, select = toy_set(48, 0), toy_set(24, 1)
    mask = np.array([True, True, False])

    def fit(name, t, m):
        work = tmp_path / name
        work.mkdir()
        fit_classifier(cfg, t, select, GROUPS, None, 0, torch.device("cpu"), work, class_mask=m)
        return torch.load(work / "best.pt", weights_only=True), pd.read_csv(work / "history.csv")

    Y = train.Y.copy()
    Y[:, 2] = 1 - Y[:, 2]                     # the masked class's labels, all flipped
    first, h1 = fit("a", train, mask)
    second, h2 = fit("b", replace(train, Y=Y), mask)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert h1.equals(h2)
    third, _ = fit("c", replace(train, Y=Y), None)
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_heads_on_cached_features_learn_what_heads_on_the_frozen_backbone_learn(tmp_path):
    """A recipe that never trains the backbone (warm-up only) gives the same heads whether they see
    the images through the frozen backbone or its cached features (how the tables train)."""
    from trcgl.features import compute_features, feature_normalisation
    from trcgl.models import build_model
    from trcgl.train import fit_classifier

    cfg = toy_cfg(**{"pretrain.enabled": False, "train.warmup_epochs": 2, "train.finetune_epochs": 0})
    train, select = toy_set(48, 0), toy_set(24, 1)
    (tmp_path / "images").mkdir()
    fit_classifier(cfg, train, select, GROUPS, None, 0, torch.device("cpu"), tmp_path / "images")
    images = torch.load(tmp_path / "images" / "best.pt", weights_only=True)
    model = build_model(cfg, 3, train.Y)
    model.load_state_dict(images)
    mean, std = feature_normalisation(train)
    cached = {name: compute_features(model.backbone.eval(), s, mean, std, torch.device("cpu"))
              for name, s in (("train", train), ("select", select))}
    (tmp_path / "features").mkdir()
    fit_classifier(cfg, train, select, GROUPS, None, 0, torch.device("cpu"), tmp_path / "features", features=cached)
    heads = torch.load(tmp_path / "features" / "best.pt", weights_only=True)
    for k in images:
        assert torch.allclose(images[k].float(), heads[k].float(), atol=2e-3), k
    h1, h2 = (pd.read_csv(tmp_path / n / "history.csv") for n in ("images", "features"))
    assert np.allclose(h1.selection_mAP, h2.selection_mAP, atol=2e-3)


def heads_only_toy(epochs: int):
    """A toy task for heads on cached features (the warm-up only, ``epochs`` epochs): its config,
    train and selection sets, and the frozen random backbone's features of both."""
    from trcgl.features import compute_features, feature_normalisation
    from trcgl.models import build_model

    cfg = toy_cfg(**{"pretrain.enabled": False, "train.warmup_epochs": epochs, "train.finetune_epochs": 0})
    train, select = toy_set(48, 0), toy_set(24, 1)
    torch.manual_seed(0)
    backbone = build_model(cfg, 3, train.Y).backbone.eval()
    mean, std = feature_normalisation(train)
    cached = {name: compute_features(backbone, s, mean, std, torch.device("cpu"))
              for name, s in (("train", train), ("select", select))}
    return cfg, train, select, cached


def test_heads_on_cached_features_resume_from_a_checkpoint_without_the_backbone(tmp_path, monkeypatch):
    """With a frozen backbone the per-epoch checkpoint leaves the backbone out (it never changes);
    a run killed after an epoch resumes to the same best weights, and best.pt is a whole model."""
    from trcgl.models import build_model
    from trcgl.train import fit_classifier

    cfg, train, select, cached = heads_only_toy(3)

    def fit(folder):
        folder.mkdir(exist_ok=True)
        fit_classifier(cfg, train, select, GROUPS, None, 0, torch.device("cpu"), folder, features=cached)

    fit(tmp_path / "straight")

    def killed(epoch):
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_after_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "resumed")
    last = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert last["model"] and not any(k.startswith("backbone.") for k in last["model"])
    monkeypatch.setattr(train_mod, "_after_epoch", lambda epoch: None)
    fit(tmp_path / "resumed")
    a, b = (torch.load(tmp_path / n / "best.pt", weights_only=True) for n in ("straight", "resumed"))
    assert set(a) == set(build_model(cfg, 3, train.Y).state_dict())
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    h1, h2 = (pd.read_csv(tmp_path / n / "history.csv") for n in ("straight", "resumed"))
    pd.testing.assert_frame_equal(h1, h2)


def test_stage2_continues_a_stage1_run_and_trains_only_the_last_stages(tmp_path):
    """Stage 2 after a stage 1 on cached features (the ``finetune`` stage): it starts from the
    stage 1 run's best weights, keeps the backbone's earlier stages frozen with
    ``train.finetune_stages``, learns in the last one; with nothing to learn (rates ~0) its best
    epoch is the start's, whose weights and selection probabilities it keeps."""
    from trcgl.train import fit_classifier

    cfg, train, select, cached = heads_only_toy(2)
    (tmp_path / "stage1").mkdir()
    torch.manual_seed(0)
    fit_classifier(cfg, train, select, GROUPS, None, 0, torch.device("cpu"), tmp_path / "stage1", features=cached)
    start = torch.load(tmp_path / "stage1" / "best.pt", weights_only=True)

    def stage2(folder, **over):
        folder.mkdir()
        c = cfg.replace({"train.warmup_epochs": 0, "train.finetune_epochs": 2, "train.finetune_stages": 1, **over})
        fit_classifier(c, train, select, GROUPS, None, 0, torch.device("cpu"), folder, start=tmp_path / "stage1")
        return torch.load(folder / "best.pt", weights_only=True), pd.read_csv(folder / "history.csv")

    learnt, history = stage2(tmp_path / "learns")
    assert list(history.stage) == ["finetune", "finetune"]
    last = max(int(k.split(".")[2]) for k in start if k.startswith("backbone.stages."))
    trunk = [k for k in start if k.startswith("backbone.stem.") or
             (k.startswith("backbone.stages.") and int(k.split(".")[2]) < last)]
    tail = [k for k in start if k.startswith(f"backbone.stages.{last}.")]
    assert trunk and tail
    assert all(torch.equal(start[k], learnt[k]) for k in trunk)           # frozen stages never move
    if history.selection_mAP.max() > pd.read_csv(tmp_path / "stage1" / "history.csv").selection_mAP.max():
        assert not all(torch.equal(start[k], learnt[k]) for k in tail)    # the kept epoch learnt there
    kept, _ = stage2(tmp_path / "still", **{"train.backbone_lr": 1e-12, "train.head_lr": 1e-12})
    assert all(torch.allclose(start[k].float(), kept[k].float(), atol=1e-8) for k in start)
    assert np.allclose(np.load(tmp_path / "still" / "selection_probs.npy"),
                       np.load(tmp_path / "stage1" / "selection_probs.npy"), atol=2e-3)


def test_a_stage2_table_continues_the_heads_only_run_of_the_same_row():
    """``tables.stage2``: that table's runs are ``finetune`` requests whose start is exactly the
    heads-only run another table trains for the same recipe (computed once); other tables are
    unchanged."""
    from trcgl.graph import Runner
    from trcgl.stages.tables import row_run
    from trcgl.tables import table_rows

    cfg = load_config("smoke", {"tables.stage2": ["controls"], "tables.stage2_epochs": 1, "tables.stage2_stages": 1},
                      device="cpu")
    controls, dose = table_rows(cfg, "controls"), table_rows(cfg, "dose")
    assert controls[0].name == dose[0].name          # "no extra images" in both
    stage2, plain = row_run(cfg, controls[0], 0), row_run(cfg, dose[0], 0)
    assert stage2.stage == "finetune" and plain.stage == "classifier"
    assert stage2.cfg.train.finetune_epochs == 1 and plain.cfg.train.finetune_epochs == 0
    assert stage2.cfg.train.finetune_stages == 1 and plain.cfg.train.finetune_stages is None
    r = Runner()
    assert r.identity(stage2.params["start"]) == r.identity(plain)
    base = load_config("smoke", {"tables.stage2": []}, device="cpu")
    assert row_run(base, table_rows(base, "controls")[0], 0).stage == "classifier"


def test_plateau_decisions_by_hand():
    """``train.plateau_patience`` (here 2): the rate is divided by 10 once, at the first epoch that
    ends 2 epochs without a better score; then training stops after 2 more without one (counted
    from the later of the best epoch and the reduction)."""
    from trcgl.train import plateau_decisions

    assert plateau_decisions([], 2) == (1.0, False)
    assert plateau_decisions([0.1, 0.2, 0.3], 2) == (1.0, False)              # still improving
    assert plateau_decisions([0.3, 0.2], 2) == (1.0, False)                   # one epoch since the best
    assert plateau_decisions([0.3, 0.2, 0.3], 2) == (0.1, False)              # two (a tie is no better): reduced
    assert plateau_decisions([0.3, 0.2, 0.1, 0.2], 2) == (0.1, False)         # one epoch since the reduction
    assert plateau_decisions([0.3, 0.2, 0.1, 0.2, 0.2], 2) == (0.1, True)     # two: stop
    assert plateau_decisions([0.3, 0.2, 0.1, 0.4, 0.2], 2) == (0.1, False)    # a better epoch after the reduction
    assert plateau_decisions([0.3, 0.2, 0.1, 0.4, 0.2, 0.3], 2) == (0.1, True)


def test_training_until_the_selection_score_stops_improving_stops_and_resumes_there(tmp_path, monkeypatch):
    """With ``train.plateau_patience`` 1 and a rate too small to move the selection score, the run
    stops after 3 of its 8 planned epochs (a stall: rate / 10; another stall: stop); a run killed
    after its second epoch resumes to the same history and weights; without patience all 8 run."""
    from trcgl.train import fit_classifier

    cfg, train, select, cached = heads_only_toy(8)
    cfg = cfg.replace({"train.warmup_lr": 1e-12})

    def fit(folder, c):
        folder.mkdir(exist_ok=True)
        fit_classifier(c, train, select, GROUPS, None, 0, torch.device("cpu"), folder, features=cached)
        return pd.read_csv(folder / "history.csv")

    plateau = cfg.replace({"train.plateau_patience": 1})
    straight = fit(tmp_path / "straight", plateau)
    assert len(straight) == 3 and straight.selection_mAP.nunique() == 1
    assert np.allclose(straight.lr, [1e-12, 1e-12, 1e-13], rtol=1e-6, atol=0)     # divided by 10 after the stall
    assert len(fit(tmp_path / "cosine", cfg)) == 8

    def killed(epoch):
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_after_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "resumed", plateau)
    monkeypatch.setattr(train_mod, "_after_epoch", lambda epoch: None)
    pd.testing.assert_frame_equal(straight, fit(tmp_path / "resumed", plateau))
    a, b = (torch.load(tmp_path / n / "best.pt", weights_only=True) for n in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
