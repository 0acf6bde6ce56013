"""Table 1's baselines and losses: hand computations, shapes, the CLIP path with a tiny local
stand-in, and each baseline learning the toy task of the trainer tests."""
import math

import numpy as np
import pytest
import torch

from trcgl import load_config
from trcgl.cache import ArtifactCache
from trcgl.config import PROFILES, ConfigError
from trcgl.tables import table1_rows, tables_config
from trcgl.losses import TrainingLoss, drw_weights, ldam_margins, weighted_bce
from trcgl.models import build_model
from trcgl.models.baselines import ClipClassifier, ClipWeightsMissing, CosineLinear, CSRAHead, TimmClassifier
from trcgl.graph import key_config
from trcgl.stages import train_classifier

from .test_train import GROUPS, toy_cfg, toy_set


def test_ldam_margins_and_drw_weights_by_hand():
    assert np.allclose(ldam_margins([1, 16, 256], 0.5), [0.5, 0.25, 0.125])
    assert np.allclose(ldam_margins([0, 1]), [0.5, 0.5])          # no positives counts as one
    w = drw_weights([1, 2], beta=0.5)                                # raw: 1 and 0.5/0.75
    assert np.allclose(w, np.array([1.0, 2 / 3]) / np.mean([1.0, 2 / 3]))


def test_ldam_loss_lowers_positive_logits_by_the_scaled_margin():
    cfg = load_config("smoke", {"train.loss": "ldam", "model.head_scale": 2.0, "train.drw_epoch": 1,
                                "train.drw_beta": 0.5})
    counts = np.array([1, 16])
    loss = TrainingLoss(cfg, counts)
    z = torch.tensor([[0.3, -0.2], [1.0, 0.5]])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    w = torch.ones(2)
    shifted = z - 2.0 * torch.tensor([0.5, 0.25]) * y
    assert torch.isclose(loss(z, y, w, epoch=0), weighted_bce(shifted, y, w))
    cw = torch.tensor(drw_weights(counts, 0.5), dtype=torch.float32)
    assert torch.isclose(loss(z, y, w, epoch=1), weighted_bce(shifted, y, w, cw))   # DRW from epoch 1
    with pytest.raises(ValueError, match="unknown train.loss"):
        TrainingLoss(load_config("smoke", {"train.loss": "focal"}), counts)


def test_cosine_head_and_csra_by_hand():
    head = CosineLinear(3, 2, scale=5.0)
    f = torch.randn(4, 3)
    cos = torch.nn.functional.cosine_similarity(f[:, None], head.weight[None], dim=-1)
    assert torch.allclose(head(f), 5.0 * cos, atol=1e-6)

    csra = CSRAHead(2, 1, lam=0.5, temperature=math.inf)
    csra.classifier.weight.data = torch.tensor([[[[3.0]], [[4.0]]]])  # ‖w‖ = 5
    X = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])                  # locations: (1, 0) and (0, 2)
    s = torch.tensor([3.0 / 5, 8.0 / 5])                               # per-location normalised scores
    assert torch.allclose(csra(X), (s.mean() + 0.5 * s.max()).reshape(1, 1))
    csra.temperature = 0.0                                              # uniform attention: mean
    assert torch.allclose(csra(X), (1.5 * s.mean()).reshape(1, 1))
    csra.temperature = 2.0
    a = torch.softmax(2.0 * s, 0)
    assert torch.allclose(csra(X), (s.mean() + 0.5 * (a * s).sum()).reshape(1, 1))


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "vit_tiny_patch16_224", "convnextv2_atto"])
def test_timm_baselines_take_grayscale_and_give_class_logits(name):
    model = TimmClassifier(name, 5, image_size=32).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32))["logits"].shape == (2, 5)
    assert {id(p) for p in model.head_parameters()} == {id(p) for p in model.head.parameters()}


def test_build_model_dispatches_and_clip_without_weights_is_a_clear_error(tmp_path):
    cfg = load_config("smoke", {"model.arch": "timm", "model.backbone": "resnet18", "model.head": "cosine"})
    assert isinstance(build_model(cfg, 4).head, CosineLinear)
    csra = build_model(load_config("smoke", {"model.arch": "csra"}), 4)
    assert isinstance(csra.head, CSRAHead)
    with pytest.raises(ClipWeightsMissing, match="needs pretrained CLIP weights"):
        build_model(load_config("smoke", {"model.arch": "clip"}), 4)
    with pytest.raises(ValueError, match="unknown model.arch"):
        build_model(load_config("smoke", {"model.arch": "mlp"}), 4)


def test_clip_row_runs_from_a_local_folder(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    tiny = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            image_size=32, patch_size=8, projection_dim=16)
    CLIPVisionModel(tiny).save_pretrained(tmp_path / "clip")
    model = ClipClassifier(tmp_path / "clip", 3)
    out = model(torch.randn(2, 1, 64, 64))["logits"]
    assert out.shape == (2, 3)
    out.sum().backward()
    assert model.head.weight.grad is not None


