# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Prompt-latent diffusion for tail classes (Sec. 3.1)
#
# A tail class has a few dozen training images; the paper's answer is to **make more**: a
# text-guided latent diffusion model {cite}`rombach2022ldm` generates radiographs from prompts
# that name the tail finding, and the generated images join the training set with a lower loss
# weight. In the paper's ablation this is the largest single gain (+18.8 % mAP), and it is the
# one part its released code does not contain. This chapter builds it, trains it on the training
# split, and then asks the question a reviewer would ask: **do the generated images actually show
# the pathology they were prompted with?**
#
# The equations, in the order the code runs them:
#
# | | | in `trcgl` |
# |---|---|---|
# | Eq. 1 | $E_n = \mathrm{TextEncoder}(p_n) \in \mathbb{R}^{L\times d}$, a frozen pretrained encoder | `PromptConditioner.encode` |
# | Eq. 2 | $E_{cond} = \mathrm{Concat}(C, E_n) \in \mathbb{R}^{(m+L)\times d}$, $m$ learnable context vectors $C$ | `PromptConditioner.compose` |
# | Eq. 3 | $\mathcal{L} = \mathbb{E}_{z_0,\epsilon,t}\,\lVert \epsilon - \epsilon_\theta(z_t, t, E_{cond})\rVert^2$ on VAE latents | `diffusion.training` |
# | Eq. 4 | $\hat\epsilon = \epsilon_\theta(z_t, t, \varnothing) + \omega\,[\epsilon_\theta(z_t, t, E_{cond}) - \epsilon_\theta(z_t, t, \varnothing)]$ | `guided_noise` |
# | Eq. 5 | a DDIM step {cite}`song2021ddim` from $z_t$ to $z_{t-1}$ with $\hat\epsilon$ | `DDIMScheduler.step` |
# | Eq. 6 | $\hat x = \mathcal{D}(z_0)$, the VAE decoder | `PromptDiffusionPipeline` |
#
# Eq. 4 is classifier-free guidance {cite}`ho2022cfg`: one network learns both the conditional and
# the unconditional noise (the condition is dropped for a fraction of training samples) and ω
# pushes samples towards the prompt. **What differs from the paper, and why:** the paper fine-tunes
# a pretrained Stable Diffusion with a CLIP text encoder. No such weights can be obtained here, so
# we train a small latent diffusion model from scratch (a diffusers `AutoencoderKL` and
# `UNet2DConditionModel`) on the training phantoms, with the pretrained MiniLM sentence encoder
# as the frozen text encoder. The code path for real components exists: `paths.diffusion_pipeline`
# loads a saved pipeline folder, and `diffusion.text_encoder: clip` with `paths.text_encoder` loads
# a local CLIP text encoder.

# %% tags=["parameters"]
profile = "cpu"            # smoke | cpu | paper
device = "auto"            # auto | cpu | cuda
seed = None                # None: the profile's value (also for those below)
context_vectors = None     # m of Eq. 2 (0: prompts alone)
class_specific_context = None   # one set of context vectors per class
guidance_scale = None      # ω of Eq. 4 for the synthetic set
target_groups = None       # ["tail"] or ["tail", "medium"]
diffusion_epochs = None    # UNet training epochs
diffusion_pipeline = None  # a saved pipeline folder to load instead of training
label_condition = None     # the finding labels in the time embedding (not in the paper)
generator_repeat_factor = None   # repeat-factor threshold of the generator's batches

# %%
import matplotlib.pyplot as plt

import trcgl.views
from trcgl.views import diffusion as view

ch = trcgl.views.setup(globals())
cfg = ch.cfg
cohort, sets, targets, setting = view.setting(ch)
train_set, test_set = sets["train"], sets["test"]
print(setting)

# %% [markdown]
# ## Prompts and the text condition (Eq. 1-2)
#
# Every training image gets a prompt built from its own labels and from the localizations of the
# report sentences that mention them (chapter 1). The tokenizer splits it into word pieces; the
# frozen encoder turns the padded token sequence into $L$ vectors of width $d$; the $m$ context
# vectors go in front. Only the context vectors (and the UNet) learn.

# %%
print(view.prompt_walkthrough(ch, cohort, train_set, targets))

