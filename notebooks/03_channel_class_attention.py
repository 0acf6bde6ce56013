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
# # Channel-class attention (Sec. 3.2)
#
# A chest radiograph is dominated by bright anatomy (heart, spine, ribs) that every class
# sees. A small tail-class lesion is a weak signal in a globally pooled feature, so the paper
# refines the ConvNeXtV2 {cite}`woo2023convnextv2` features in two ways before classifying:
#
# **Channel reweighting** (Eq. 8-10). Global average pooling gives a channel descriptor
# $u = \frac{1}{HW}\sum_{i,j} X_{i,j}$; a bottleneck MLP turns it into channel weights
# $g = \sigma(W_2\,\delta(W_1 u))$; the residual $X_r = X + X \odot g$ amplifies the channels that
# matter for this image without ever switching a channel off (a residual form of
# squeeze-and-excitation {cite}`hu2018senet`).
#
# **Class-aware spatial attention** (Eq. 12-14). A $1\times1$ convolution gives every class $c$ a
# response map $M_c$; a softmax over the $H \times W$ positions turns it into an attention map
# $a_c^{p,q} = \exp(M_c^{p,q}) / \sum_{u,v}\exp(M_c^{u,v})$; the class feature is the
# attention-weighted average $v_c = \sum_{p,q} a_c^{p,q} X_r^{p,q}$, scored by a classifier. The
# image score fuses this with the plain GAP branch, much as CSRA {cite}`zhu2021csra` adds class-specific
# attention to average pooling: $s_{img} = s_{gap} + \lambda\, s_{spatial}$.
#
# We build the module step by step on real tensors, train it against a GAP-only baseline in the
# active profile, and, because the phantom renderer knows where every lesion is, measure whether
# the class attention maps actually look at the lesions.

# %% tags=["parameters"]
profile = "cpu"       # smoke | cpu | paper
device = "auto"       # auto | cpu | cuda
seed = None           # None: the profile's value, for this and the parameters below
lam = None            # λ of Eq. 14 (released code: 0.1)
gate_scale = None     # 1.0: X + X⊙g (paper text); 0.05: the released code

# %%
import matplotlib.pyplot as plt

import trcgl.views
from trcgl.views import attention as view

ch = trcgl.views.setup(globals())
cfg = ch.cfg
cohort, train_set, test_set, setting = view.setting(ch)
print(setting)

# %% [markdown]
# ## The module, step by step
#
# A batch of four test images through the backbone (Eq. 7), then through each equation.
# The model here is freshly initialised: this section is about shapes, not about learning.

# %%
shapes, properties = view.walkthrough(ch, train_set, test_set)
shapes

# %% [markdown]
# Two properties worth checking by hand: each class's attention map is a distribution over the
# positions, and the residual reweighting never shrinks a feature (g is in (0, 1), so
# $X_r / X = 1 + \text{scale}\cdot g$ lies between 1 and 1 + scale).

# %%
print(properties)

# %% [markdown]
# ## Training: GAP-only baseline vs. channel-class attention
#
# Both models use the same backbone, data, seed and recipe; neither has the label graph, which is
# the next chapter's subject. The paper's recipe (Sec. 4.2) is a warm-up with the backbone frozen,
# then full fine-tuning. A profile may run the warm-up stage only (the heads learn on the frozen
# backbone's cached features), which is what makes many seeds and controls affordable on a CPU;
# the lines under the tables say which stages their runs trained. The curves show mAP on the
# **selection** split, which picks each model's best epoch; the table reports that epoch on the **test** split, which chooses nothing. The baseline is the backbone with global average pooling and a linear
# classifier. Training is cached by configuration: re-running this page reuses the models.
#
# One deviation from the paper, stated once: no pretrained ConvNeXtV2 weights exist on this
# machine. The paper starts from a backbone trained on chest radiographs; its analogue here is a
# backbone pretrained by this project (`trcgl.pretraining`) on a pool of training-split rows that
# no experiment trains on, with **only head-class labels in its loss**, so it knows nothing of the
# medium and tail classes the methods target. With a checkpoint (`model.checkpoint`) that
# checkpoint is the start instead.

