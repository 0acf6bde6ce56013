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
# # The data: PadChest's long tail, for real, and phantom radiographs to learn it from
#
# The paper trains on PadChest {cite}`bustos2020padchest` (Sec. 4.1): about 160,000 chest radiographs of 67,000 patients,
# labelled from their reports. It keeps 30 classes, splits the patients 80/20, and calls a
# class **head** with more than 5,000 training images, **tail** with fewer than 500, and
# **medium** in between. Its Fig. 2 shows the resulting long tail and the labels'
# co-occurrence.
#
# This chapter rebuilds that section. **What is real here:** the label table (it ships inside
# the `torchxrayvision` package {cite}`cohen2022torchxrayvision`), the 30-class selection, the patient-level split, the groups,
# the co-occurrence counts, the radiologists' localizations and the prompts built from them.
# **What is simulated:** the pixels. PadChest's images are about 1 TB and cannot be fetched
# here, so the default image source is a phantom renderer (`trcgl.data.phantom`) that draws a
# synthetic radiograph for each real label row, with every finding placed where that row's
# report localises it. Point `PADCHEST_ROOT` at the real images and the same pipeline reads them.

# %% tags=["parameters"]
profile = "cpu"       # smoke | cpu | paper
device = "auto"       # auto | cpu | cuda
seed = None           # None: the profile's value, for this and the parameters below
class_set = None      # paper | cxrlt2026
split_seed = None     # the patient-level split's seed (paper: not given; 42 here)
n_train = None        # label rows rendered for training
n_val = None          # ... and for validation
difficulty = None     # phantom lesion difficulty (> 1: fainter)
label_noise = None    # chance that a labelled finding is not drawn
data_source = None    # phantom | padchest (real images under padchest_root / $PADCHEST_ROOT)
padchest_root = None  # the PadChest image folder
on_missing = None     # real images: error | skip

# %%

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import timm

import trcgl
import trcgl.config
from trcgl.cache import ArtifactCache
from trcgl.data import padchest, prompts
from trcgl.data.datasets import build_image_set, phantom_renderer, split_rows
from trcgl.data.phantom import downsample
from trcgl.plots import cooccurrence_chord, long_tail_bars, phantom_gallery
from trcgl.runtime import images_per_second, seed_everything, select_device, training_throughput

cfg = trcgl.config.from_notebook(globals())  # the profile, then every parameter that is not None
seed_everything(cfg.seed, cfg.deterministic)
dev = select_device(cfg.device)
cache = ArtifactCache()
print(f"profile {cfg.profile}, class set {cfg.data.class_set}, split seed {cfg.data.split_seed}, device {dev}")

# %% [markdown]
# ## The label table
#
# `Labels` is a Python list written into a CSV cell. We parse it with `ast.literal_eval`, strip
# every token, drop empty ones and de-duplicate per image; a row without labels cannot be used
# and is dropped (and counted). `PatientID` is a 39-digit number: read as a float, different
# patients would merge, so it is read as a string.

# %%
table = padchest.load_table(cfg.paths.padchest_csv, cache=cache)
pd.Series(table.report, name="rows").to_frame()

# %% [markdown]
# ## Thirty classes, two groups of patients
#
# A class is positive when an image carries its PadChest label or any descendant of it in
# PadChest's label tree (e.g. *infiltrates* takes *consolidation*, *ground glass pattern*,
# *interstitial pattern*, ...). The paper does not publish its list; `paper` is a
# reconstruction (`trcgl/data/class_sets.json`) whose groups must come out as the paper's
# 13 / 11 / 6 under its own thresholds. The split is sklearn's `GroupShuffleSplit` by
# patient, so no patient has images on both sides.

# %%
cohort = padchest.cohort_from_config(cfg, cache=cache)
summary = cohort.summary()
n_train_rows, n_val_rows = int(cohort.is_train.sum()), int((~cohort.is_train).sum())
shared = set(cohort.frame.PatientID[cohort.is_train]) & set(cohort.frame.PatientID[~cohort.is_train])
group_sizes = pd.Series(cohort.groups).value_counts().reindex(["head", "medium", "tail"]).fillna(0).astype(int)
print(f"{n_train_rows} training and {n_val_rows} validation images; patients on both sides: {len(shared)}")
pd.DataFrame({"classes (ours)": group_sizes,
              "classes (paper, Sec. 4.1)": pd.Series({"head": 13, "medium": 11, "tail": 6})})

# %%
summary.style.format({"train_share_%": "{:.2f}"})

# %% [markdown]
# ## Fig. 2: the long tail and the co-occurrence of labels
#
# Left in the paper, top here: training images per class, on a log axis. Right in the paper,
# below here: a chord diagram of how often two labels share an image.