# %% [markdown]
# ## Training (Eq. 3)
#
# The autoencoder first learns to compress the training images into a latent grid; the UNet then
# learns to denoise noised latents (Eq. 3 predicts the noise; the recipe printed below says what
# this run's UNet predicts and how its loss is weighted), conditioned by cross-attention on $E_{cond}$.
# On CPU profiles the diffusion model learns from a subset of the training rows, **rarest class
# first** (every row with a tail or medium finding is in; head rows fill the rest), because the
# point is to generate the tail. Both stages are cached and resume after an interruption; the UNet
# weights used for sampling are an exponential moving average. A second model with **no context
# vectors** ($m = 0$) is trained on the same data and seed, for the comparison below.
#
# A model trained from scratch on the long-tailed rows sees a tail class far less often than a head
# class, and the paper's only condition, the prompt, reaches the UNet through a frozen sentence
# encoder that has never seen a radiograph. The recipe therefore has options the paper does not
# (each off in the paper's reading; the profile's choice is printed below): the finding labels as a multi-hot vector
# projected into the time embedding beside the text path (diffusers' `class_embed_type="projection"`),
# with per-label dropout so that classifier-free guidance still has an unconditional branch;
# **tail-balanced batches** by repeat-factor sampling {cite}`gupta2019lvis` over the generator's rows;
# and the objective: v-prediction {cite}`salimans2022progressive`, min-SNR-γ loss weights
# {cite}`hang2023minsnr` and a cosine noise schedule {cite}`nichol2021improved`.

# %%
print(view.training_rows_text(ch, cohort, train_set, targets))
run, run_no_ctx, components = view.models(ch)
print(components)

# %% [markdown]
# What the autoencoder keeps: test images beside their reconstructions. Fine detail the VAE
# loses cannot be generated by the diffusion model either, so this is the ceiling of the whole
# approach at this resolution.

# %%
fig, recon_text = view.reconstructions(ch, run, test_set)
print(recon_text)
plt.show()

# %% [markdown]
# The denoising loss per epoch (Eq. 3's, or the recipe's objective printed above where it differs),
# on the training batches and on a fixed held-out probe of
# selection-split images (fixed noise and timesteps, EMA weights, so the two models are compared on
# exactly the same terms):

# %%
fig, loss_text = view.loss_curves(ch, run, run_no_ctx)
plt.show()
print(loss_text)

# %% [markdown]
# ## Sampling: classifier-free guidance and DDIM (Eq. 4-6)
#
# Eq. 4 needs two noise predictions per step, conditional and unconditional. Batched, they are one
# forward pass over a doubled batch; the test suite checks that the batched result equals two
# separate passes and equals $\epsilon_u + \omega(\epsilon_c - \epsilon_u)$. Whether batching is
# faster depends on the machine (a doubled batch can cost more than two passes on a CPU); here
# are both, measured now:

# %%
view.cfg_speed(ch, run, cohort, train_set)

# %% [markdown]
# ## Fig. 3: synthetic tail-class images beside real ones
#
# For each target class, label sets are drawn from real training rows that contain it and turned
# into prompts; the synthetic image's labels are exactly the findings its prompt names. Each row
# below: one real training image of the class, then synthetic images generated at the profile's
# ω (`diffusion.guidance_scale`) from prompts like those printed under the figure.

# %%
fig, prompt_text = view.figure_3(ch, cohort, train_set, targets)
plt.show()
print(prompt_text)

# %% [markdown]
# ## Filtering with a classifier trained on real data
#
# Not every sample shows what it was asked to. The filter is the GAP-only classifier trained on
# the real training images (the baseline of the next chapter, loaded from the cache when that has
# run). An image is kept when the filter's probability for its prompted class is above the
# `filter_negative_quantile` quantile of the filter's probabilities on real **selection-split** images
# **without** that class: it must look more like the class than most real negatives do. A fixed
# cut-off such as 0.5 would keep nothing for a rare class, whose probabilities a classifier trained
# on imbalanced data keeps low. The selection split calibrates the threshold because the filter did
# not train on it (on its own training images a classifier is overconfident).

# %%
synthetic, synthetic_text, synthetic_report = view.synthetic(ch)
print(synthetic_text)
synthetic_report

# %% [markdown]
# ## Do the samples show the pathology? The oracle and the consistency score
#
# The filter is the paper's own tool, but it is trained on the same few tail images, so it cannot
# be the judge. On phantoms we can do better: the renderer knows the truth. The **oracle** is a
# classifier trained on many freshly rendered phantoms, balanced across classes (rows of the
# training split that are *not* in the training set), so it has seen plenty of every tail class.
# Its probability of the prompted class on a synthetic image is the **pathology-consistency
# score**; we compare it with the same score on unconditional samples (what the model draws when
# it is told nothing) and on real test images with and without the class. First, how good
# is the judge on real held-out images?

# %%
oracle, P_real, judge_scores, judge_text = view.judge(ch, cohort, sets, targets)
print(judge_text)
judge_scores.round(3)

# %%
consistency, P_unc = view.consistency(ch, cohort, oracle, P_real, test_set, targets)
consistency.round(3)

# %%
print(view.consistency_verdict(ch, consistency, judge_scores))

