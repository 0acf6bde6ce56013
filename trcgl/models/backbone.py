"""The image backbone: a timm ConvNeXtV2 (any size) on grayscale input (Eq. 7, X = φ(I; θ)).

Weights start random unless ``checkpoint`` names a local file of timm weights (``.pth`` /
``.bin`` saved with ``torch.save(model.state_dict())``, or ``.safetensors``). Loading is timm's
own: :func:`create_timm_model` passes the file to ``timm.create_model(pretrained=True,
pretrained_cfg_overlay=dict(file=PATH))``, which reads either format with ``weights_only``, remaps
original-format checkpoints, folds an RGB stem to one channel and drops the ImageNet classifier.
Before that the file is read once to check that it is a state dict that fits the model, so a
wrong file is one :class:`CheckpointError` naming it, never a traceback from deep inside timm.
Nothing is downloaded.

``stage`` picks the feature map: ``-1`` the last stage (stride 32, the paper's setting), ``2`` the
third (stride 16), which keeps a 4x4 map at 64 px on the CPU profiles.

``final_norm`` keeps timm's final ``LayerNorm2d`` in use, as the released code does (it builds the
ConvNeXtV2 with ``num_classes=0, global_pool=""``, whose output is the last stage after the head's
norm, applied at every location); a loaded checkpoint's ``head.norm`` weights are then used. At an
intermediate stage (the CPU profiles) there is no pretrained norm of that width: a fresh
``LayerNorm2d`` (weight 1, bias 0, as timm initialises its own) stands in. ``batchnorm`` adds the
released code's ``BatchNorm2d`` after it.
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from timm.layers import LayerNorm2d
from torch import nn

from ..errors import TrcglError

log = logging.getLogger(__name__)

DOWNLOAD_HINT = ("on a machine with internet, save timm.create_model(NAME, pretrained=True).state_dict() with "
                 "torch.save or safetensors.torch.save_file (NAME e.g. convnextv2_base.fcmae_ft_in22k_in1k) and set "
                 "model.checkpoint to that file")


class BackboneError(TrcglError, RuntimeError):
    """A backbone cannot be built as configured (missing or mismatching weights, bad stage)."""


class CheckpointError(BackboneError):
    """A checkpoint file is missing, unreadable, not a state dict, or does not fit the model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file (.safetensors, or anything else through
    ``torch.load(weights_only=True)``), unwrapped as timm unwraps training checkpoints (EMA weights
    first); every way a file can fail to be one is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. To use pretrained weights, {DOWNLOAD_HINT}")
    try:
        if path.suffix == ".safetensors":
            import safetensors.torch

            state = safetensors.torch.load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load / safetensors raise many types for a bad file
        detail = str(err).strip().splitlines()[0].split(". ")[0][:100] if str(err).strip() else "no detail"
        raise CheckpointError(f"cannot read {path} as model weights ({type(err).__name__}: {detail}); it is not a "
                              f"complete .pth or .safetensors file. To re-save it, {DOWNLOAD_HINT}") from None
    if isinstance(state, Mapping):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):   # timm's order
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        what = (f"a {type(state).__name__}" if not isinstance(state, Mapping)
                else "an empty dict" if not state else "a dict that is not name -> tensor")
        raise CheckpointError(f"{path} holds {what}, not a state dict of named tensors (save the model's "
                              f"state_dict(), not the model or a single tensor): {DOWNLOAD_HINT}")
    return dict(state)


def _checkpoint_keys(state: dict, model: nn.Module) -> set[str]:
    """The names the file's tensors get after the model's own timm checkpoint filter (which maps
    original-format checkpoints to timm's names)."""
    module = importlib.import_module(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None:
        return set(state)
    try:
        return set(filter_fn(dict(state), model))
    except Exception:   # a filter that cannot map this file: judge the names as they are
        return set(state)


def create_timm_model(name: str, checkpoint: str | Path | None = None, in_chans: int = 1, **kwargs) -> nn.Module:
    """``timm.create_model(name, in_chans=..., **kwargs)``, with weights from a local file when
    ``checkpoint`` is given (timm's loader; only classifier keys may be missing or extra)."""
    try:
        if not checkpoint:
            return timm.create_model(name, pretrained=False, in_chans=in_chans, **kwargs)
        state = read_state_dict(checkpoint)
        probe = timm.create_model(name, pretrained=False, in_chans=in_chans, **kwargs)
    except RuntimeError as err:  # timm: unknown model name
        if isinstance(err, TrcglError):
            raise
        raise BackboneError(f"timm has no model '{name}': {err}") from None
    classifier = probe.pretrained_cfg.get("classifier") or ()
    heads = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    own, theirs = set(probe.state_dict()), _checkpoint_keys(state, probe)
    missing = sorted(k for k in own - theirs if not k.startswith(heads))
    extra = sorted(k for k in theirs - own if not k.startswith(heads))
    if missing or extra:
        raise CheckpointError(f"{checkpoint} does not fit {name}: missing {missing[:4]} ({len(missing)}), "
                              f"unexpected {extra[:4]} ({len(extra)}). Use the weights of this exact model: {DOWNLOAD_HINT}")
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(checkpoint)),
                                 in_chans=in_chans, **kwargs)
    except RuntimeError as err:  # shapes differ: another model size
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err)[:200])
        raise CheckpointError(f"{checkpoint} does not fit {name}: {detail}. Use the weights of this exact model: "
                              f"{DOWNLOAD_HINT}") from None


class Backbone(nn.Module):
    def __init__(self, name: str = "convnextv2_atto", stage: int = -1, in_chans: int = 1,
                 checkpoint: str | Path | None = None, final_norm: bool = False, batchnorm: bool = False,
                 drop_path_rate: float = 0.0):
        super().__init__()
        extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}   # timm's stochastic depth
        model = create_timm_model(name, checkpoint, in_chans, num_classes=0, global_pool="", **extra)
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
        if final_norm:
            head_norm = getattr(getattr(model, "head", None), "norm", None)
            if stage != len(info) - 1:
                self.final_norm = LayerNorm2d(self.out_channels)   # no pretrained norm of this width
            elif isinstance(head_norm, nn.Module) and not isinstance(head_norm, nn.Identity):
                self.final_norm = head_norm                        # timm's own, with the checkpoint's weights
            else:
                raise BackboneError(f"{name} has no final head norm to keep (model.final_norm needs a ConvNeXt)")
        if batchnorm:
            self.bn = nn.BatchNorm2d(self.out_channels)

    def split(self, last: int) -> tuple[list[nn.Module], list[nn.Module]]:
        """(trunk, tail): the modules before the last ``last`` stages, and those stages with the
        norms after them: what stage 2 keeps frozen and what it trains when it fine-tunes only the
        end of the backbone (``train.finetune_stages``)."""
        n = len(self.stages)
        if not 1 <= last <= n:
            raise BackboneError(f"train.finetune_stages must be 1..{n} for this backbone ({n} stages), got {last}")
        after = [getattr(self, k) for k in ("final_norm", "bn") if hasattr(self, k)]
        return [self.stem, *self.stages[: n - last]], [*self.stages[n - last:], self.norm, *after]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> X of shape (B, D, H/r, W/r)."""
        X = self.norm(self.stages(self.stem(x)))
        if hasattr(self, "final_norm"):
            X = self.final_norm(X)
        if hasattr(self, "bn"):
            X = self.bn(X)
        return X
