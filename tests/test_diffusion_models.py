"""Eq. 4 on a tiny UNet: classifier-free guidance, batched and in two passes; the label path,
the v-prediction target and min-SNR weights against their formulas; the generator's repeat factors."""
import numpy as np
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


def test_label_vector_enters_the_time_embedding_and_the_unconditional_branch_gets_zeros():
    from trcgl.diffusion.models import predict_noise

    torch.manual_seed(0)
    unet = build_unet(8, 4, (16, 32), 12, attention_levels=1, attention_head_dim=4, pooled_condition=True,
                      label_dim=3).eval()
    assert unet.config.projection_class_embeddings_input_dim == 15
    x, t = torch.randn(2, 4, 8, 8), torch.tensor(10)
    cond, uncond = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    y = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    with torch.no_grad():
        eps_y, eps_0 = predict_noise(unet, x, t, cond, y), predict_noise(unet, x, t, cond, torch.zeros(2, 3))
        assert not torch.allclose(eps_y, eps_0, atol=1e-4)            # the labels are used
        eps_u = predict_noise(unet, x, t, uncond, torch.zeros(2, 3))
        assert torch.allclose(guided_noise(unet, x, t, cond, uncond, 2.5, y), eps_u + 2.5 * (eps_y - eps_u), atol=1e-5)
        with pytest.raises(ValueError, match="width 15"):
            predict_noise(unet, x, t, cond, torch.ones(2, 4))
    plain = build_unet(8, 4, (16, 32), 12, attention_levels=1, attention_head_dim=4).eval()
    with pytest.raises(ValueError, match="no label vector"):
        predict_noise(plain, x, t, cond, y)
    only = build_unet(8, 4, (16, 32), 12, attention_levels=1, attention_head_dim=4, label_dim=3).eval()
    assert only.config.projection_class_embeddings_input_dim == 3
    with torch.no_grad():
        assert predict_noise(only, x, t, cond, y).shape == x.shape


def test_velocity_target_and_min_snr_weights_match_the_formulas():
    from diffusers import DDPMScheduler

    from trcgl.diffusion.training import denoising_target, loss_weights

    noise = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    z0, eps, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([0, 400, 999])
    a = noise.alphas_cumprod[t].double()
    v = a.sqrt()[:, None, None, None] * eps.double() - (1 - a).sqrt()[:, None, None, None] * z0.double()
    assert torch.allclose(denoising_target(noise, z0, eps, t).double(), v, atol=1e-5)
    snr = a / (1 - a)
    assert torch.allclose(loss_weights(noise, t, 5.0).double(), torch.clamp(snr, max=5.0) / (snr + 1), rtol=1e-4)
    eps_noise = DDPMScheduler(num_train_timesteps=1000)
    a = eps_noise.alphas_cumprod[t].double()
    snr = a / (1 - a)
    assert torch.equal(denoising_target(eps_noise, z0, eps, t), eps)
    assert torch.allclose(loss_weights(eps_noise, t, 5.0).double(), torch.clamp(snr, max=5.0) / snr, rtol=1e-4)
    assert loss_weights(eps_noise, t, None) is None
    assert loss_weights(eps_noise, t, 5.0)[0] < 1 and loss_weights(eps_noise, t, 5.0)[-1] == pytest.approx(1.0)


def test_label_dropout_and_condition_dropout_of_the_label_vector():
    from trcgl.data.batches import Shard
    from trcgl.diffusion.training import label_vectors

    Y = torch.ones(64, 5)
    shard = Shard(torch.arange(64), slice(0, 64), 64, 1.0)
    drop = torch.zeros(64, dtype=torch.bool)
    drop[:8] = True
    g = lambda: torch.Generator().manual_seed(0)   # noqa: E731
    assert torch.equal(label_vectors(Y, drop, 0.0, shard, g())[8:], Y[8:])
    assert label_vectors(Y, drop, 0.0, shard, g())[:8].sum() == 0          # a dropped condition: all-zero labels
    assert label_vectors(Y, drop, 1.0, shard, g()).sum() == 0
    half = label_vectors(Y, drop, 0.5, shard, g())[8:].mean()
    assert 0.4 < half < 0.6
    assert torch.equal(label_vectors(Y, drop, 0.5, shard, g()), label_vectors(Y, drop, 0.5, shard, g()))


