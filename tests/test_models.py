"""Each equation of Sec. 3.2-3.3 against a hand computation on a tiny tensor."""
import numpy as np
import pytest
import torch

from trcgl import load_config
from trcgl.models import (Backbone, ChannelClassAttention, ChannelGate, ClassAwareAttention, LabelGCN,
                          build_model, label_adjacency)
from trcgl.models.backbone import BackboneError


def test_channel_gate_eq_8_to_10():
    torch.manual_seed(0)
    gate = ChannelGate(channels=4, reduction=2, scale=1.0)
    X = torch.randn(1, 4, 3, 3)
    u = X[0].reshape(4, -1).mean(1)                                   # Eq. 8
    W1, b1, W2, b2 = gate.fc1.weight, gate.fc1.bias, gate.fc2.weight, gate.fc2.bias
    g = torch.sigmoid(W2 @ torch.relu(W1 @ u + b1) + b2)              # Eq. 9
    Xr, g_out = gate(X)
    assert torch.allclose(g_out[0], g, atol=1e-6)
    assert torch.allclose(Xr[0], X[0] + X[0] * g[:, None, None], atol=1e-6)   # Eq. 10
    gate.scale = 0.05                                                  # the released code's variant
    Xr, _ = gate(X)
    assert torch.allclose(Xr[0], X[0] + 0.05 * X[0] * g[:, None, None], atol=1e-6)


def test_class_aware_attention_eq_12_13():
    torch.manual_seed(1)
    att = ClassAwareAttention(channels=3, num_classes=2)
    Xr = torch.randn(1, 3, 2, 2)
    M = torch.einsum("cd,dhw->chw", att.conv.weight[:, :, 0, 0], Xr[0]) + att.conv.bias[:, None, None]
    for c in range(2):
        e = torch.exp(M[c])
        a = e / e.sum()                                                # Eq. 12
        v = (a[None] * Xr[0]).sum(dim=(1, 2))                          # Eq. 13
        v_out, a_out = att(Xr)
        assert torch.allclose(a_out[0, c], a, atol=1e-6)
        assert torch.allclose(v_out[0, c], v, atol=1e-5)
        assert torch.isclose(a_out[0, c].sum(), torch.tensor(1.0))


def test_fusion_eq_11_and_14():
    torch.manual_seed(2)
    head = ChannelClassAttention(channels=4, num_classes=3, reduction=2, lam=0.1)
    X = torch.randn(2, 4, 3, 3)
    out = head(X)
    s_gap = X.mean(dim=(2, 3)) @ head.classifier.weight.T + head.classifier.bias      # Eq. 11 on X
    v, _ = head.attention(out["X_r"])
    s_sp = (v * head.classifier.weight[None]).sum(-1) + head.classifier.bias           # shared weights
    assert torch.allclose(out["s_gap"], s_gap, atol=1e-6)
    assert torch.allclose(out["s_spatial"], s_sp, atol=1e-5)
    assert torch.allclose(out["s_img"], s_gap + 0.1 * s_sp, atol=1e-5)                # Eq. 14
    gap_only = ChannelClassAttention(4, 3, channel_gate=False, spatial=False)
    o = gap_only(X)
    assert "attention" not in o and torch.equal(o["X_r"], X) and torch.equal(o["s_img"], o["s_gap"])
    gated = ChannelClassAttention(4, 3, reduction=2, channel_gate=True, spatial=False)   # the "+ channel gate" rung
    o = gated(X)
    g = gated.gate.gate(X)
    by_hand = (X.mean(dim=(2, 3)) * (1 + g)) @ gated.classifier.weight.T + gated.classifier.bias
    assert torch.allclose(o["s_img"], by_hand, atol=1e-5)                                # GAP of X_r: the gate acts
    o["s_img"].sum().backward()
    assert gated.gate.fc1.weight.grad is not None and gated.gate.fc1.weight.grad.abs().sum() > 0


def test_adjacency_eq_15_to_20_by_hand():
    Y = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]])
    Q = Y.T @ Y                                                        # [[3,2,1],[2,2,1],[1,1,2]]
    Qn = Q / Q.sum(1, keepdims=True)                                   # rows: /6, /5, /4
    Qn = (Qn + Qn.T) / 2
    # tau = 0.2: off-diagonal (0,2)=(1/6+1/4)/2=0.208 stays; (1,2)=(1/5+1/4)/2=0.225 stays
    tau = 0.21
    keep = (Qn >= tau) | np.eye(3, dtype=bool)
    T = np.where(keep, Qn, 0) + np.eye(3)
    d = T.sum(1)
    expected = T / np.sqrt(np.outer(d, d))
    A = label_adjacency(Y, tau=tau)
    assert np.allclose(A, expected)
    assert A[0, 2] == 0 and A[1, 2] > 0 and np.allclose(A, A.T)


def test_threshold_on_the_diagonal_is_a_choice():
    # class 0 co-occurs with everything, so its self-share after Eq. 16-17 is 6/24 = 0.25 < tau,
    # while its edge to class 5 (which appears only with class 0) is (2/24 + 2/4) / 2 = 0.29 >= tau
    Y = np.array([[1, 1, 1, 1, 1, 0]] * 4 + [[1, 0, 0, 0, 0, 1]] * 2)
    Q = Y.T @ Y
    S = Q / Q.sum(1, keepdims=True)
    S = (S + S.T) / 2
    tau = 0.27
    assert np.isclose(S[0, 0], 0.25) and np.isclose(S[0, 5], 0.2916666) and S[0, 1] < tau

    def normalise(T):
        T = T + np.eye(6)
        d = T.sum(1)
        return T / np.sqrt(np.outer(d, d))

    off = (S >= tau) & ~np.eye(6, dtype=bool)
    kept = normalise(np.where(off | np.eye(6, dtype=bool), S, 0))   # default: diagonal never thresholded
    literal = normalise(np.where(S >= tau, S, 0))                     # Eq. 18 read literally
    assert np.allclose(label_adjacency(Y, tau), kept)
    assert np.allclose(label_adjacency(Y, tau, threshold_diagonal=True), literal)
    assert not np.allclose(kept, literal)
    assert np.isclose(literal[0, 0], 1 / (S[0, 5] + 1))               # only the + I is left
    assert np.isclose(kept[0, 0], (S[0, 0] + 1) / (S[0, 0] + S[0, 5] + 1))


