"""The image backbone: a timm ConvNeXtV2 (any size) on grayscale input (Eq. 7, X = φ(I; θ)).

Weights start random unless ``checkpoint`` names a local timm-format state dict (e.g. the
ImageNet ``convnextv2_base`` weights saved with ``torch.save(model.state_dict())``); it is read with
``torch.load(weights_only=True)`` and its RGB stem is folded to one channel with timm's
``adapt_input_conv``. Nothing is downloaded.

``stage`` picks the feature map: ``-1`` the last stage (stride 32, the paper's setting), ``2`` the
third (stride 16), which keeps a 4x4 map at 64 px on the CPU profiles.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from timm.models import adapt_input_conv
from torch import nn
from ..errors import TrcglError


class BackboneError(TrcglError, RuntimeError):
    """A backbone cannot be built as configured (missing or mismatching weights, bad stage)."""


class Backbone(nn.Module):
    def __init__(self, name: str = "convnextv2_atto", stage: int = -1, in_chans: int = 1,
                 checkpoint: str | Path | None = None):
        super().__init__()
        model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
        if checkpoint:
            load_checkpoint(model, checkpoint, in_chans)
        info = model.feature_info
        if stage == -1 or stage == len(info) - 1:
            self.stem, self.stages, self.norm = model.stem, model.stages, model.norm_pre
            stage = len(info) - 1
        elif hasattr(model, "stages") and 0 <= stage < len(info):
            self.stem, self.stages, self.norm = model.stem, model.stages[: stage + 1], nn.Identity()
        else:
            raise BackboneError(f"stage {stage} is not available for {name} (stages 0..{len(info) - 1} or -1)")
        self.name = name
        self.out_channels = info[stage]["num_chs"]
        self.reduction = info[stage]["reduction"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> X of shape (B, D, H/r, W/r)."""
        return self.norm(self.stages(self.stem(x)))


def load_checkpoint(model: nn.Module, path: str | Path, in_chans: int = 1) -> None:
    """Load a local timm-format state dict; only classifier-head keys may be missing or extra."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(
            f"backbone checkpoint not found: {path}. Download the timm weights for this model "
            "(e.g. convnextv2_base.fcmae_ft_in22k_in1k) on a machine with internet, save them with "
            "torch.save(model.state_dict(), PATH), and set model.checkpoint to PATH")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    stem_key = next((k for k in state if k.endswith("weight") and k.startswith("stem")), None)
    if stem_key is not None and state[stem_key].shape[1] != in_chans:
        state[stem_key] = adapt_input_conv(in_chans, state[stem_key])
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes differ: another model size
        raise BackboneError(f"{path} does not fit this {type(model).__name__}: {str(err).splitlines()[1].strip()}") from None
    bad = [k for k in list(result.missing_keys) + list(result.unexpected_keys) if not k.startswith("head")]
    if bad:
        raise BackboneError(f"{path} does not fit this {type(model).__name__}: mismatching keys {bad[:5]}")
