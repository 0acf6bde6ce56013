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
# # Ablation and sensitivity: Tables 3-5 (Sec. 4.6-4.7)
#
# Which part of TRCGL-Net earns its gain? The paper adds its three components one at a time
# (Table 3) and varies two of its settings: the loss weight $w$ of the synthetic images (Table 4)
# and the fusion strength α of the label branch, $s = s_{img} + \alpha\, s_{label}$ (Eq. 25,
# Table 5). As in the results chapter, every row here is trained for several seeds on the same
# data, every number is a mean with a 95 % interval, and each step of the ladder comes with a
# paired interval of its own, so a gain that is smaller than the seed-to-seed noise is called that.
#
# The paper's ablation starts from **ConvNeXt + CSRA** (its Table 3 baseline has exactly the
# numbers of Table 1's CSRA row), adds the synthetic images, then replaces CSRA by channel-class
# attention, then adds the label GCN. We follow that ladder. The ladder without synthetic images
# (GAP → channel-class attention → GCN) is in the channel-class attention and label GCN chapters.

# %% tags=["parameters"]
profile = "cpu"       # smoke | cpu | paper
device = "auto"       # auto | cpu | cuda
seed = None           # None: the profile's value (the seed of the synthetic set)
seeds = None          # the seeds every table row is trained with
synthetic_weights = None  # Table 4's w values
alphas = None         # Table 5's α values

# %%
import matplotlib.pyplot as plt
import pandas as pd

import trcgl.config
from trcgl import paper
from trcgl.cache import ArtifactCache
from trcgl.experiments import (benchmark_note, ablation_rows, alpha_rows, paired_differences, results_store, run_rows, seed_means,
                               seed_summary, seed_table, table_data, weight_rows, with_paper)
from trcgl.plots import seed_bars
from trcgl.runtime import seed_everything, select_device

cfg = trcgl.config.from_notebook(globals())
seed_everything(cfg.seed, cfg.deterministic)
dev = select_device(cfg.device)
cache = ArtifactCache()
data = table_data(cfg, cache)   # shared with the results chapter, loaded from the cache
tcfg, train_set, val_set, synthetic = data.cfg, data.train_set, data.val_set, data.synthetic
groups = data.cohort.groups
store = results_store(cfg)
print(f"profile {cfg.profile}: {len(train_set)} training images + {len(synthetic)} synthetic; seeds {list(cfg.seeds)}; "
      f"device {dev}. Runs shared with the results chapter load from the cache.")

# %% [markdown]
# ## Table 3: the components, one at a time

# %%
ladder = ablation_rows(tcfg, synthetic)
run_rows(store, "table3", ladder, train_set, val_set, groups, cfg.seeds, cache)
names = [r.name for r in ladder]
print(benchmark_note(tcfg))
with_paper(seed_table(store, "table3", ["mAP", "mAUC", "macro-F1", "mAP tail"], rows=names), paper.table(3))

# %% [markdown]
# Each step against the one before it, on the same seeds:

# %%
steps = []
for prev, cur in zip(names, names[1:]):
    d = paired_differences(store, "table3", prev, "mAP").loc[cur]
    dt = paired_differences(store, "table3", prev, "mAP tail").loc[cur]
    ref = paper.table(3)["mAP (paper)"]
    steps.append({"step": f"{prev} → {cur}", "ΔmAP": d.iloc[0], "low": d["low"], "high": d["high"],
                  "better on seeds": d["better on seeds"], "sure": d["sure"], "Δ tail mAP": dt.iloc[0],
                  "ΔmAP (paper)": ref[cur] - ref[prev]})
steps = pd.DataFrame(steps).set_index("step")
steps.round(4)

