"""Eq. 4 on a tiny UNet: classifier-free guidance, batched and in two passes."""
import pytest
import torch

from trcgl.diffusion.models import build_unet, build_vae, guided_noise


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_unet(8, in_channels=4, block_out_channels=(16, 32), cross_attention_dim=12,
                      attention_levels=1, attention_head_dim=4).eval()


def test_attention_only_at_the_lowest_levels(unet):
    assert [type(b).__name__ for b in unet.down_blocks] == ["DownBlock2D", "CrossAttnDownBlock2D"]
    assert [type(b).__name__ for b in unet.up_blocks] == ["CrossAttnUpBlock2D", "UpBlock2D"]
    with pytest.raises(ValueError):
        build_unet(8, block_out_channels=(16, 32), attention_levels=3)


def test_cfg_is_eq_4_and_batched_equals_two_passes(unet):
    torch.manual_seed(1)
    x = torch.randn(3, 4, 8, 8)
    cond, uncond = torch.randn(3, 5, 12), torch.randn(3, 5, 12)
    t = torch.tensor(10)
    with torch.no_grad():
        eps_c = unet(x, t, encoder_hidden_states=cond).sample
        eps_u = unet(x, t, encoder_hidden_states=uncond).sample
        for omega in (0.0, 1.0, 3.5):
            out = guided_noise(unet, x, t, cond, uncond, omega)
            assert torch.allclose(out, eps_u + omega * (eps_c - eps_u), atol=1e-5)
        assert torch.allclose(guided_noise(unet, x, t, cond, uncond, 1.0), eps_c, atol=1e-5)


def test_vae_round_trip_shapes():
    vae = build_vae(in_channels=1, latent_channels=4, block_out_channels=(8, 16, 16)).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.sample()
        assert z.shape == (2, 4, 8, 8)
        assert vae.decode(z).sample.shape == x.shape


def test_pooled_condition_enters_the_time_embedding_and_cfg_still_holds():
    from trcgl.diffusion.models import predict_noise

    torch.manual_seed(0)
    unet = build_unet(8, 4, (16, 32), 12, attention_levels=1, attention_head_dim=4, pooled_condition=True).eval()
    assert unet.config.class_embed_type == "projection"
    x, t = torch.randn(2, 4, 8, 8), torch.tensor(10)
    cond, uncond = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    with torch.no_grad():
        eps_c, eps_u = predict_noise(unet, x, t, cond), predict_noise(unet, x, t, uncond)
        plain = unet(x, t, encoder_hidden_states=cond, class_labels=torch.zeros(2, 12)).sample
        assert not torch.allclose(eps_c, plain, atol=1e-4)          # the token mean is used
        assert torch.allclose(guided_noise(unet, x, t, cond, uncond, 2.5), eps_u + 2.5 * (eps_c - eps_u), atol=1e-5)
