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
# # The other way round: erasing head lesions from real images (the inpainting paper)
#
# Chapter 2 generated tail-class images from text. Its weakness is plain: the generator learns
# from the same long-tailed data, so it has seen a tail lesion only a few dozen times.
# *X-ray Insights Unleashed* {cite}`yang2024xray` turns the problem round. **Normal**
# radiographs are plentiful, so train a diffusion model on normal images only; then take a
# diseased training image, find its head-class lesions with a classifier's Grad-CAM, and inpaint
# them with normal tissue. What is left is a real image whose remaining findings (the tail ones)
# were never generated at all, and whose labels are the original labels minus the erased head
# classes. Two extra pieces keep this sane: a knowledge module that refuses to erase a head lesion
# overlying a tail lesion (the paper asks an LLM; we use data), and **progressive incremental
# learning** (PIL), which adds the new images to training gradually.
#
# The steps, and where they live in `trcgl.inpaint`:
#
# | paper | here |
# |---|---|
# | DiT-XL/2 trained on 321k normal X-rays (Sec. 3.1.1) | `normal_dit`: a small `DiTTransformer2DModel` on the normal rows of the training split, saved as a diffusers `DiTPipeline` |
# | m_I = GradCAM(C, I, c) for head classes c (Eq. 1) | `masks`: grad-cam library, thresholded at a fraction of the maximum and dilated |
# | LLM knowledge guidance (Sec. 3.2.1) | `guard`: overlap of the classes' spatial priors from the real PadChest localizations |
# | I' = DiT(m_I, I, g) (Eq. 2) | `repaint`: RePaint with diffusers' `RePaintScheduler`; pixels outside the mask stay the original's |
# | D = D_o + D_i (1 − e^(−βn)) (Eq. 3) | `pil` and `train.extra_schedule: pil` |
#
# No paper compares this with text-guided tail generation on one benchmark with intervals; the
# end of this chapter does, on the same split and seeds as chapters 5-6, each arm the tables'
# ConvNeXt baseline (the line under each table gives its training).

# %% tags=["parameters"]
profile = "cpu"       # smoke | cpu | paper
device = "auto"       # auto | cpu | cuda
seed = None           # None: the profile's value
seeds = None          # the seeds every table row is trained with
n_normal = None       # normal images the DiT learns from
cam_threshold = None  # the mask: Grad-CAM at least this fraction of its maximum
keep_groups = None    # groups kept; images with one and a head finding are inpainted
guard = None          # padchest | masks | off
guard_threshold = None  # τ of the guard
pil_beta = None       # β of PIL (Eq. 3)

# %%
import matplotlib.pyplot as plt
from IPython.display import display

import trcgl.views
from trcgl.views import inpainting as view

ch = trcgl.views.setup(globals())
cfg = ch.cfg
tcfg, cohort, train_set, test_set, normals, setting = view.setting(ch)
print(setting)

# %% [markdown]
# ## 1. A generator that has only seen normal radiographs
#
# The DiT {cite}`peebles2023dit` cuts the latent (here the autoencoder of chapter 2, whose
# 16×16×4 latents stand in for Stable Diffusion's) into 2×2 patches and runs transformer blocks
# whose LayerNorms are modulated by the timestep (adaLN-Zero). It is trained with the usual
# noise-prediction loss on normal images only: rows of the training split labelled exactly
# `normal` that are not in the classifier's training set.

# %%
dit_text, fig = view.dit_samples(ch, normals)
print(dit_text)
plt.show()

# %% [markdown]
# ## 2. Where are the head lesions? Grad-CAM masks
#
# The classifier C is the GAP-only ConvNeXt of the earlier chapters, trained on real labels, and its
# masks come from Grad-CAM {cite}`selvaraju2017gradcam`; the
# paper uses head-class CAMs because the classifier is best at head classes. Each CAM is
# thresholded at `cam_threshold` of its maximum and dilated by `mask_dilation` pixels. On phantoms
# we know where every lesion really is, so each mask can be scored against the true lesion mask
# of its class: **precision** is the share of the mask that lies on the lesion, **recall** the
# share of the lesion the mask covers. A mask dropped at random reaches, on average, the
# lesion's share of the image as precision and the mask's share of the image as recall; those
# are the chance levels.

# %%
res, off = view.inpainted(ch)
cams, cam_text = view.cam_table(res)
display(cams)
print(cam_text)

# %% [markdown]
# ## 3. The entanglement guard
#
# The paper's knowledge module asks an LLM which head class is most likely entangled with the
# image's tail class, keeps it and erases the others. We ask the data instead. Each class gets a
# spatial prior $p_c$ over the frontal view, from the real PadChest localization statistics (how
# often each location token accompanies the finding, times that location's box, split by side);
# two classes are entangled by the overlap of their priors,
#
# $$e(h, k) = \sum_{x, y} \min\big(p_h(x, y),\, p_k(x, y)\big) \in [0, 1].$$
#
# In an image with head findings $H$ and kept findings $K$, the guard keeps the head class with
# the largest $\max_{k \in K} e(h, k)$ when that reaches $\tau$, and erases the rest.

# %%
fig = view.entanglement_figure(ch, cohort, train_set)
plt.show()

# %% [markdown]
# What the guard prevents: on phantoms we can measure how much of each **kept** finding's true
# lesion falls inside the inpainting mask, i.e. would be painted over with normal tissue while
# its label stays on the image.

