"""TRCGL-Net: backbone -> channel-class attention -> label GCN -> fusion (Eq. 7-25)."""
from __future__ import annotations

import numpy as np
import torch
from timm.layers.grn import GlobalResponseNorm
from torch import nn

from .backbone import Backbone
from .cca import ChannelClassAttention
from .label_gcn import LabelGCN, adjacency


class TRCGLNet(nn.Module):
    """s = s_img + α s_label (Eq. 25), with s_img = s_gap + λ s_spatial (Eq. 14).

    ``forward`` returns a dict: ``logits`` (the fused scores s) and the parts that the chapters
    show: ``s_gap``, ``s_spatial``, ``s_label``, ``attention`` (a_c maps, B × C × h × w), ``gate``.
    """

    def __init__(self, backbone: Backbone, head: ChannelClassAttention, gcn: LabelGCN | None = None,
                 alpha: float = 0.05):
        super().__init__()
        self.backbone, self.head, self.gcn, self.alpha = backbone, head, gcn, alpha

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.backbone(x))             # Eq. 7

    def forward_head(self, X: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything after the backbone, from its feature map X (cached features train this)."""
        out = self.head(X)
        logits = out["s_img"]
        if self.gcn is not None:
            g_r = out["X_r"].mean(dim=(2, 3))                  # Eq. 23
            out["s_label"] = self.gcn(g_r)
            logits = logits + self.alpha * out["s_label"]      # Eq. 25
        out["logits"] = logits
        return out

    def head_parameters(self):
        """Everything but the backbone: the heads and the graph (the paper's higher learning rate)."""
        backbone = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]


def _backbone(m, checkpoint=None, training: bool = True) -> Backbone:
    """The ConvNeXtV2 feature extractor of a ``model`` section (TRCGL-Net and the CSRA baseline);
    ``training``: with its stochastic depth (``model.drop_path_rate``, a no-op when evaluating)."""
    return Backbone(m.backbone, m.feature_stage, in_chans=1, checkpoint=checkpoint or m.checkpoint,
                    final_norm=m.final_norm, batchnorm=m.feature_batchnorm,
                    drop_path_rate=m.drop_path_rate if training else 0.0)


#: The config keys that decide a model's backbone (what cached features depend on).
BACKBONE_KEYS = ("model.arch", "model.backbone", "model.feature_stage", "model.final_norm", "model.feature_batchnorm",
                 "model.checkpoint", "model.channels_last", "data.image_size")


class ChannelsLastGRN(GlobalResponseNorm):
    """timm's ConvNeXtV2 global response norm, its spatial L2 norm as the square root of a sum of
    squares when the input is stored channels-last: ``Tensor.norm`` over (H, W) of such a tensor
    is a strided reduction that cost 16-40x the sum of squares on this CPU (one thread, 128 maps of
    640 x 4 x 4: 7.7 ms against 0.2 ms), more than all ConvNeXtV2-atto's convolutions gained from
    that order. The same value to float rounding; any other input goes through timm's forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial_dim != (2, 3) or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        x_g = x.square().sum(dim=self.spatial_dim, keepdim=True).sqrt()
        x_n = x_g / (x_g.mean(dim=self.channel_dim, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(self.wb_shape), self.weight.view(self.wb_shape), x * x_n)


def memory_format(module: nn.Module, cfg) -> nn.Module:
    """``module`` with its 4-d weights in channels-last order when ``model.channels_last`` (the
    convolutions then run in that order whatever the input's; the arithmetic stays fp32), its
    global response norms then :class:`ChannelsLastGRN`."""
    if not cfg.model.channels_last:
        return module
    for layer in module.modules():
        if type(layer) is GlobalResponseNorm:
            layer.__class__ = ChannelsLastGRN
    return module.to(memory_format=torch.channels_last)


def build_backbone(cfg, checkpoint=None) -> nn.Module:
    """The backbone a configuration describes, alone (reads only :data:`BACKBONE_KEYS`): the
    module whose output :meth:`forward_head` of the full model takes. ``checkpoint`` overrides
    ``model.checkpoint`` (e.g. the pretraining stage's weights)."""
    return memory_format(_build_backbone(cfg, checkpoint), cfg)


def _build_backbone(cfg, checkpoint=None) -> nn.Module:
    m = cfg.model
    if m.arch == "timm":
        from .baselines import timm_backbone

        return timm_backbone(m.backbone, cfg.data.image_size, checkpoint=checkpoint or m.checkpoint)
    if m.arch in ("trcgl", "csra"):
        return _backbone(m, checkpoint, training=False)
    raise ValueError(f"model.arch '{m.arch}' has no separable backbone (cached features need trcgl, csra or timm)")


def build_model(cfg, num_classes: int, train_labels: np.ndarray | None = None, checkpoint=None) -> nn.Module:
    """The model a configuration's ``model`` section describes (``model.arch``: TRCGL-Net or a
    Table 1 baseline); the label graph needs the training labels (with or without the extra
    rows, see ``train.counts_include_extra``). ``checkpoint`` overrides ``model.checkpoint``;
    ``model.channels_last``: see :func:`memory_format`."""
    return memory_format(_build_model(cfg, num_classes, train_labels, checkpoint), cfg)


def _build_model(cfg, num_classes: int, train_labels: np.ndarray | None = None, checkpoint=None) -> nn.Module:
    m = cfg.model
    if m.arch != "trcgl":
        from .baselines import ClipClassifier, CSRAClassifier, TimmClassifier

        if m.arch == "timm":
            return TimmClassifier(m.backbone, num_classes, cfg.data.image_size, head=m.head, scale=m.head_scale,
                                  checkpoint=checkpoint or m.checkpoint)
        if m.arch == "csra":
            return CSRAClassifier(_backbone(m, checkpoint), num_classes, m.csra_lam, m.csra_temperature, m.csra_scale)
        if m.arch == "clip":
            return ClipClassifier(cfg.paths.clip_image_encoder, num_classes)
        raise ValueError(f"unknown model.arch '{m.arch}': choose trcgl, timm, csra or clip")
    backbone = _backbone(m, checkpoint)
    head = ChannelClassAttention(backbone.out_channels, num_classes, m.reduction, m.gate_scale, m.lam,
                                 channel_gate=m.channel_gate, spatial=m.spatial_attention,
                                 share_classifier=m.share_classifier, gate_bias=m.gate_bias)
    if m.head == "cosine":  # the normalised classifier LDAM trains with (GAP branch only)
        from .baselines import CosineLinear

        if m.spatial_attention:
            raise ValueError("model.head 'cosine' needs model.spatial_attention false: the spatial branch "
                             "reuses a linear classifier's weights and bias")
        head.classifier = CosineLinear(backbone.out_channels, num_classes, m.head_scale)
    elif m.head != "linear":
        raise ValueError(f"unknown model.head '{m.head}': choose linear or cosine")
    gcn = None
    if m.label_gcn:
        if train_labels is None:
            raise ValueError("the label GCN needs the training labels to build its graph (Eq. 15)")
        A = adjacency(train_labels, m.adjacency, m.tau, m.tau_diagonal)
        gcn = LabelGCN(A, backbone.out_channels, m.gcn_embed_dim, m.gcn_hidden_dim, m.gcn_dropout, m.gcn_score,
                       m.gcn_cosine_scale, m.gcn_projection)
    return TRCGLNet(backbone, head, gcn, m.alpha)