def test_gcn_eq_21_to_24_by_hand():
    torch.manual_seed(3)
    A = label_adjacency(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]]), tau=0.0)
    gcn = LabelGCN(A, out_dim=5, embed_dim=4, hidden_dim=3)
    At = torch.tensor(A, dtype=torch.float32)
    W0, W1 = gcn.conv1.lin.weight.T, gcn.conv2.lin.weight.T
    E1 = torch.relu(At @ gcn.E0 @ W0)                                   # Eq. 21
    E2 = At @ E1 @ W1                                                   # Eq. 22
    assert torch.allclose(gcn.prototypes(), E2, atol=1e-5)
    g_r = torch.randn(2, 5)
    assert torch.allclose(gcn(g_r), g_r @ E2.T + gcn.bias, atol=1e-5)   # Eq. 24


def test_full_model_shapes_and_fusion_eq_25():
    cfg = load_config("smoke", {"model.feature_stage": 2})
    Y = np.random.default_rng(0).integers(0, 2, (50, 30))
    model = build_model(cfg, 30, Y).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert out["logits"].shape == (2, 30)
    assert out["attention"].shape == (2, 30, 4, 4)                      # stride 16 at 64 px
    assert torch.allclose(out["logits"], out["s_img"] + cfg.model.alpha * out["s_label"], atol=1e-5)
    no_gcn = build_model(cfg.replace({"model.label_gcn": False}), 30).eval()
    with torch.no_grad():
        o = no_gcn(x)
    assert "s_label" not in o and torch.equal(o["logits"], o["s_img"])


def test_backbone_stages_and_checkpoints(tmp_path):
    last = Backbone("convnextv2_atto", -1)
    assert (last.out_channels, last.reduction) == (320, 32)
    third = Backbone("convnextv2_atto", 2)
    assert third(torch.randn(1, 1, 64, 64)).shape == (1, 160, 4, 4)
    with pytest.raises(BackboneError, match="checkpoint not found"):
        Backbone("convnextv2_atto", -1, checkpoint=tmp_path / "missing.pth")
    # a local RGB timm checkpoint loads into the grayscale backbone (stem folded to one channel)
    import timm

    rgb = timm.create_model("convnextv2_atto", pretrained=False, num_classes=1000, in_chans=3)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pth")
    gray = Backbone("convnextv2_atto", -1, checkpoint=tmp_path / "rgb.pth")
    folded = rgb.stem[0].weight.sum(1, keepdim=True)
    assert torch.allclose(gray.stem[0].weight, folded, atol=1e-6)
    assert torch.equal(gray.stages[3].blocks[0].conv_dw.weight, rgb.stages[3].blocks[0].conv_dw.weight)
    other = timm.create_model("convnextv2_femto", pretrained=False, num_classes=10)
    torch.save(other.state_dict(), tmp_path / "femto.pth")
    with pytest.raises(BackboneError, match="does not fit"):
        Backbone("convnextv2_atto", -1, checkpoint=tmp_path / "femto.pth")


def test_the_control_graphs_keep_the_gcn_and_drop_the_co_occurrence():
    """``identity``: no class has a neighbour. ``shuffled``: the text's graph relabelled by one
    permutation (the same sorted edge weights and the same spectrum), with other neighbours; an
    unknown kind is refused."""
    from trcgl.models.label_gcn import adjacency, label_adjacency

    rng = np.random.default_rng(0)
    Y = (rng.random((400, 6)) < [0.5, 0.4, 0.3, 0.2, 0.1, 0.05]).astype(float)
    Y[:, 5] = Y[:, 0] * (rng.random(400) < 0.3)          # class 5 goes with class 0
    text, shuffled = label_adjacency(Y, 0.02), adjacency(Y, "shuffled", 0.02)
    assert np.array_equal(adjacency(Y, "identity"), np.eye(6))
    assert not np.allclose(shuffled, text)
    assert np.allclose(np.sort(shuffled, axis=None), np.sort(text, axis=None))
    assert np.allclose(np.linalg.eigvalsh(shuffled), np.linalg.eigvalsh(text))
    with pytest.raises(ValueError, match="model.adjacency must be one of"):
        adjacency(Y, "other")


def test_the_gcn_table_has_a_shuffled_graph_arm_where_co_occurrence_can_help():
    from trcgl.tables import GCN_CONDITIONS, GRAPH_CONTROL_CONDITIONS, SHUFFLED_GRAPH, gcn_condition_rows

    cfg = load_config("cpu")
    rows = {r.name: r for r in gcn_condition_rows(cfg)}
    for condition in GCN_CONDITIONS:
        arm = rows.get(f"{condition}: {SHUFFLED_GRAPH}")
        assert (arm is not None) == (condition in GRAPH_CONTROL_CONDITIONS)
        if arm is not None:     # the with-GCN arm of its condition, but for the graph
            assert arm.cfg.model.adjacency == "shuffled"
            assert arm.cfg.replace({"model.adjacency": "text"}) == rows[f"{condition}: with GCN"].cfg