# %% [markdown]
# ## The diagnostic ladder: where is a tail class lost?
#
# A generator can fail a class at several places, and each calls for a different fix. The ladder
# scores every target class at each step, all with the same judge (the oracle's ROC AUC of the class;
# 0.5 is chance), so the first rung where a class drops says where it is lost:
#
# - **(a) real images**: real test images with the class against those without it. The judge's
#   own ceiling;
# - **(b) VAE reconstructions** of the same images. Whatever the autoencoder does not keep, no
#   latent generator can draw. If a class is lost here, the fix is the autoencoder, not the UNet;
# - **(c) prompted samples against real negatives** ("GAN-test"): do images generated for the class
#   look more like it than real images without it do? And **(c′) against unconditional samples**:
#   does the prompt add the finding, or does the generator draw the same thing whatever it is told?
# - **(d) classification accuracy score** (CAS {cite}`ravuri2019cas`): a classifier trained on the
#   generated images alone, tested on real test images. **(d\*)** is the same classifier trained on the
#   ideal generator's renders of the very same label sets: the most such a set could teach;
# - **(e) precision, recall, density and coverage** {cite}`naeem2020prdc` of the samples in the oracle's
#   feature space: are they realistic (precision, density) and do they cover the real class's
#   variety (recall, coverage)? Beside them, real selection images of the class score what a perfect
#   generator would at these sample sizes.

# %%
ladder, lost, prdc, ladder_text = view.ladder(
    ch, cohort, run, oracle, P_real, sets, targets)
print(ladder_text)
ladder

# %%
prdc

# %% [markdown]
# ## The guidance scale ω: fidelity against diversity (Eq. 4)
#
# The paper fixes ω without showing its effect. Here the same prompts and the same starting noise
# are sampled at several ω. Three numbers per ω, all in the oracle's feature space: the oracle's
# probability of the prompted class (fidelity), the Fréchet distance between synthetic images and
# real test images of the target classes (how far the synthetic distribution is from the
# real one; the dashed line is the distance between two real samples, training vs. test, the
# floor at these sample sizes), and the mean pairwise feature distance within a class (diversity).

# %%
sweep, fig, sweep_text = view.guidance_sweep(ch, oracle, sets, targets)
plt.show()
sweep.round(3)

# %%
print(sweep_text)
fig = view.sweep_grid(ch, sweep, targets)
plt.show()

# %% [markdown]
# ## With and without learned context vectors
#
# The context vectors are the paper's addition to plain prompt conditioning. Same data, seed and
# recipe, the profile's $m$ against $m = 0$: the held-out loss curves are above (with how far the
# vectors moved); here are rungs (c) and (c′) of the ladder for both models on the same prompts and
# noise.

# %%
compare, compare_text = view.context_comparison(
    ch, cohort, oracle, P_unc, P_real, test_set, targets)
print(compare_text)
compare

# %% [markdown]
# ## What this chapter does not show
#
# The paper's generator starts from Stable Diffusion, trained on billions of images; ours starts
# from nothing and sees a few thousand phantoms, so its samples are blurrier and its grip on rare,
# subtle findings weaker. The ladder compares the recipe's options one profile at a time: to see
# what an option does, run the chapter with it changed (exercise 4), or score several recipes on
# rungs (c) and (c′) at once with `tools/compare_generators.py` (the objective and schedule
# options, each a generator of its own, one seed each). Whether the synthetic set helps
# the classifier is measured where the classifier is trained with it: the controls of the
# main-results chapter, Table 3 and the synthetic-weight sweep (Table 4) use exactly this cached set.
# The `gpu` profile runs the same ladder at a larger image size with a larger UNet (its configuration
# says which); its rungs are whatever that run prints, and none of them is quoted on this page.
#
# ## Exercises
#
# 1. Run with `-p guidance_scale 7`. Does the kept fraction of the filter go up? Does the oracle
#    agree with the filter?
#    ```{admonition} Hint
#    :class: dropdown
#    Compare the `kept_fraction` column with the oracle's `synthetic` column class by class: the
#    filter was trained on the same few tail images as the generator, the oracle on many more.
#    ```
# 2. Switch to class-specific context vectors (`-p class_specific_context true`): each class gets
#    its own $m$ vectors, chosen by the row's rarest class. Which tail classes gain on the oracle?
#    ```{admonition} Hint
#    :class: dropdown
#    A class-specific context is a learned "class token": it can carry what the frozen text
#    encoder's word pieces do not, but it sees only that class's few rows.
#    ```
# 3. Generate for tail *and* medium classes (`-p target_groups '["tail", "medium"]'`). How does the
#    consistency score of medium classes compare with the tail's?
#    ```{admonition} Hint
#    :class: dropdown
#    Medium classes have many more training rows than tail classes (chapter 1 counts them per
#    class); expect the generator (and the oracle) to know them better.
#    ```
# 4. Turn the label path off (`-p label_condition false`), or the tail-balanced batches (a
#    `generator_repeat_factor` below every class's share of the labels repeats no row), and read
#    the ladder again: at which rung do the tail classes drop?
#    ```{admonition} Hint
#    :class: dropdown
#    Rung (b) does not move (the autoencoder is the same); compare rungs (c) and (c′) class by
#    class, and the context vectors' shift printed under the loss curves.
#    ```