# %%
display(view.guard_table(res, off))
print(view.guard_text(ch, res, off))

# %% [markdown]
# ## 4. Inpainting: RePaint with the normal DiT
#
# RePaint {cite}`lugmayr2022repaint` samples the masked part of the latent with the DiT while the
# known part is the original re-noised to the current step; every `jump_length` steps it jumps
# back and denoises again (`jump_n_sample` rounds), so the new tissue agrees with its
# surroundings. The result replaces the original only inside the pixel mask. Below, six images
# from the smallest mask to the largest: originals with their true head lesions (red), the mask,
# the result, and the result with the kept findings' true lesions (green), which should still be
# there. Look for the rows where a green outline encloses normal tissue: the mask painted over a
# finding whose label the image keeps, the failure the guard is meant to limit.

# %%
fig, gallery_text = view.gallery(res, train_set)
plt.show()
print(gallery_text)

# %% [markdown]
# ## 5. Progressive incremental learning
#
# Eq. (3) adds the inpainted set $D_i$ to the original $D_o$ in proportion $1 - e^{-\beta n}$ at
# epoch $n$. We count $n$ from 1 over the whole schedule and take the first images of a fixed
# random order, so images join and never leave. With this profile's recipe:

# %%
fig, pil_text = view.pil_schedule(tcfg, res)
plt.show()
print(pil_text)

# %% [markdown]
# ## 6. Head to head: prompt diffusion vs inpainting
#
# The arms, on the same split, recipe and seeds as Tables 1-5, each the tables' ConvNeXt
# baseline: no augmentation (Table 1's ConvNeXt row); + the filtered prompt-diffusion tail images
# of chapter 2 (all at once, weight w, as TRCGL-Net uses them); + every image of the synthetic
# budget unfiltered; + the unfiltered generated images cut to the inpainted set's count and given
# its loss weight and PIL schedule; + the inpainted images (with PIL, as their paper uses them);
# and + both. The "extra images", "loss weight" and "schedule" columns give each arm's dose and how
# it enters training. Most arms bring their set in as its own method uses it, so they compare
# recipes; the arm "as inpainting" differs from the inpainting arm in the images and their labels
# alone (each set as its method makes it), so that pair compares the two kinds of extra images at
# one dose; the line under the differences says how many of each carry a tail label. The inpainting paper's own comparison (its Table 3:
# a caption-conditioned DiT vs inpainting, ResNet-50, CheXpert and MIMIC, macro F1 in %) stands
# beside ours.

# %%
h2h_result, h2h, note = view.head_to_head(ch, tcfg)
print(note)
h2h

# %%
h2h_differences, h2h_text = view.head_to_head_differences(ch)
display(h2h_differences)
print(h2h_text)

# %% [markdown]
# ### Per class, in the paper's style
#
# The inpainting paper reports per-class F1 (in %) with the gain on tail classes in brackets. F1
# needs a threshold (`eval.f1_thresholds` says how the tables choose it, each run its own); a rare
# class that a model never ranks above its threshold on the test split scores F1 = 0. AP needs no
# threshold, so the per-class table shows AP (in %, mean over seeds) with the change against no
# augmentation, and the group means show both; the line below counts the classes at F1 = 0.

# %%
ap_table, group_table, f1_text = view.per_class(ch, h2h_result, test_set, cohort)
display(ap_table)
display(group_table)
print(f1_text)

# %% [markdown]
# ## 7. Ablation: the guard and PIL, and a control
#
# The paper's Table 4 shows augmentation without PIL *losing* to no augmentation (head classes
# forget) and PIL turning it into a gain. We cross that with the guard, and add a control the
# paper does not have: the very images that were inpainted, added again **unchanged** (all labels
# kept, same weight, same PIL schedule). If that row gains as much, the gain comes from seeing
# these images more often, not from erasing their head lesions.

# %%
ablation_result, ablation_table, note = view.ablation(ch, tcfg)
print(note)
display(ablation_table)

# %%
ablation_differences, effects_text, method_vs_copies, verdict_text = (
    view.ablation_findings(ch))
display(ablation_differences)
print(effects_text)
display(method_vs_copies)
print(verdict_text)

# %% [markdown]
# ## What this chapter shows, and what it cannot
#
# - Every number above was computed in this run, on phantom radiographs rendered from real
#   PadChest label rows (or on real PadChest images with `PADCHEST_ROOT`). The paper's values are
#   on CheXpert and MIMIC-CXR with ResNet-50 and a DiT-XL/2 trained on 321k normal images; only
#   the direction of the effects can be compared.
# - The method stands or falls with the masks. With a small classifier at 64 px, Grad-CAM is
#   coarse (a 4×4 feature map), so the masks are large and paint over
#   kept lesions too; the guard measures and limits this but cannot fix it. The `paper` profile
#   (224 px, pretrained-size models, GPU) is where the masks get sharp enough to test the idea.
# - The control of section 7 (the same images added again without inpainting) is the test the
#   paper does not report; its last line above says whether the erasing itself helped here.
# - The guard replaces GPT-4 with a reproducible rule. It knows only where findings tend to be,
#   not what they look like; `guard=masks` uses the phantoms' true lesion masks instead (not
#   available on real data) as an upper reference.

# %% [markdown]
# ## Exercises

# %% tags=["remove-input"]
view.exercises(ch)