# %%
result, runs, fig, means = view.comparison(ch)
plt.show()

# %%
means.round(4)

# %%
print(view.gain_text(ch, means, test_set))

# %% [markdown]
# ## Do the attention maps look at the lesions?
#
# For every test image and every class it carries, we compare that class's attention map
# $a_c$ with the lesion mask the renderer drew. *Mass inside* is the share of the map's weight
# that falls on the lesion; a uniform map would score the lesion's area share (the chance
# column). *Pointing* asks whether the map's peak lies on the lesion. Diffuse findings with whole-
# lung masks (COPD signs, chronic changes) are easy to hit by chance; the gap to chance is what
# counts.

# %%
P, maps, scores, summary, per_class = view.localization(
    ch, runs[view.CCA], test_set, cohort)
summary

# %%
per_class

# %% [markdown]
# The maps of the trained model over some test images: the class's attention map
# (colour, upsampled from the feature grid) and the true lesion (white outline). At small image
# sizes the feature grid is coarse (the line below gives this run's), so a map can only point to
# a region, not to a lesion's outline.

# %%
print(view.grid_text(cfg))
fig = view.attention_figure(P, maps, scores, test_set, cohort)
plt.show()

# %% [markdown]
# Those are the best-localised example of each class shown, chosen by the score itself, so they
# flatter the model; the tables above are the honest summary.
#
# ## The claim on finer maps, over seeds, and with subtle findings
#
# A coarse map leaves class-aware attention little room to point anywhere. Here the same ladder
# (GAP only → + the channel gate → + class-aware attention; in the middle rung no spatial branch
# reads the refined maps X_r, so its GAP branch pools X_r and the gate re-weights the pooled
# channels as a squeeze-and-excitation block does, while the full model's GAP branch pools X as
# Eq. 11 says) runs on an earlier, finer stage of the
# backbone (`tables.cca_feature_stage`; its grid is in the line above the figure) and, in the rows
# marked "tables' stage", on the stage every other table reads, over every seed
# of the profile, scored on the test split with
# intervals that resample seeds and test label rows. A second condition draws the rare findings
# fainter and smaller (`phantom.tail_subtlety`), where attention to a small region should matter
# most. The claim predicts a gain on the tail, larger for subtle findings, and maps that put more
# of their mass on the true lesions than GAP's Grad-CAM does.

# %%
cca_result, cca = view.cca_table(ch)
cca_note, steps_note = view.cca_notes(cca_result)
print(cca_note)
cca

# %%
steps, steps_text = view.cca_steps(ch)
print(steps_text)
print(steps_note)
steps

# %%
cca_loc = view.cca_localization(ch, cca_result, cohort)
print(view.localization_verdict(cca_loc))
cca_loc

# %% [markdown]
# ## Exercises
#
# 1. Run with `-p gate_scale 0.05` (the released code's reweighting). Does the gain over GAP-only
#    change? Why might a small scale be safer when the backbone is pretrained?
#    ```{admonition} Hint
#    :class: dropdown
#    With scale 0.05, $X_r \approx X$: the spatial branch sees almost the backbone's own features,
#    so pretrained features are barely disturbed early in training.
#    ```
# 2. Set `-p lam 0`. The spatial branch no longer contributes to the score, yet its maps still
#    exist. Are they still trained? Look at Eq. 14 and at which parameters receive gradients.
#    ```{admonition} Hint
#    :class: dropdown
#    The 1x1 attention convolution only reaches the loss through $\lambda s_{spatial}$. With
#    $\lambda = 0$ its gradient is zero and the maps stay as initialised: the localization table
#    then measures an untrained map.
#    ```
# 3. Which group's lesions do the maps find best relative to chance in this run, and why might
#    small lesions be hard to localise on a grid as coarse as this run's feature map?
#    ```{admonition} Hint
#    :class: dropdown
#    Read the "mass / chance" column. A nodule covers a few percent of one cell; even a perfect map
#    puts its weight on a cell that is mostly healthy lung. Finer maps need a higher resolution or
#    an earlier backbone stage.
#    ```
