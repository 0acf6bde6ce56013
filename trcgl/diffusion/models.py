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
               attention_head_dim: int = 8) -> UNet2DConditionModel:
    """A conditional UNet whose lowest ``attention_levels`` resolutions have cross-attention."""
    n = len(block_out_channels)
    if not 1 <= attention_levels <= n:
        raise ValueError(f"attention_levels must be in 1..{n}, got {attention_levels}")
    down = tuple("DownBlock2D" if i < n - attention_levels else "CrossAttnDownBlock2D" for i in range(n))
    up = tuple("CrossAttnUpBlock2D" if i < attention_levels else "UpBlock2D" for i in range(n))
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        down_block_types=down, up_block_types=up, block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block, cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim, norm_num_groups=min(32, min(block_out_channels)),
    )


def build_vae(in_channels: int = 1, latent_channels: int = 4, block_out_channels=(32, 64, 128)) -> AutoencoderKL:
    """A small KL autoencoder; each extra block halves the latent resolution."""
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=in_channels, out_channels=in_channels, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels), layers_per_block=1,
        norm_num_groups=min(32, min(block_out_channels)),
    )


def guided_noise(unet: UNet2DConditionModel, x_t: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor,
                 omega: float) -> torch.Tensor:
    """ε_cfg = ε_u + ω (ε_c − ε_u) (Eq. 4), both branches in one batched forward pass."""
    both = unet(torch.cat([x_t, x_t]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    eps_u, eps_c = both.chunk(2)
    return eps_u + omega * (eps_c - eps_u)
