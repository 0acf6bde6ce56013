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
import pandas as pd
import matplotlib.pyplot as plt
import torch

import trcgl.config
from trcgl.cache import ArtifactCache
from trcgl.data.datasets import XrayDataset, load_splits, make_loader, normalisation
from trcgl.localization import localization_scores, localization_summary
from trcgl.models import build_model
from trcgl.plots import attention_gallery, training_curves
from trcgl.runtime import seed_everything, select_device
from trcgl.train import predict
from trcgl.variants import CCA, GAP_ONLY, component_variants, train_and_compare

cfg = trcgl.config.from_notebook(globals())
seed_everything(cfg.seed, cfg.deterministic)
dev = select_device(cfg.device)
cache = ArtifactCache()
cohort, train_set, val_set = load_splits(cfg, cache)
classes, groups = list(cohort.class_set.classes), cohort.groups
print(f"profile {cfg.profile}: {len(train_set)} training / {len(val_set)} validation phantoms at "
      f"{train_set.size}px, backbone {cfg.model.backbone} (stage {cfg.model.feature_stage}), device {dev}")

# %% [markdown]
# ## The module, step by step
#
# A batch of four validation images through the backbone (Eq. 7), then through each equation.
# The model here is freshly initialised: this section is about shapes, not about learning.

# %%
model = build_model(cfg.replace({"model.label_gcn": False}), len(classes)).eval()
mean, std = normalisation(train_set)
x, y, _ = next(iter(make_loader(XrayDataset(val_set, mean, std), 4, shuffle=False)))
with torch.no_grad():
    X = model.backbone(x)                               # Eq. 7
    u = X.mean(dim=(2, 3))                              # Eq. 8
    g = model.head.gate.gate(X)                         # Eq. 9
    Xr, _ = model.head.gate(X)                          # Eq. 10
    M = model.head.attention.conv(Xr)                   # class response map
    v, a = model.head.attention(Xr)                     # Eq. 12-13
    out = model.head(X)                                 # Eq. 11, 14
shapes = {"input I": x, "X = φ(I)  (Eq. 7)": X, "u  (Eq. 8)": u, "g  (Eq. 9)": g, "X_r  (Eq. 10)": Xr,
          "M (1x1 conv)": M, "a_c  (Eq. 12)": a, "v_c  (Eq. 13)": v, "s_gap  (Eq. 11)": out["s_gap"],
          "s_spatial": out["s_spatial"], "s_img  (Eq. 14)": out["s_img"]}
pd.DataFrame({"shape": {k: tuple(t.shape) for k, t in shapes.items()}})

# %% [markdown]
# Two properties worth checking by hand: each class's attention map is a distribution over the
# positions, and the residual reweighting never shrinks a feature (g is in (0, 1), so
# $X_r / X = 1 + \text{scale}\cdot g$ lies between 1 and 1 + scale).

# %%
ratio = (Xr / X.where(X.abs() > 1e-6, torch.ones_like(X)))[X.abs() > 1e-6]
print(f"attention maps sum to 1: {torch.allclose(a.flatten(2).sum(-1), torch.ones(a.shape[:2]))}; "
      f"X_r / X ranges over [{ratio.min():.3f}, {ratio.max():.3f}] (gate scale {cfg.model.gate_scale})")

# %% [markdown]
# ## Training: GAP-only baseline vs. channel-class attention
#
# Both models use the same backbone, data, seed and two-stage recipe (Sec. 4.2: warm-up with the
# backbone frozen, then full fine-tuning); neither has the label graph, which is the next
# chapter's subject. The baseline is the backbone with global average pooling and a linear
# classifier. Training is cached by configuration: re-running this page reuses the models.
#
# One deviation from the paper, stated once: no pretrained ConvNeXtV2 weights exist on this
# machine, so the backbone starts from random weights and the CPU profiles use learning rates
# suited to that (see `trcgl/configs/profiles/`). With a checkpoint (`model.checkpoint`) the
# paper's rates apply.

# %%
variants = component_variants(cfg, names=(GAP_ONLY, CCA))
runs, evals, table = train_and_compare(variants, train_set, val_set, groups, cache)
fig = training_curves({name: r.history for name, r in runs.items()})
plt.show()

# %%
table.round(4)

# %%
gain = table.loc[CCA] - table.loc[GAP_ONLY]
excluded = sorted(set().union(*(ev.excluded for ev in evals.values())))
print(f"Channel-class attention changes validation mAP by {gain['mAP']:+.4f} "
      f"(head {gain['mAP head']:+.4f}, medium {gain['mAP medium']:+.4f}, tail {gain['mAP tail']:+.4f}) "
      f"on this run ({cfg.profile} profile, one seed, {len(val_set)} validation images). "
      + (f"Classes without a validation positive, left out of the means: {excluded}." if excluded else
         "Every class has validation positives."))
print("One seed on a small validation set: the next chapters repeat runs over seeds and give intervals "
      "before calling a difference real.")

# %% [markdown]
# ## Do the attention maps look at the lesions?
#
# For every validation image and every class it carries, we compare that class's attention map
# $a_c$ with the lesion mask the renderer drew. *Mass inside* is the share of the map's weight
# that falls on the lesion; a uniform map would score the lesion's area share (the chance
# column). *Pointing* asks whether the map's peak lies on the lesion. Diffuse findings with whole-
# lung masks (COPD signs, chronic changes) are easy to hit by chance; the gap to chance is what
# counts.

# %%
cca = runs[CCA]
P, maps = predict(cca.model, val_set, cca.mean, cca.std, dev, with_attention=True)
scores = localization_scores(maps, val_set, classes, groups)
summary = localization_summary(scores)
summary.round(3)

# %%
per_class = scores.groupby("class")[["mass", "chance mass", "hit", "chance hit"]].mean()
per_class.insert(0, "group", [groups[classes.index(c)] for c in per_class.index])
per_class["mass / chance"] = per_class["mass"] / per_class["chance mass"]
per_class.sort_values("mass / chance", ascending=False).round(3)

# %% [markdown]
# The maps of the trained model over some validation images: the class's attention map
# (colour, upsampled from the feature grid) and the true lesion (white outline). The feature grid
# is coarse on the CPU profiles (stride 16 at 64 px gives 4 x 4 cells), so a map can only point to
# a region, not to a lesion's outline.

# %%
best_image = scores.sort_values("mass", ascending=False).drop_duplicates("class")  # best-scoring image per class
picks = []
for g in ("head", "medium", "tail"):  # four classes of each group
    for _, r in best_image[best_image.group == g].head(4).iterrows():
        picks.append((int(r["image"]), classes.index(r["class"])))
fig = attention_gallery([val_set.images[n] / 255 for n, c in picks], [maps[n, c] for n, c in picks],
                        [val_set.masks(n)[c] for n, c in picks],
                        [f"{classes[c]} [{groups[c]}]\np={P[n, c]:.2f}" for n, c in picks])
plt.show()

# %% [markdown]
# Those are the best-localised example of each class, chosen by the score itself, so they
# flatter the model; the tables above are the honest summary.
#
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
# 3. Which group's lesions do the maps find best relative to chance, and why might small tail
#    lesions be hard to localise on a 4 x 4 grid?
#    ```{admonition} Hint
#    :class: dropdown
#    Read the "mass / chance" column. A nodule covers a few percent of one cell; even a perfect map
#    puts its weight on a cell that is mostly healthy lung. Finer maps need a higher resolution or
#    an earlier backbone stage.
#    ```
