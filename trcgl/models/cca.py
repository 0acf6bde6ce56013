"""Channel-class attention (paper Sec. 3.2, Eq. 8-14)."""
from __future__ import annotations

import torch
from torch import nn


class ChannelGate(nn.Module):
    """Eq. 8-10: u = GAP(X); g = σ(W2 δ(W1 u)); X_r = X + scale · X ⊙ g.

    ``scale=1`` is the paper's text; the released code uses 0.05. ``bias=False`` drops the biases
    of W1 and W2 (the released code's gate is two 1×1 convolutions without bias).
    """

    def __init__(self, channels: int, reduction: int = 16, scale: float = 1.0, bias: bool = True):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden, bias=bias)   # W1
        self.fc2 = nn.Linear(hidden, channels, bias=bias)   # W2
        self.scale = scale

    def gate(self, X: torch.Tensor) -> torch.Tensor:
        u = X.mean(dim=(2, 3))                                      # Eq. 8
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(u))))     # Eq. 9

    def forward(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gate(X)
        return X + self.scale * X * g[:, :, None, None], g          # Eq. 10


class ClassAwareAttention(nn.Module):
    """Eq. 12-13: M = conv1x1(X_r); a_c = softmax over space of M_c; v_c = Σ a_c X_r."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, Xr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, D, H, W = Xr.shape
        M = self.conv(Xr).flatten(2)                        # (B, C, HW) class response map
        a = torch.softmax(M, dim=-1)                        # Eq. 12
        v = torch.einsum("bcn,bdn->bcd", a, Xr.flatten(2))  # Eq. 13, (B, C, D)
        return v, a.view(B, -1, H, W)


class ChannelClassAttention(nn.Module):
    """The image branch: s_img = s_gap + λ s_spatial (Eq. 11, 14).

    The GAP branch pools the un-refined X (Eq. 11); the spatial branch attends over X_r. Without
    the spatial branch (``spatial=False`` with the gate on: chapter 3's "+ channel gate" rung) the
    gate would reach no score, so the GAP branch pools X_r instead: GAP(X_r) = u ⊙ (1 + scale · g),
    the gate acting on the pooled channels as a squeeze-and-excitation block does. With
    ``share_classifier`` the spatial scores use the GAP classifier's weights, s_spatial[c] =
    w_c · v_c + b_c (as in the released code); otherwise a class-wise classifier of its own.
    ``channel_gate=False`` or ``spatial=False`` switch the two parts off for ablations;
    ``gate_bias=False`` is the released code's gate without biases.
    """

    def __init__(self, channels: int, num_classes: int, reduction: int = 16, gate_scale: float = 1.0,
                 lam: float = 0.1, channel_gate: bool = True, spatial: bool = True, share_classifier: bool = True,
                 gate_bias: bool = True):
        super().__init__()
        self.gate = ChannelGate(channels, reduction, gate_scale, gate_bias) if channel_gate else None
        self.classifier = nn.Linear(channels, num_classes)
        self.attention = ClassAwareAttention(channels, num_classes) if spatial else None
        self.spatial_classifier = None
        if spatial and not share_classifier:
            self.spatial_classifier = nn.Parameter(torch.zeros(num_classes, channels))
            self.spatial_bias = nn.Parameter(torch.zeros(num_classes))
            nn.init.normal_(self.spatial_classifier, std=channels ** -0.5)
        self.lam = lam

    def forward(self, X: torch.Tensor) -> dict[str, torch.Tensor]:
        Xr, g = self.gate(X) if self.gate is not None else (X, None)
        pooled = X if self.attention is not None else Xr     # Eq. 11 on X; on X_r where nothing else reads it
        s_gap = self.classifier(pooled.mean(dim=(2, 3)))
        out = {"X_r": Xr, "gate": g, "s_gap": s_gap, "s_img": s_gap}
        if self.attention is not None:
            v, a = self.attention(Xr)
            if self.spatial_classifier is None:
                W, b = self.classifier.weight, self.classifier.bias
            else:
                W, b = self.spatial_classifier, self.spatial_bias
            s_spatial = (v * W[None]).sum(-1) + b
            out.update(attention=a, s_spatial=s_spatial, s_img=s_gap + self.lam * s_spatial)  # Eq. 14
        return out