def test_repeat_factor_sampling_repeats_the_generator_rows_of_rare_classes():
    from trcgl import load_config
    from trcgl.diffusion.training import epoch_rows

    Y = np.zeros((100, 2), np.uint8)
    Y[:98, 0] = 1
    Y[98:, 1] = 1                      # class 1: 2 of 100 label counts
    assert epoch_rows(load_config("smoke", {"diffusion.repeat_factor": None}), Y).tolist() == [1] * 100
    r = epoch_rows(load_config("smoke", {"diffusion.repeat_factor": 0.5}), Y)
    assert r[:98].tolist() == [1] * 98 and r[98:].tolist() == [5, 5]          # sqrt(0.5 / 0.02) = 5
    # over the target classes only: a rare class outside diffusion.target_groups repeats nothing
    cfg = load_config("smoke", {"diffusion.repeat_factor": 0.5, "diffusion.target_groups": ["tail"]})
    assert epoch_rows(cfg, Y, ["head", "tail"]).tolist() == [1] * 98 + [5, 5]
    assert epoch_rows(cfg, Y, ["tail", "head"]).tolist() == [1] * 100


def test_a_unet_learns_from_the_label_vector_alone_under_v_prediction_and_min_snr():
    """8x8 one-channel "latents": a bright block on the left for label [1, 0], on the right for
    [0, 1]; the text condition is the same for every image. Trained with the label path,
    v-prediction and min-SNR weights (the training module's target and weights), the denoiser's
    estimate of the clean image from an almost pure-noise input puts the block where the label says."""
    from diffusers import DDPMScheduler

    from trcgl.data.batches import Shard
    from trcgl.diffusion.models import predict_noise
    from trcgl.diffusion.training import denoising_target, label_vectors, loss_weights

    torch.manual_seed(0)
    unet = build_unet(8, 1, (16, 32), 8, attention_levels=1, attention_head_dim=4, label_dim=2)
    noise = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    cond = torch.zeros(32, 3, 8)
    g = torch.Generator().manual_seed(0)

    def images(side):
        x = -torch.ones(len(side), 1, 8, 8)
        for i, s in enumerate(side.tolist()):
            x[i, 0, 2:6, 0:4] = 1 if s == 0 else -1
            x[i, 0, 2:6, 4:8] = 1 if s == 1 else -1
        return x

    for _ in range(200):
        side = torch.randint(0, 2, (32,), generator=g)
        z0, eps = images(side), torch.randn(32, 1, 8, 8, generator=g)
        t = torch.randint(0, 1000, (32,), generator=g)
        drop = torch.rand(32, generator=g) < 0.1
        y = label_vectors(torch.nn.functional.one_hot(side, 2).float(), drop, 0.0, Shard(torch.arange(32), slice(0, 32), 32, 1.0), g)
        err = ((predict_noise(unet, noise.add_noise(z0, eps, t), t, cond, y) - denoising_target(noise, z0, eps, t)) ** 2)
        loss = (err.flatten(1).mean(1) * loss_weights(noise, t, 5.0)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        t = torch.full((32,), 950)
        z_t = torch.randn(32, 1, 8, 8, generator=g)           # at t = 950 almost nothing of the image is left
        a = noise.alphas_cumprod[950]
        for label, sign in (([1.0, 0.0], 1), ([0.0, 1.0], -1)):
            v = predict_noise(unet, z_t, t, cond, torch.tensor([label] * 32))
            x0 = a.sqrt() * z_t - (1 - a).sqrt() * v                      # the clean estimate under v-prediction
            contrast = x0[:, 0, 2:6, :4].mean((1, 2)) - x0[:, 0, 2:6, 4:].mean((1, 2))
            assert (sign * contrast > 0.5).float().mean() > 0.75 and (sign * contrast).mean() > 0.5, contrast