# %%
biggest = steps["ΔmAP"].idxmax()
paper_biggest = steps["ΔmAP (paper)"].idxmax()
sure = steps.index[steps["sure"]].tolist()
print(f"The largest step here is {biggest} ({steps.loc[biggest, 'ΔmAP']:+.4f} mAP); in the paper it is "
      f"{paper_biggest} ({steps.loc[paper_biggest, 'ΔmAP (paper)']:+.4f}). "
      + (f"Steps whose interval excludes zero: {', '.join(sure)}." if sure else
         "No step's interval excludes zero at this number of seeds."))
for step, r in steps.iterrows():
    agree = (r["ΔmAP"] > 0) == (r["ΔmAP (paper)"] > 0)
    print(f"  {step}: {r['ΔmAP']:+.4f} here vs {r['ΔmAP (paper)']:+.4f} in the paper, "
          f"{'same sign' if agree else 'opposite sign'}")

# %% [markdown]
# ## Table 4: the weight of the synthetic images
#
# Every synthetic image's loss is multiplied by $w$; the paper uses 0.5.

# %%
wrows = weight_rows(tcfg, synthetic)
run_rows(store, "table4", wrows, train_set, val_set, groups, cfg.seeds, cache)
t4 = seed_table(store, "table4", ["mAP", "mAUC", "macro-F1", "mAP tail"], rows=[r.name for r in wrows])
print(benchmark_note(tcfg))
with_paper(t4, paper.table(4), names={r.name: r.meta["paper key"] for r in wrows})

# %% [markdown]
# ## Table 5: the fusion strength α (Eq. 25)

# %%
arows = alpha_rows(tcfg, synthetic)
run_rows(store, "table5", arows, train_set, val_set, groups, cfg.seeds, cache)
t5 = seed_table(store, "table5", ["mAP", "mAUC", "macro-F1", "mAP tail"], rows=[r.name for r in arows])
print(benchmark_note(tcfg))
with_paper(t5, paper.table(5), names={r.name: r.meta["paper key"] for r in arows})

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 2.8))
seed_bars(seed_summary(store, "table4"), "mAP", rows=[r.name for r in wrows], ax=axes[0])
seed_bars(seed_summary(store, "table5"), "mAP", rows=[r.name for r in arows], ax=axes[1])
plt.show()
for table, rows_, what in (("table4", wrows, "w"), ("table5", arows, "α")):
    m = seed_means(store, table)["mAP"]
    s = seed_summary(store, table, ["mAP"]).set_index("row")
    spread = m.max() - m.min()
    widest = (s["high"] - s["low"]).max()
    if pd.isna(widest):
        verdict = f"interval: none with {len(cfg.seeds)} seed, so no verdict on noise."
    else:
        verdict = f"widest 95% interval {widest:.4f}: " + ("the setting matters more than the seed noise here."
                                                           if spread > widest / 2 else "the differences are within the seed noise.")
    print(f"{what}: best {m.idxmax()} ({m.max():.4f} mAP), spread between settings {spread:.4f}; {verdict}")

# %% [markdown]
# ## Exercises
#
# 1. Table 4 varies $w$ only between 0.25 and 0.75. Add $w = 0$ (synthetic images present but
#    weightless) and $w = 1$ with `-p synthetic_weights '[0, 0.25, 0.5, 0.75, 1]'`.
#    Is $w = 0$ the same as no synthetic images at all?
#    ```{admonition} Hint
#    :class: dropdown
#    With $w = 0$ the synthetic images contribute no gradient but still take up places in the
#    batches, so each epoch has fewer effective real samples per step.
#    ```
# 2. The released code weights synthetic images 0 during its 10 warm-up epochs. Which row of
#    Table 3 would that change most, and why?
#    ```{admonition} Hint
#    :class: dropdown
#    In the warm-up only the heads learn; think about which head sees the synthetic images first.
#    ```
# 3. With three seeds, how large must a gain be to be called *sure*? Compute it from the widest
#    interval above.
#    ```{admonition} Hint
#    :class: dropdown
#    With $n = 3$ the t-quantile is 4.30: a paired difference needs a mean larger than
#    $4.30 \cdot s/\sqrt{3}$, with $s$ the standard deviation of the per-seed differences.
#    ```
