"""The comparison models of Table 1: plain timm networks, a cosine head for LDAM, CSRA, and CLIP.

* :class:`TimmClassifier`: any timm network (ResNet, EfficientNet, ConvNeXt, ViT) with its own
  global pooling and a linear head, or a cosine head (``head="cosine"``: s · cos(f, w_c), the
  normalised classifier LDAM {cite}`cao2019ldam` trains with). A local weights file loads
  through timm's own loader (:func:`~trcgl.models.backbone.create_timm_model`).
* :class:`CSRAHead`: class-specific residual attention {cite}`zhu2021csra`: per-location class
  scores from unit-norm class vectors, s_c = mean_j s_cj + λ · Σ_j softmax_j(T s_cj) s_cj
  (T = ∞ is max pooling), on the same ConvNeXtV2 feature map as TRCGL-Net.
* :class:`ClipClassifier`: a CLIP image encoder from a local ``from_pretrained`` folder with a
  linear head. No CLIP weights can be obtained here, so without a folder this row of Table 1
  has no number; a missing folder is a clear error.

Every model returns ``{"logits": ...}`` and has ``backbone`` and ``head_parameters()``, so the
two-stage trainer treats them like TRCGL-Net.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .backbone import Backbone, BackboneError, create_timm_model


class CosineLinear(nn.Module):
    """logits = s · cos(f, w_c) for every class c."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 10.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, in_features) / math.sqrt(in_features))
        self.scale = scale

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.scale * nn.functional.normalize(f, dim=1) @ nn.functional.normalize(self.weight, dim=1).T


def _head(in_features: int, num_classes: int, kind: str, scale: float) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "cosine":
        return CosineLinear(in_features, num_classes, scale)
    raise ValueError(f"unknown head '{kind}': choose linear or cosine")


def timm_backbone(name: str, image_size: int, in_chans: int = 1, checkpoint: str | Path | None = None) -> nn.Module:
    """A whole timm network without its classifier (its own pooling): pooled features (B, D)."""
    kwargs = {"img_size": image_size} if name.startswith(("vit", "deit")) else {}
    return create_timm_model(name, checkpoint, in_chans, num_classes=0, **kwargs)


class TimmClassifier(nn.Module):
    """A timm network (its own pooling) and a linear or cosine head."""

    def __init__(self, name: str, num_classes: int, image_size: int, in_chans: int = 1, head: str = "linear",
                 scale: float = 10.0, checkpoint: str | Path | None = None):
        super().__init__()
        self.backbone = timm_backbone(name, image_size, in_chans, checkpoint)
        self.head = _head(self.backbone.num_features, num_classes, head, scale)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.backbone(x))

    def forward_head(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        """The head on the backbone's pooled features."""
        return {"logits": self.head(f)}

    def head_parameters(self):
        return list(self.head.parameters())


class CSRAHead(nn.Module):
    """Class-specific residual attention: base (average) + λ · attention-pooled class scores.

    As in CSRA's code, each class's score map is the feature map projected on the class's
    **unit** weight vector, and there is no bias: the logits are bounded by the features' norm,
    which a fine-tuned backbone can grow. Heads trained on a frozen backbone's cached features
    cannot, and without a bias a rare class cannot be pushed below zero on every image: measured
    on the ``cpu`` profile's features, this head scored test mAP 0.16 where a linear probe scored
    0.27. ``scale`` (``model.csra_scale``, the profiles that train heads on cached features): the
    logits times a learnt scale starting at ``scale``, plus a learnt per-class bias, as a cosine
    classifier has (0.37 there); None: CSRA's head as published.
    """

    def __init__(self, channels: int, num_classes: int, lam: float = 0.1, temperature: float = 1.0,
                 scale: float | None = None):
        super().__init__()
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1, bias=False)
        self.lam, self.temperature = lam, temperature
        if scale is not None:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
            self.bias = nn.Parameter(torch.zeros(num_classes))
        else:
            self.scale = self.bias = None

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        w = self.classifier.weight                                     # (C, D, 1, 1)
        s = (self.classifier(X) / w.flatten(1).norm(dim=1)[None, :, None, None]).flatten(2)   # (B, C, HW)
        base = s.mean(-1)
        if math.isinf(self.temperature):
            att = s.max(-1).values
        else:
            att = (torch.softmax(self.temperature * s, dim=-1) * s).sum(-1)
        logits = base + self.lam * att
        return logits if self.scale is None else self.scale * logits + self.bias


class CSRAClassifier(nn.Module):
    """The TRCGL-Net backbone (same ConvNeXtV2 stage) with a CSRA head instead of channel-class attention."""

    def __init__(self, backbone: Backbone, num_classes: int, lam: float = 0.1, temperature: float = 1.0,
                 scale: float | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = CSRAHead(backbone.out_channels, num_classes, lam, temperature, scale)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.backbone(x))

    def forward_head(self, X: torch.Tensor) -> dict[str, torch.Tensor]:
        """The CSRA head on the backbone's feature map."""
        return {"logits": self.head(X)}

    def head_parameters(self):
        return list(self.head.parameters())


class ClipWeightsMissing(BackboneError):
    """The CLIP row of Table 1 needs pretrained CLIP image-encoder weights that are not here."""


class ClipClassifier(nn.Module):
    """A CLIP image encoder (transformers ``CLIPVisionModel`` from a local folder) + a linear head.

    Grayscale input is repeated to three channels and resized to the encoder's input size."""

    def __init__(self, path: str | Path | None, num_classes: int):
        super().__init__()
        from transformers import CLIPVisionModel

        if path is None or not (Path(path) / "config.json").is_file():
            raise ClipWeightsMissing(
                f"needs pretrained CLIP weights: no CLIP vision model at {path}. On a machine with internet run "
                "CLIPVisionModel.from_pretrained('openai/clip-vit-base-patch16').save_pretrained(PATH), "
                "copy PATH here and set paths.clip_image_encoder to it")
        try:
            self.backbone = CLIPVisionModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ClipWeightsMissing(f"the CLIP vision model at {path} cannot be loaded ({type(err).__name__}: "
                                     f"{' '.join(str(err).split())[:160]}); save it again with "
                                     "CLIPVisionModel.from_pretrained(...).save_pretrained(PATH)") from None
        self.size = self.backbone.config.image_size
        self.head = nn.Linear(self.backbone.config.hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = nn.functional.interpolate(x.repeat(1, 3, 1, 1), size=(self.size, self.size), mode="bilinear",
                                      align_corners=False)
        return {"logits": self.head(self.backbone(pixel_values=x).pooler_output)}

    def head_parameters(self):
        return list(self.head.parameters())
