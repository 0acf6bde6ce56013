"""The diffusers pipeline: save_pretrained / load back / sample, clear errors, batching-independent
noise, and the training loop (a toy task learnt, cache, resume after an interruption)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDIMScheduler

from trcgl import load_config
from trcgl.cache import ArtifactCache
from trcgl.stages import train_prompt_diffusion
from trcgl.data.datasets import ImageSet
from trcgl.data.padchest import ClassSet
from trcgl.diffusion import training as training_mod
from trcgl.diffusion.models import build_unet, build_vae
from trcgl.diffusion.pipeline import (ContextVectors, PipelineError, PromptDiffusionPipeline, initial_noise,
                                      load_pipeline)
from trcgl.diffusion.text import PromptConditioner, load_text_encoder


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm")


def tiny_pipeline(minilm, m=2):
    torch.manual_seed(0)
    tok, enc = minilm
    cond = PromptConditioner(tok, enc, m=m, max_length=8)
    torch.nn.init.normal_(cond.context, std=1.0)
    vae = build_vae(1, 4, (8, 8)).eval()                         # 16 px -> 8x8 latents
    unet = build_unet(8, 4, (16, 32), 384, attention_levels=1, attention_head_dim=4).eval()
    return PromptDiffusionPipeline(vae=vae, unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100),
                                   text_encoder=enc, tokenizer=tok, context=ContextVectors.from_conditioner(cond))


def test_saved_pipeline_loads_back_and_samples_the_same(minilm, tmp_path):
    pipe = tiny_pipeline(minilm)
    prompts = ["chest x-ray with pneumothorax", "normal chest x-ray"]
    before = pipe(prompts, guidance_scale=3.0, num_inference_steps=3, seed=5, progress=False)
    assert before.shape == (2, 16, 16) and before.min() >= 0 and before.max() <= 1
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = load_pipeline(tmp_path / "pipe")
    assert isinstance(loaded, PromptDiffusionPipeline)
    assert torch.equal(loaded.context.vectors, pipe.context.vectors)
    after = loaded(prompts, guidance_scale=3.0, num_inference_steps=3, seed=5, progress=False)
    np.testing.assert_allclose(after, before, atol=1e-5)
    # the guidance scale and the prompt change the result; ω = 1 is the conditional model alone
    assert not np.allclose(loaded(prompts, guidance_scale=0.0, num_inference_steps=3, seed=5, progress=False), before)


def test_missing_or_incomplete_pipeline_folder_is_a_clear_error(minilm, tmp_path):
    with pytest.raises(PipelineError, match="no trcgl diffusion pipeline at .*nowhere .no such folder"):
        load_pipeline(tmp_path / "nowhere")
    tiny_pipeline(minilm).save_pretrained(tmp_path / "pipe")
    import shutil

    shutil.rmtree(tmp_path / "pipe" / "context")
    with pytest.raises(PipelineError, match=r"missing context/ \(no folder\)"):
        load_pipeline(tmp_path / "pipe")
    # a folder whose component folders are there but empty (an interrupted copy)
    (tmp_path / "hollow").mkdir()
    shutil.copy(tmp_path / "pipe" / "model_index.json", tmp_path / "hollow")
    for name in ("unet", "vae", "scheduler", "text_encoder", "tokenizer", "context"):
        (tmp_path / "hollow" / name).mkdir()
    with pytest.raises(PipelineError, match=r"incomplete .*hollow: missing unet/ \(lacks config.json, "
                                            r"diffusion_pytorch_model.safetensors or .*scheduler/ \(lacks"):
        load_pipeline(tmp_path / "hollow")


def test_noise_and_samples_do_not_depend_on_batching(minilm):
    pipe = tiny_pipeline(minilm)
    assert torch.equal(initial_noise(pipe.unet, 3, [4, 5]), initial_noise(pipe.unet, 3, range(6))[4:])
    prompts = [f"chest x-ray with finding {i}" for i in range(5)]
    kw = dict(guidance_scale=2.0, num_inference_steps=2, seed=1, progress=False)
    np.testing.assert_allclose(pipe(prompts, batch_size=2, **kw), pipe(prompts, batch_size=5, **kw), atol=1e-5)
    np.testing.assert_allclose(pipe(prompts, batched_cfg=False, **kw), pipe(prompts, **kw), atol=1e-4)


# ----------------------------------------------------------------------------- the training loop

TOY = ClassSet("toy", ("left opacity", "right opacity"), (("left opacity",), ("right opacity",)), ("head", "tail"))


def toy_set(n, seed):
    """16-px images: a bright blob on the left (class 0) or on the right (class 1), never both."""
    rng = np.random.default_rng(seed)
    side = rng.integers(0, 2, n)
    imgs = (rng.random((n, 16, 16)) * 40 + 20).astype(np.uint8)
    for i, s in enumerate(side):
        if s == 0:
            imgs[i, 5:11, 1:7] = 230
        else:
            imgs[i, 5:11, 9:15] = 230
    Y = np.stack([side == 0, side == 1], 1).astype(np.uint8)
    rows = pd.DataFrame({"ImageID": [f"t{seed}-{i}" for i in range(n)], "sentences": [[] for _ in range(n)]})
    return ImageSet(imgs, Y, np.ones(n, np.float32), rows, TOY.classes)


def toy_cfg(**over):
    base = {"diffusion.vae_channels": [16, 16], "diffusion.unet_channels": [32, 32], "diffusion.attention_levels": 1,
            "diffusion.vae_epochs": 6, "diffusion.epochs": 25, "diffusion.batch_size": 32,
            "diffusion.lr": 2e-3, "diffusion.context_vectors": 2, "diffusion.max_length": 12,
            "diffusion.n_train": None, "diffusion.label_condition": False, "diffusion.repeat_factor": None}
    base.update(over)
    return load_config("smoke", base, device="cpu")


@pytest.mark.slow
def test_diffusion_learns_where_the_prompt_puts_the_lesion_and_is_cached(tmp_path):
    cache = ArtifactCache(tmp_path)
    train, val = toy_set(384, 0), toy_set(64, 1)
    run = train_prompt_diffusion(toy_cfg(), TOY, train, val, cache=cache)
    assert run.history.loss.iloc[-1] < run.history.loss.iloc[0]
    n = 24
    kw = dict(guidance_scale=3.0, num_inference_steps=20, seed=0, progress=False)
    left = run.pipeline(["chest x-ray with left opacity"] * n, **kw)
    right = run.pipeline(["chest x-ray with right opacity"] * n, **kw)
    # the brighter half of each sample follows the prompt
    lr = lambda x: x[:, 4:12, :8].mean((1, 2)) - x[:, 4:12, 8:].mean((1, 2))   # noqa: E731
    assert (lr(left) > 0).mean() > 0.75 and (lr(right) < 0).mean() > 0.75, (lr(left), lr(right))
    misses = cache.misses
    train_prompt_diffusion(toy_cfg(), TOY, train, val, cache=cache)
    assert cache.misses == misses


@pytest.mark.slow
def test_diffusion_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    cfg = toy_cfg(**{"diffusion.vae_epochs": 2, "diffusion.epochs": 3})
    train, val = toy_set(64, 2), toy_set(32, 3)
    straight = train_prompt_diffusion(cfg, TOY, train, val, cache=ArtifactCache(tmp_path / "a"))

    def killed(stage, epoch):
        if stage == "unet" and epoch == 1:
            raise KeyboardInterrupt

    cache = ArtifactCache(tmp_path / "b")
    monkeypatch.setattr(training_mod, "_after_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train_prompt_diffusion(cfg, TOY, train, val, cache=cache)
    monkeypatch.setattr(training_mod, "_after_epoch", lambda stage, epoch: None)
    resumed = train_prompt_diffusion(cfg, TOY, train, val, cache=cache)
    a, b = straight.pipeline.unet.state_dict(), resumed.pipeline.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(straight.pipeline.context.vectors, resumed.pipeline.context.vectors)
    pd.testing.assert_frame_equal(straight.history, resumed.history)
    # the saved pipeline's files do not name the folder they were written in (the caches differ)
    configs = [sorted((tmp_path / c).glob("**/prompt-diffusion/*/pipeline/*/config.json")) for c in "ab"]
    assert configs[0] and [f.read_text() for f in configs[0]] == [f.read_text() for f in configs[1]]


def test_sampling_and_oracle_settings_do_not_retrain_the_model(tmp_path, monkeypatch):
    """The cache key of the diffusion model holds its training settings only."""
    import dataclasses

    from trcgl.graph import REGISTRY, get_stage

    seen = []

    def stub(ctx):
        seen.append(ctx.stage)
        (ctx.work / "done").write_text("1")

    for name in ("vae", "prompt-diffusion"):
        monkeypatch.setitem(REGISTRY, name, dataclasses.replace(get_stage(name), build=stub, load=lambda ctx: None))
    cache = ArtifactCache(tmp_path)
    train, val = toy_set(8, 0), toy_set(4, 1)
    for over in ({}, {"diffusion.guidance_scale": 7.0, "diffusion.oracle_per_class": 3, "diffusion.n_per_class": 2}):
        train_prompt_diffusion(toy_cfg(**over), TOY, train, val, cache=cache)
    assert seen == ["vae", "prompt-diffusion"]
    train_prompt_diffusion(toy_cfg(**{"diffusion.epochs": 2}), TOY, train, val, cache=cache)
    assert seen == ["vae", "prompt-diffusion", "prompt-diffusion"]     # the VAE does not depend on the UNet's epochs


def test_clipping_the_predicted_latent_is_applied_and_reversible(minilm):
    pipe = tiny_pipeline(minilm)
    kw = dict(guidance_scale=2.0, num_inference_steps=3, seed=2, progress=False)
    plain, clipped = pipe(["a"], **kw), pipe(["a"], clip_latents=0.1, **kw)
    assert pipe.scheduler.config.clip_sample and pipe.scheduler.config.clip_sample_range == 0.1
    assert not np.allclose(plain, clipped)
    np.testing.assert_allclose(pipe(["a"], **kw), plain, atol=1e-6)      # off again: the same as before
    assert not pipe.scheduler.config.clip_sample


def test_pretraining_on_a_disjoint_pool_comes_first_and_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """``diffusion.pretrain_pool``: ``pretrain_epochs`` epochs on the pool's rows, then the training
    rows (two histories, the pool's rows counted); the pool changes the model; an interruption in
    either phase resumes to the weights of an uninterrupted run; a pool larger than the pretraining
    pool is a one-line configuration error."""
    from trcgl.config import ConfigError

    over = {"diffusion.vae_epochs": 1, "diffusion.epochs": 2, "diffusion.pretrain_pool": 24,
            "diffusion.pretrain_epochs": 2, "pretrain.n_pool": 24}
    cfg = toy_cfg(**over)
    train, val, pool = toy_set(32, 2), toy_set(16, 3), toy_set(40, 4)
    straight = train_prompt_diffusion(cfg, TOY, train, val, cache=ArtifactCache(tmp_path / "a"), pool=pool)
    folder = straight.folder
    assert len(pd.read_csv(folder / "pool_history.csv")) == 2 and len(straight.history) == 2
    assert json.loads((folder / "rows.json").read_text())["pool rows"] == 24
    plain = train_prompt_diffusion(toy_cfg(**{**over, "diffusion.pretrain_pool": 0}), TOY, train, val,
                                   cache=ArtifactCache(tmp_path / "a"))
    a, p = straight.pipeline.unet.state_dict(), plain.pipeline.unet.state_dict()
    assert not all(torch.equal(a[k], p[k]) for k in a)              # the pool's epochs changed the model
    for phase, epoch in (("pool", 0), ("unet", 0)):
        def killed(stage, e, phase=phase, epoch=epoch):
            if stage == phase and e == epoch:
                raise KeyboardInterrupt

        cache = ArtifactCache(tmp_path / f"b-{phase}")
        monkeypatch.setattr(training_mod, "_after_epoch", killed)
        with pytest.raises(KeyboardInterrupt):
            train_prompt_diffusion(cfg, TOY, train, val, cache=cache, pool=pool)
        monkeypatch.setattr(training_mod, "_after_epoch", lambda stage, e: None)
        resumed = train_prompt_diffusion(cfg, TOY, train, val, cache=cache, pool=pool)
        b = resumed.pipeline.unet.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), phase
        pd.testing.assert_frame_equal(straight.history, resumed.history)
    with pytest.raises(ConfigError, match="pretrain_pool"):
        toy_cfg(**{**over, "diffusion.pretrain_pool": 25})