def test_new_options_at_their_neutral_value_leave_the_cache_key_alone():
    cfg = load_config("smoke")
    key = key_config(cfg, ("model", "train"))
    assert "model.arch" not in key and "train.loss" not in key and "model.backbone" in key
    assert key_config(cfg.replace({"model.arch": "csra"}), ("model",))["model.arch"] == "csra"


@pytest.mark.slow
@pytest.mark.parametrize("over", [
    {"model.arch": "timm", "model.backbone": "resnet18"},
    {"model.arch": "csra"},
    {"model.arch": "timm", "model.backbone": "convnextv2_atto", "model.head": "cosine", "train.loss": "ldam",
     "train.drw_epoch": 2},
], ids=["resnet18", "csra", "ldam-drw"])
def test_each_baseline_learns_the_toy_task(over, tmp_path):
    result = train_classifier(toy_cfg(**over), toy_set(240, 0), toy_set(120, 1), GROUPS, cache=ArtifactCache(tmp_path))
    assert result.history.selection_mAP.max() > 0.85, result.history


def test_csra_with_a_learnt_scale_fits_frozen_features_that_the_published_head_cannot():
    """On fixed features of small norm the published CSRA head's logits are bounded (unit class
    vectors, no bias): it cannot make a rare class confidently negative. With ``scale`` (a learnt
    logit scale and a per-class bias) the same head fits them; by hand, the scaled head's output is
    scale · (base + λ · attention) + bias."""
    g = torch.Generator().manual_seed(0)
    X = 0.05 * torch.randn(512, 8, 2, 2, generator=g)
    direction = torch.randn(8, generator=g)
    Y = ((X.mean((2, 3)) @ direction) > 0.09).float()[:, None].repeat(1, 2)     # ~10 % positives
    losses = {}
    for scale in (None, 10.0):
        torch.manual_seed(0)
        head = CSRAHead(8, 2, lam=0.1, temperature=1.0, scale=scale)
        opt = torch.optim.Adam(head.parameters(), 0.05)
        for _ in range(300):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(X), Y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[scale] = loss.item()
    assert Y.mean() < 0.3
    assert losses[10.0] < 0.5 * losses[None], losses
    head = CSRAHead(8, 2, scale=3.0)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.5, -1.0]))
        plain = CSRAHead(8, 2)
        plain.classifier.weight.copy_(head.classifier.weight)
        assert torch.allclose(head(X[:4]), 3.0 * plain(X[:4]) + torch.tensor([0.5, -1.0]))


@pytest.mark.parametrize("profile", PROFILES)
def test_ldams_deferred_reweighting_starts_within_the_schedule(profile):
    """Table 1's LDAM row re-weights from ``tables.ldam_drw_at`` of its epochs, before its last one,
    also where the schedule is warm-up (heads) only; a ``train.drw_epoch`` past the end is refused."""
    cfg = tables_config(load_config(profile))
    t = next(r for r in table1_rows(cfg) if r.name == "ConvNeXt + LDAM").cfg.train
    total = t.warmup_epochs + t.finetune_epochs
    assert t.loss == "ldam" and t.drw_epoch == min(round(cfg.tables.ldam_drw_at * total), total - 1) < total
    if profile == "cpu":        # 30 epochs of heads only: re-weighting from epoch 25 (1-based)
        assert (t.warmup_epochs, t.finetune_epochs, t.drw_epoch) == (30, 0, 24)
    with pytest.raises(ConfigError, match="train.drw_epoch .* past the schedule"):
        cfg.replace({"train.drw_epoch": total})


@pytest.mark.parametrize("stage", [2, -1])
def test_table_1_reads_a_cut_convnext_beside_a_whole_one(stage):
    """The timm rows read whole networks; where TRCGL-Net's feature stage cuts the ConvNeXt, Table 1
    also has a whole-network ConvNeXt row and a whole-network TRCGL-Net row, each differing from its
    cut twin in that key alone (the TRCGL-Net pair with the same extra images), and the pair rule
    sets TRCGL-Net against each baseline at the baseline's depth."""
    from trcgl.tables import OURS, WHOLE_CONVNEXT, WHOLE_OURS, table1_pair, table1_peers

    cfg = tables_config(load_config("cpu", {"model.feature_stage": stage}))
    rows = {r.name: r for r in table1_rows(cfg)}
    assert rows["ConvNeXt"].cfg.model.feature_stage == stage
    if stage == -1:
        assert WHOLE_CONVNEXT not in rows and WHOLE_OURS not in rows
        assert "whole network" in rows["ConvNeXt"].meta["model here"]
        assert table1_pair("ConvNeXt", rows) == (OURS, "ConvNeXt") and table1_pair("ResNet", rows) == (OURS, "ResNet")
        assert table1_peers(OURS, list(rows)) == [r for r in rows if r != OURS]      # one depth: every baseline
        return
    whole, cut = rows[WHOLE_CONVNEXT].cfg, rows["ConvNeXt"].cfg
    assert whole.model.feature_stage == -1 and whole.replace({"model.feature_stage": stage}) == cut
    assert f"cut after stage {stage}" in rows["ConvNeXt"].meta["model here"]
    ours, whole_ours = rows[OURS], rows[WHOLE_OURS]
    assert whole_ours.cfg.model.feature_stage == -1 and whole_ours.cfg.replace({"model.feature_stage": stage}) == ours.cfg
    assert whole_ours.extra == ours.extra
    assert table1_pair("ConvNeXt", rows) == (WHOLE_OURS, WHOLE_CONVNEXT)    # the paper's ConvNeXt is a whole network
    assert table1_pair("ResNet", rows) == (WHOLE_OURS, "ResNet")
    assert table1_pair("ConvNeXt + CSRA", rows) == (OURS, "ConvNeXt + CSRA")
    # each TRCGL-Net row ranks among the baselines at its own depth; the "model here" column says the depth
    trained = [name for name, r in rows.items() if not r.unavailable]       # CLIP needs weights
    assert table1_peers(OURS, trained) == ["ConvNeXt", "ConvNeXt + LDAM", "ConvNeXt + CSRA"]
    assert table1_peers(WHOLE_OURS, trained) == [WHOLE_CONVNEXT, "ResNet", "EfficientNet", "ViT"]
    for name in table1_peers(OURS, rows) + [OURS]:
        assert f"cut after stage {stage}" in rows[name].meta["model here"]


