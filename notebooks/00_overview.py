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
# # Overview: TRCGL-Net, rebuilt one section at a time
#
# TRCGL-Net {cite}`shao2026trcgl` attacks long-tailed multi-label chest X-ray classification
# with three ideas stacked on a ConvNeXtV2 backbone:
#
# 1. **prompt-latent diffusion** (Sec. 3.1) synthesises extra images of the rare (tail) classes
#    from text prompts, with learnable context vectors in the text condition;
# 2. **channel-class attention** (Sec. 3.2) reweights feature channels and gives every class
#    its own spatial attention map;
# 3. a **label co-occurrence GCN** (Sec. 3.3) lets rare classes borrow evidence from the
#    frequent classes they appear with.
#
# Each chapter of this book takes one of these pieces, states its equations, builds it from
# the `trcgl` package and measures what it changes. Every number on these pages was computed
# when the page was executed; the paper's own numbers appear only in columns labelled as the
# paper's.
#
# This page is executed by papermill with the parameters below; `make reproduce PROFILE=smoke`
# overrides them.

# %% tags=["parameters"]
profile = "cpu"   # smoke | cpu | paper
device = "auto"   # auto | cpu | cuda
seed = None       # None: the profile's seed

# %%
import pandas as pd
import matplotlib.pyplot as plt

import trcgl
import trcgl.config
from trcgl.chapters import chapter_map
from trcgl.plots import pipeline_overview
from trcgl.runtime import describe, seed_everything, select_device
from trcgl.views.common import table_display

table_display()   # tables show whole cells, a missing value as a dash
cfg = trcgl.config.from_notebook(globals())
dev = select_device(cfg.device)
seed_everything(cfg.seed, cfg.deterministic)
this_run = {"profile": cfg.profile, "config hash": cfg.hash(), **describe(dev)}
pd.Series(this_run, name="this run").to_frame()

# %% [markdown]
# ## How to read the numbers: a benchmark built to be able to fail
#
# The paper makes three claims: generated tail images help the tail; channel-class attention
# finds small findings; a label co-occurrence graph lets rare classes borrow evidence. A table
# that shows a method ahead of a baseline does not test any of them unless the same table could
# have shown it behind. Every chapter here follows one protocol, so each claim *can* fail:
#
# - **Three patient-disjoint splits.** The model learns on *train*, every choice (the best epoch,
#   F1 thresholds, the synthetic images' filter) is made on *selection*, and every reported number
#   comes from *test*, which chose nothing. The paper reports on the split it selected on.
# - **One set of real rows for every arm.** The diffusion model, its filter, the label sets it
#   draws from, the Grad-CAM classifier of the inpainting chapter and every classifier of every
#   table learn from the experiment's one training set. A method that brings extra data by design
#   gets a control arm that adds that same data directly.
# - **A positive and a negative control for every claim.** For the synthetic images, an *ideal
#   generator* (the phantom renderer drawing the same label sets: always right) must help the
#   tail, or the benchmark has no power to see a generator help; the same images with the tail
#   lesions left out (labels kept) must not. For the label graph, a condition where the tail's lesions are not drawn (only
#   co-occurrence can predict it) and one where co-occurrence is broken. For attention, finer
#   feature maps and a condition where rare findings are also subtle.
# - **Statistics that separate effects from noise.** Several seeds per arm; intervals that
#   resample the seeds and the test label rows together; differences between arms paired (both on
#   the same resample); the chance level of every metric in every table. The primary endpoint is
#   the tail's mean AUC; tail AP stands beside its chance level (the tail's prevalence).
# - **A fair task and a fair start.** The phantom renderer draws a rare finding as visibly as a
#   frequent one (chapter 1 measures each class's learnability ceiling), and the backbone starts
#   from a pretraining on other training rows with the head classes' labels only, as the paper's
#   starts from a model trained on chest radiographs.

# %% [markdown]
# ## The profile
#
# A profile is a YAML file of settings (`trcgl/configs/profiles/`). `smoke` is the CI scale,
# `cpu` the laptop default, `paper` the paper's setting on a GPU with real PadChest images.
# These are the data settings of the active profile:

# %%
pd.Series(cfg.data.to_dict(), name=cfg.profile).astype(str).to_frame()

# %% [markdown]
# ## Fig. 1: the pipeline
#
# The paper's overview figure, redrawn by code (`trcgl.plots.pipeline_overview`). Arrows carry
# the quantities named in the equations: the real label table feeds the tail-class prompts,
# the co-occurrence graph and the images; the diffusion model adds weighted synthetic tail
# images; the backbone's features $X$ are scored by a GAP branch (on $X$, Eq. 11) and, refined to
# $X_r$ by the channel gate, by a class-aware attention branch ($s_{img} = s_{gap} + \lambda s_{spatial}$,
# Eq. 14), and fused with
# the label-graph score ($s = s_{img} + \alpha s_{label}$, Eq. 25).

# %%
fig = pipeline_overview()
plt.show()

# %% [markdown]
# ## The equations at a glance
#
# | step | equations | what it computes |
# |---|---|---|
# | text condition | $E_{cond} = [C; E_n]$ (Eq. 1-2) | learnable context vectors $C$ before the prompt's token states $E_n$ |
# | diffusion | $\mathcal{L} = \lVert \epsilon - \epsilon_\theta(x_t, t, E_{cond}) \rVert^2$ (Eq. 3) | denoising objective |
# | sampling | $\epsilon_{cfg} = \epsilon_u + \omega(\epsilon_c - \epsilon_u)$ (Eq. 4), DDIM (Eq. 5) | guided tail-class images |
# | channel gate | $g = \sigma(W_2\delta(W_1 u))$, $X_r = X + X \odot g$ (Eq. 8-10) | refined features |
# | class attention | $a_c = \mathrm{softmax}(M_c)$, $v_c = \sum a_c X_r$ (Eq. 12-13) | a map and a feature per class |
# | image score | $s_{img} = s_{gap} + \lambda s_{spatial}$ (Eq. 14) | |
# | label graph | $Q = Y^\top Y \to A = D^{-1/2}\tilde Q D^{-1/2}$ (Eq. 15-20) | co-occurrence adjacency |
# | GCN | $E_2 = A\,\delta(A E_0 W_0) W_1$, $s_{label} = g_r E_2^\top + b$ (Eq. 21-24) | label-graph score |
# | fusion | $s = s_{img} + \alpha s_{label}$ (Eq. 25) | final logits |
#
# ## Paper section → chapter → module
#
# The status column is read from disk when this page runs: a chapter is "in this book" when
# its notebook and its modules exist.

# %%
pd.DataFrame(chapter_map("notebooks")).set_index("chapter")
