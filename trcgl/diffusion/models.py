"""The latent diffusion model's parts, built with diffusers (paper Sec. 3.1, Eq. 3-6).

The paper fine-tunes a pretrained Stable Diffusion; no such weights exist here, so these builders
make small models to train on the phantom images (or load real ones from a local folder later).
On CPU profiles cross-attention is kept to the lowest resolutions, where it is cheap.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel


def build_unet(sample_size: int, in_channels: int = 4, block_out_channels=(64, 128, 256),
               cross_attention_dim: int = 384, attention_levels: int = 2, layers_per_block: int = 1,
               attention_head_dim: int = 8, pooled_condition: bool = False,
               label_dim: int = 0) -> UNet2DConditionModel:
    """A conditional UNet whose lowest ``attention_levels`` resolutions have cross-attention.

    ``pooled_condition``: the condition's mean over its tokens is also projected into the time
    embedding (as SDXL adds its pooled text embedding), a global path that a small model trained
    from scratch learns much faster than cross-attention alone. ``label_dim``: a multi-hot label
    vector of this width is projected into the time embedding too (diffusers'
    ``class_embed_type="projection"``; not in the paper, whose only condition is the prompt).
    """
    n = len(block_out_channels)
    if not 1 <= attention_levels <= n:
        raise ValueError(f"attention_levels must be in 1..{n}, got {attention_levels}")
    down = tuple("DownBlock2D" if i < n - attention_levels else "CrossAttnDownBlock2D" for i in range(n))
    up = tuple("CrossAttnUpBlock2D" if i < attention_levels else "UpBlock2D" for i in range(n))
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        down_block_types=down, up_block_types=up, block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block, cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim, norm_num_groups=unet_norm_groups(block_out_channels),
        # FiLM-style time conditioning (scale and shift after the norm): with few channels per
        # group, the default (a shift before the GroupNorm) would be normalised away
        resnet_time_scale_shift="scale_shift",
        class_embed_type="projection" if pooled_condition or label_dim else None,
        projection_class_embeddings_input_dim=(cross_attention_dim * pooled_condition + label_dim) or None,
    )


def unet_norm_groups(block_out_channels) -> int:
    """GroupNorm groups for a UNet: at most 32 and at least 4 channels per group."""
    return max(1, min(32, min(block_out_channels) // 4))


def build_vae(in_channels: int = 1, latent_channels: int = 4, block_out_channels=(32, 64, 128)) -> AutoencoderKL:
    """A small KL autoencoder; each extra block halves the latent resolution."""
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=in_channels, out_channels=in_channels, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels), layers_per_block=1,
        norm_num_groups=min(32, min(block_out_channels)),
    )


def predict_noise(unet: UNet2DConditionModel, x_t: torch.Tensor, t, cond: torch.Tensor,
                  labels: torch.Tensor | None = None) -> torch.Tensor:
    """ε_θ(z_t, t, E_cond): cross-attention on the condition's tokens, plus, in the time embedding,
    its token mean (a UNet built with ``pooled_condition``) and the multi-hot ``labels`` (a UNet
    built with ``label_dim``; all zeros is the unconditional label vector)."""
    vector = None
    if unet.config.class_embed_type == "projection":
        total, width = unet.config.projection_class_embeddings_input_dim, 0 if labels is None else labels.shape[-1]
        if total - width not in (0, cond.shape[-1]):
            raise ValueError(f"this UNet's time embedding takes a vector of width {total}: the pooled condition "
                             f"({cond.shape[-1]}) and/or the label vector; got labels of width {width}")
        parts = [cond.mean(dim=1)] if total > width else []
        vector = torch.cat(parts + ([labels.to(cond.dtype)] if width else []), dim=-1)
    elif labels is not None:
        raise ValueError("this UNet takes no label vector (built without label_dim)")
    return unet(x_t, t, encoder_hidden_states=cond, class_labels=vector).sample


def guided_noise(unet: UNet2DConditionModel, x_t: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor,
                 omega: float, labels: torch.Tensor | None = None) -> torch.Tensor:
    """ε_cfg = ε_u + ω (ε_c − ε_u) (Eq. 4), both branches in one batched forward pass (the
    unconditional branch gets all-zero labels)."""
    both_labels = None if labels is None else torch.cat([torch.zeros_like(labels), labels])
    both = predict_noise(unet, torch.cat([x_t, x_t]), t, torch.cat([uncond, cond]), both_labels)
    eps_u, eps_c = both.chunk(2)
    return eps_u + omega * (eps_c - eps_u)