# %%
fig = long_tail_bars(summary, cfg.data.head_threshold, cfg.data.tail_threshold)
plt.show()
ratio = summary.train.max() / max(summary.train.min(), 1)
print(f"imbalance: the most frequent class has {ratio:.0f}x the images of the rarest "
      f"({summary.train.idxmax()}: {summary.train.max()}, {summary.train.idxmin()}: {summary.train.min()})")

# %%
Q = padchest.cooccurrence(cohort.Y[cohort.is_train])
fig = cooccurrence_chord(Q, list(cohort.class_set.classes), cohort.groups)
plt.show()

# %% [markdown]
# Who do the tail classes appear with? For each tail class, its most frequent partners and the
# fraction of its images that carry them (from the same matrix $Q = Y^\top Y$, Eq. 15, that the
# label GCN is built from in a later chapter):

# %%
classes = list(cohort.class_set.classes)
rows = []
for c, name in enumerate(classes):
    if cohort.groups[c] != "tail":
        continue
    partners = np.argsort(-np.where(np.arange(len(classes)) == c, -1, Q[c]))[:3]
    rows.append({"tail class": name, "train images": int(Q[c, c]),
                 **{f"partner {k + 1}": f"{classes[j]} ({Q[c, j] / Q[c, c]:.0%})" for k, j in enumerate(partners)}})
pd.DataFrame(rows).set_index("tail class")

# %% [markdown]
# ## Where the findings are: sentence-level localizations
#
# PadChest pairs each report sentence's findings with localization tokens (`loc left`,
# `loc costophrenic angle`, ...). The renderer draws a finding where the row's own sentences
# put it, and falls back to these class-level frequencies when a row says nothing.

# %%
stats = cohort.localization_stats()
loc_rows = []
for name in classes:
    st = stats[name]
    top = list(st["locations"].items())[:3]
    loc_rows.append({"class": name, "sentences": st["n_sentences"],
                     "right / left": f"{st['side_fraction']['R']:.0%} / {st['side_fraction']['L']:.0%}",
                     "top locations": ", ".join(f"{k[4:]} {v:.0%}" for k, v in top)})
pd.DataFrame(loc_rows).set_index("class")

# %% [markdown]
# ## The rows this profile renders
#
# A profile renders a sample of the frontal (PA / AP) rows. The rule
# (`trcgl.data.padchest.select_rows`): within each split, first guarantee every class a minimum
# number of positives (`data.min_train_positives`, `data.min_val_positives`), taking random rows
# that carry the class, rarest class first; then fill the rest of the sample uniformly at random.
# So every class can be learnt and scored, and beyond that minimum the sample keeps the real
# label frequencies and co-occurrences. The counts:

# %%
train_idx, val_idx = split_rows(cfg, cohort, "train"), split_rows(cfg, cohort, "val")
frontal = cohort.frame.Projection.isin(list(cfg.data.projections)).to_numpy()
sample = pd.DataFrame({
    "group": cohort.groups,
    "train (all rows)": cohort.train_counts,
    "train (frontal)": cohort.Y[cohort.is_train & frontal].sum(0),
    "train (rendered)": cohort.Y[train_idx].sum(0),
    "val (rendered)": cohort.Y[val_idx].sum(0),
}, index=classes)
print(f"rendered: {len(train_idx)} training rows, {len(val_idx)} validation rows; "
      f"minimum positives per class: train {sample['train (rendered)'].min()}, val {sample['val (rendered)'].min()}")
sample

# %% [markdown]
# ## Phantom radiographs
#
# Each rendered image is a real label row drawn by the phantom renderer: anatomy that varies
# per patient (seeded by the image id, so a row renders the same image every time), and one
# visual model per class. Rarer classes are drawn fainter and smaller
# (`phantom.tail_subtlety`), as rare findings tend to be the subtle ones; `phantom.difficulty`
# makes every lesion fainter. The renderer also returns each finding's mask (red outline), which
# no real dataset gives: later chapters score attention maps against it.
#
# Below, one validation image per class (top: the renderer's 256-px canvas; the classifier
# sees the image at the profile's resolution).

# %%
image_sets = {split: build_image_set(cfg, cohort, split, cache) for split in ("train", "val")}
val_set = image_sets["val"]
print(f"training set {image_sets['train'].images.shape}, validation set {val_set.images.shape} (uint8, cached)")