def test_channels_last_is_a_memory_order_not_another_network():
    """``model.channels_last`` stores the 4-d weights channels-last and leaves the function: the
    same weights give the contiguous model's outputs (to float rounding), repeatably, on the
    network and on the backbone that cached features come from; the features' key holds it."""
    from trcgl.models import BACKBONE_KEYS, build_backbone

    x = torch.randn(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    base = {"model.arch": "timm", "model.backbone": "resnet18"}
    torch.manual_seed(0)
    plain = build_model(load_config("smoke", {**base, "model.channels_last": False}), 3).eval()
    torch.manual_seed(0)
    last = build_model(load_config("smoke", {**base, "model.channels_last": True}), 3).eval()
    convs = [p for p in last.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert any(not p.is_contiguous() for p in convs)          # (a 1-channel kernel is both orders at once)
    assert all(p.is_contiguous() for p in plain.parameters())
    with torch.no_grad():
        a, b, b2 = plain(x)["logits"], last(x)["logits"], last(x)["logits"]
    assert torch.equal(b, b2) and torch.allclose(a, b, atol=1e-4)
    bb = build_backbone(load_config("smoke", {**base, "model.channels_last": True}))
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in bb.parameters() if p.dim() == 4)
    assert "model.channels_last" in BACKBONE_KEYS


def test_channels_last_convnext_norms_its_responses_as_timm_does():
    """Under ``model.channels_last`` the ConvNeXtV2 backbone's global response norms take the
    sum-of-squares path (:class:`trcgl.models.trcgl_net.ChannelsLastGRN`): the same outputs and
    gradients as timm's layer on a channels-last input, timm's own forward on a contiguous one, and
    the whole network's logits those of the contiguous network (to float rounding)."""
    from timm.layers.grn import GlobalResponseNorm

    from trcgl.models.trcgl_net import ChannelsLastGRN

    timm_grn = GlobalResponseNorm(8, channels_last=False)
    with torch.no_grad():
        timm_grn.weight.normal_(generator=torch.Generator().manual_seed(1))
        timm_grn.bias.normal_(generator=torch.Generator().manual_seed(2))
    ours = GlobalResponseNorm(8, channels_last=False)
    ours.load_state_dict(timm_grn.state_dict())
    ours.__class__ = ChannelsLastGRN
    x = torch.randn(3, 8, 5, 4, generator=torch.Generator().manual_seed(0))
    for layout in (torch.channels_last, torch.contiguous_format):
        xa = x.contiguous(memory_format=layout).requires_grad_()
        xb = x.contiguous(memory_format=layout).requires_grad_()
        a, b = timm_grn(xa), ours(xb)
        (a * x).sum().backward()
        (b * x).sum().backward()
        assert torch.allclose(a, b, atol=1e-6) and torch.allclose(xa.grad, xb.grad, atol=1e-5)
    assert torch.allclose(timm_grn.weight.grad, ours.weight.grad, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(ours(x), timm_grn(x))               # contiguous: timm's forward itself

    net = {"model.arch": "trcgl", "model.label_gcn": False}
    x = torch.randn(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = build_model(load_config("smoke", {**net, "model.channels_last": False}), 3).eval()
    torch.manual_seed(0)
    last = build_model(load_config("smoke", {**net, "model.channels_last": True}), 3).eval()
    kinds = [type(m) for m in last.modules() if isinstance(m, GlobalResponseNorm)]
    assert kinds and set(kinds) == {ChannelsLastGRN}
    assert all(type(m) is GlobalResponseNorm for m in plain.modules() if isinstance(m, GlobalResponseNorm))
    with torch.no_grad():
        assert torch.allclose(plain(x)["logits"], last(x)["logits"], atol=1e-4)
