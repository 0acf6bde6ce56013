"""TRCGL-Net: backbone -> channel-class attention -> label GCN -> fusion (Eq. 7-25)."""
from __future__ import annotations

import numpy as np
import torch
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
        X = self.backbone(x)                                   # Eq. 7
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


def _backbone(m) -> Backbone:
    """The ConvNeXtV2 feature extractor of a ``model`` section (TRCGL-Net and the CSRA baseline)."""
    return Backbone(m.backbone, m.feature_stage, in_chans=1, checkpoint=m.checkpoint, final_norm=m.final_norm,
                    batchnorm=m.feature_batchnorm)


def build_model(cfg, num_classes: int, train_labels: np.ndarray | None = None) -> nn.Module:
    """The model a configuration's ``model`` section describes (``model.arch``: TRCGL-Net or a
    Table 1 baseline); the label graph needs the training labels (with or without the extra
    rows, see ``train.counts_include_extra``)."""
    m = cfg.model
    if m.arch != "trcgl":
        from .baselines import ClipClassifier, CSRAClassifier, TimmClassifier

        if m.arch == "timm":
            return TimmClassifier(m.backbone, num_classes, cfg.data.image_size, head=m.head, scale=m.head_scale,
                                  checkpoint=m.checkpoint)
        if m.arch == "csra":
            return CSRAClassifier(_backbone(m), num_classes, m.csra_lam, m.csra_temperature)
        if m.arch == "clip":
            return ClipClassifier(cfg.paths.clip_image_encoder, num_classes)
        raise ValueError(f"unknown model.arch '{m.arch}': choose trcgl, timm, csra or clip")
    backbone = _backbone(m)
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
