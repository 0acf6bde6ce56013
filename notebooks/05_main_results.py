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
# # Main results: Tables 1-2, Figs. 4-5 (Sec. 4.4-4.5)
#
# The paper compares TRCGL-Net with seven baselines on one PadChest split (Table 1), splits the
# comparison by head, medium and tail classes (Table 2), and shows where the models look (Fig. 4)
# and what they predict on a few images (Fig. 5). Here every row is trained on the same split and
# profile **for several seeds**, every number is a mean over those seeds with a 95 % interval,
# and differences between rows come with an interval of their own, so a reader can tell which
# gains are real on this data. The paper's values stand beside ours in columns labelled as the
# paper's. Ours are on the phantom benchmark (or on real PadChest when run with `PADCHEST_ROOT`),
# with backbones pretrained here on head labels only (`trcgl.pretraining`; each timm baseline on its
# own architecture), so **only the ordering and the size of gaps can be compared, not the values.**
#
# The rows: ConvNeXt (the ConvNeXtV2 backbone with global average pooling), ResNet, EfficientNet
# and ViT (whole timm networks, the sizes of the profile), CLIP's image encoder (needs pretrained
# weights), ConvNeXt trained with the LDAM loss and deferred re-weighting {cite}`cao2019ldam`,
# ConvNeXt with a CSRA head {cite}`zhu2021csra`, and TRCGL-Net with the filtered synthetic tail
# images of the prompt-diffusion chapter. Where the profile reads the ConvNeXt's features before its
# last stage (finer maps for the attention heads), the timm rows would read deeper features than the
# ConvNeXt rows; so a whole-network ConvNeXt row and a whole-network TRCGL-Net row stand beside the
# cut ones, and TRCGL-Net is compared with each baseline at that baseline's depth (the "model here"
# column says which).

# %% tags=["parameters"]
profile = "cpu"       # smoke | cpu | paper
device = "auto"       # auto | cpu | cuda
seed = None           # None: the profile's value (the seed of the synthetic set)
seeds = None          # the seeds every table row is trained with
clip_image_encoder = None  # a local CLIP vision model folder, for the CLIP row

# %%
import matplotlib.pyplot as plt
from IPython.display import display

import trcgl.views
from trcgl.views import results as view

ch = trcgl.views.setup(globals())
cfg = ch.cfg
tcfg, cohort, test_set, setting = view.setting(ch)
print(setting)

# %% [markdown]
# ## Training every row for every seed
#
# Each run is a stage of the stage graph (`trcgl.stages`), cached by its configuration, data,
# code and seed; `make reproduce` computes them before this page executes, so here they load. Each
# run's best epoch is chosen on the **selection** split; every metric below is measured on the
# **test** split, which chose nothing. The results store (`runs/results-<profile>.json`) receives
# every metric of every run; the tables below are built from it and from nothing else.

# %%
result, table_1, note = view.table_1(ch, tcfg)

# %% [markdown]
# ## Table 1: all classes

# %%
print(note)
table_1

# %%
fig = view.endpoint_bars(ch, result)
plt.show()

# %%
print(view.differences_note(ch, result))
view.differences(ch)

# %%
print(view.ranking_text(ch, result))

# %% [markdown]
# Every row starts from a backbone pretrained here, one per architecture, by the same rule (the
# lines under the curves say which: a fixed number of epochs, or until the selection score stops
# improving). A backbone whose pretraining was still improving when its budget ended starts its
# table row from less than it could have learnt, so a gap between two architectures would mix the
# methods with their pretraining budgets. The curves show where each pretraining stood:

# %%
fig, pretraining_text = view.pretraining(ch, tcfg)
if fig is not None:
    plt.show()
print(pretraining_text)

# %% [markdown]
# ## Table 2: head, medium and tail classes

# %%
table_2, note = view.table_2(ch, tcfg, result)
print(note)
table_2

# %%
tail_text, tail_differences = view.tail_text(ch)
print(tail_text)
tail_differences

# %% [markdown]
# ## Do the synthetic tail images help? The claim against its controls
#
# A gain of "Ours" over a baseline mixes three things: the model, the extra images, and simply
# seeing the tail rows more often. To isolate what the generated images add, every arm asks for
# the same **synthetic budget** per tail class, fixed before any filter, and the full model is
# trained on the same real rows and seeds with: **no extra images**; the real tail rows
# **oversampled** to the budget (more passes over what it already has); **every generated image**
# (unfiltered); the images the **filter kept** (the method as the paper describes it); the
# budget's label sets **rendered by the phantom renderer** on fresh anatomy (an *ideal generator*,
# always right: the positive control and the upper bound of what tail images can add at this
# budget); the kept label sets rendered likewise (the ideal generator *at the filter's count*, which separates
# what the filter throws away from what its images lack); the ideal generator's images with the
# **tail lesions left out** (same anatomy, labels, count and weight: the negative control, extra
# images that show nothing of their labels); those images with the **tail labels removed too**
# (the bare control: extra images that show and claim nothing of the tail, so the negative control
# minus it is what tail labels on images that do not show them do); and the generated images with
# their **labels shuffled** across tail classes (the wrong-label control: what a generator drawing the wrong
# finding does). All extra images carry the same loss weight. The claim predicts: the method
# above no extra images and above oversampling; the ideal generator above no extra images (else
# the benchmark cannot detect the effect at all) and above its lesion-free twin (else what helps
# is not what the images show); the lesion-free images not above no extra images. The primary
# endpoint is tail mAUC; tail AP stands beside its chance level.

# %%
print(view.controls_setup(ch))

# %%
controls, controls_table = view.controls_table(ch)
controls_table

# %%
view.controls_differences(ch, controls)

# %%
print(view.controls_verdict(ch, controls, test_set, cohort))

# %% [markdown]
# Where this profile fine-tunes the controls (the paper's stage 2, in which extra tail images can
# change the features and not only the heads), the same arms after stage 1 alone show what the
# fine-tuning adds:

# %%
by_stage, by_stage_text = view.controls_by_stage(ch)
print(by_stage_text)
by_stage

# %% [markdown]
# ### How many tail images does it take? The ideal generator's dose curve
#
# The same positive control at several multiples of the budget: where the curve flattens, more
# images of the right kind stop helping; where it is still rising, a better generator at a larger
# budget could add more than the table above shows.

# %%
dose, dose_figure, dose_text = view.dose_curve(ch)
print(dose_text)
dose

# %% [markdown]
# ## Fig. 4: where the models look
#
# For test images with a lesion of a given class, the true lesion (outlined; the phantom
# renderer knows it), TRCGL-Net's own class attention map $a_c$ (Eq. 12), and Grad-CAM
# {cite}`selvaraju2017gradcam` (grad-cam library, last backbone stage) of TRCGL-Net and of the
# ConvNeXt baseline. Under the figure: over many (image, class) pairs, the share of each map's
# mass inside the true lesion and the pointing game, each beside its chance level.

# %%
fig, localization, fig4_text = view.figure_4(ch, result, test_set, cohort)
plt.show()
print(fig4_text)
display(localization)

# %% [markdown]
# ## Fig. 5: multi-label predictions
#
# A few test images with several findings, and TRCGL-Net's most confident classes; true
# labels are red. A multi-label model has to rank every present finding high, not just one.

# %%
fig, fig5_text = view.figure_5(ch, result, test_set, cohort)
plt.show()
print(fig5_text)

# %% [markdown]
# ## Exercises

# %% tags=["remove-input"]
view.exercises(ch, cohort, test_set)