# %%
display_renderer = phantom_renderer(cfg.replace({"phantom.render_size": 256}), cohort)
picked, panels, masks, titles, captions = {}, [], [], [], []
for c, name in enumerate(classes):
    candidates = [i for i in np.flatnonzero(val_set.Y[:, c]) if i not in picked]
    if not candidates:
        continue
    i = min(candidates, key=lambda k: val_set.Y[k].sum())  # the least crowded image of the class
    picked[i] = c
    row = val_set.rows.iloc[i]
    present = [classes[k] for k in np.flatnonzero(val_set.Y[i])]
    img, m = display_renderer.render(row.ImageID, present, row.sentences, row.labels)
    panels.append(img)
    masks.append(m[c])
    titles.append(f"{name} [{cohort.groups[c]}]")
    captions.append(", ".join(p for p in present if p != name)[:60] or "no other finding")
fig = phantom_gallery(panels, masks, titles, captions)
plt.show()

# %% [markdown]
# The same images at the resolution the classifier is trained on, with the stored masks:

# %%
chosen = list(picked.items())[-12:]  # the rarest classes
fig = phantom_gallery([val_set.images[i] / 255 for i, c in chosen], [val_set.masks(i)[c] for i, c in chosen],
                      [f"{classes[c]} ({val_set.size}px)" for i, c in chosen])
plt.show()

# %% [markdown]
# ## Prompts
#
# The diffusion chapter conditions its generator on text. `trcgl.data.prompts` builds an English
# prompt from a row's classes and the localizations of the sentences that carry them; the
# template is chosen by a seeded draw, so a row's prompt is fixed given the seed.

# %%
tail_rows = [i for i in range(len(val_set)) if any(val_set.Y[i, c] for c, g in enumerate(cohort.groups) if g == "tail")][:6]
pd.DataFrame([{"image": val_set.rows.ImageID.iloc[i][:18] + "...",
               "classes": ", ".join(classes[c] for c in np.flatnonzero(val_set.Y[i])),
               "prompt": prompts.prompt_for_row([classes[c] for c in np.flatnonzero(val_set.Y[i])],
                                                cohort.class_set, val_set.rows.sentences.iloc[i],
                                                val_set.rows.ImageID.iloc[i], seed=cfg.seed)}
              for i in tail_rows])

# %% [markdown]
# ## Is the renderer fast enough?
#
# Rendering happens once per profile (the image sets are cached), but a renderer slower than the
# trainer would make every new setting expensive. Measured on this machine: the renderer's
# images per second at two canvas sizes, against one training step of the ConvNeXtV2-atto
# classifier (forward, backward, AdamW) at the matching image size.

# %%
bench_rows = cohort.frame.iloc[train_idx[:32]]
bench = []
for canvas, size in ((128, 64), (256, 128)):
    r = phantom_renderer(cfg.replace({"phantom.render_size": canvas}), cohort)

    def render_batch():
        for _, row in bench_rows.iterrows():
            present = [classes[c] for c in np.flatnonzero(padchest.multi_hot([row.labels], cohort.class_set)[0])]
            img, m = r.render(row.ImageID, present, row.sentences, row.labels)
            downsample(img, m, size)

    model = timm.create_model("convnextv2_atto", pretrained=False, in_chans=1, num_classes=len(classes))
    bench.append({"image size": size, "render canvas": canvas,
                  "renderer img/s": images_per_second(render_batch, len(bench_rows), repeats=1),
                  "trainer img/s (convnextv2_atto)": training_throughput(model, size, 32, dev)})
bench = pd.DataFrame(bench).set_index("image size")
bench["renderer / trainer"] = bench["renderer img/s"] / bench["trainer img/s (convnextv2_atto)"]
bench.round(1)

# %% [markdown]
# ## Exercises
#
# 1. Run this chapter with `-p class_set cxrlt2026` (the CXR-LT 2026 list that the paper's
#    released code uses). How many classes fall in each group under the same thresholds?
#    Which classes change group?
#    ```{admonition} Hint
#    :class: dropdown
#    The groups table near the top is computed, not typed: compare it with the one for `paper`.
#    Support devices are frequent; *Hydropneumothorax* is rarer than any class of the paper's set.
#    ```
# 2. Change `split_seed`. Do the group sizes stay 13 / 11 / 6? What does that tell you about
#    thresholds that sit close to a class's count (look at *hilar enlargement* and
#    *pulmonary mass*)?
#    ```{admonition} Hint
#    :class: dropdown
#    A class whose count is within a few percent of 5,000 or 500 can change group with the split;
#    the class table gives the margins. Group results are only as stable as those margins.
#    ```
# 3. Set `difficulty` to 2 and look at the gallery. Which classes become hard to see by eye
#    at the training resolution?
#    ```{admonition} Hint
#    :class: dropdown
#    Thin structures (the azygos fissure, rib fractures, subcutaneous streaks) lose most at 64 px:
#    area averaging spreads a one-pixel line over its neighbours. Compare the two galleries.
#    ```
