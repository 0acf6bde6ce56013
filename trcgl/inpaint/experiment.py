"""The inpainting chapter's experiments: everything it trains on, the rows of its tables, and the
per-class scores in the paper's style.

Every arm is the tables' ConvNeXt baseline (``experiments.gap_only``: TRCGL-Net's backbone, GAP
and a linear classifier), trained on the same split with the same seeds and recipe as Tables 1-5,
so "no augmentation" is exactly Table 1's ConvNeXt row. The inpainting paper evaluates plain
classifiers (ResNet-50, EfficientNet, ConvNeXt, ...) the same way.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.datasets import ImageSet, concat_sets
from ..experiments import Row, gap_only, table_data
from ..metrics import evaluate

NO_AUG, PROMPT, INPAINT, BOTH = "no augmentation", "prompt diffusion", "inpainting", "both"
COPIES = "control: the same images, not inpainted, + PIL"


@dataclass
class InpaintData:
    table: object               # experiments.TableData (table cfg, cohort, train and val sets, synthetic set)
    vae_run: object             # the prompt-diffusion run whose autoencoder the DiT shares
    cam_run: object             # the classifier whose Grad-CAM gives the masks (TrainResult)
    normals: ImageSet           # the normal images the DiT learns from
    dit: object                 # NormalDiT
    inpainted: object           # InpaintResult with the configured guard
    unguarded: object           # InpaintResult with the guard off (ablation)


def inpainting_data(cfg, cache, progress: bool = True) -> InpaintData:
    """Load or make everything the chapter needs. The CAM classifier is the GAP-only classifier of
    the earlier chapters (trained on the profile's full training set: it sees head classes far
    more often than tail ones, as the paper's classifier C does)."""
    from ..data.datasets import load_splits
    from ..diffusion.training import train_prompt_diffusion
    from ..train import train_classifier
    from ..variants import GAP_ONLY, component_variants
    from .normal_dit import normal_image_set, train_normal_dit
    from .repaint import inpaint_training_set

    data = table_data(cfg, cache)
    cohort, train_full, val_set = load_splits(cfg, cache)
    run = train_prompt_diffusion(cfg, cohort.class_set, train_full, val_set, cache=cache)
    cam_run = train_classifier(component_variants(cfg)[GAP_ONLY], train_full, val_set, cohort.groups, cache=cache)
    normals = normal_image_set(cfg, cohort, data.train_set, cache)
    dit = train_normal_dit(cfg, normals, run.pipeline.vae, cache=cache)
    guarded = inpaint_training_set(cfg, cohort, data.train_set, dit, cam_run, cache, progress=progress)
    unguarded = inpaint_training_set(cfg, cohort, data.train_set, dit, cam_run, cache, guard="off", progress=progress)
    return InpaintData(data, run, cam_run, normals, dit, guarded, unguarded)


def with_progressive(image_set: ImageSet, value: bool) -> ImageSet:
    """A copy whose rows PIL does (True) or does not (False) schedule."""
    return dataclasses.replace(image_set, rows=image_set.rows.assign(progressive=value))


def head_to_head_rows(tcfg, synthetic: ImageSet, inpainted: ImageSet) -> list[Row]:
    """No augmentation vs prompt diffusion (all at once, weight w, as in TRCGL-Net) vs inpainting
    (with PIL, as in its paper) vs both (each part scheduled as in its own method)."""
    base = gap_only(tcfg)
    pil = base.replace({"train.extra_schedule": "pil"})
    both = concat_sets(with_progressive(synthetic, False), with_progressive(inpainted, True))
    return [Row(NO_AUG, base, meta={"extra": 0}),
            Row(PROMPT, base, extra=synthetic, meta={"extra": len(synthetic)}),
            Row(INPAINT, pil, extra=inpainted, meta={"extra": len(inpainted)}),
            Row(BOTH, pil, extra=both, meta={"extra": len(both)})]


def originals_control(train_set: ImageSet, result) -> ImageSet:
    """The control for "is it the inpainting, or just more images?": the very images that were
    inpainted, unchanged and with all their labels, added as extra images with the same weight."""
    from ..data.datasets import take

    copies = take(train_set, result.originals)
    rows = copies.rows.assign(ImageID=copies.rows["ImageID"].astype(str) + "~copy", progressive=True)
    return dataclasses.replace(copies, rows=rows, weights=result.images.weights.copy(), masks_packed=None,
                               source="copies")


def ablation_rows(tcfg, inpainted: ImageSet, unguarded: ImageSet, copies: ImageSet | None = None) -> list[Row]:
    """The inpainting paper's Table 4 question (does PIL help?) crossed with the guard, and the
    control: the same images added again without inpainting (with PIL)."""
    base = gap_only(tcfg)
    pil = base.replace({"train.extra_schedule": "pil"})
    rows = [Row(NO_AUG, base),
            Row("inpainting, no guard, all at once", base, extra=unguarded),
            Row("+ guard, all at once", base, extra=inpainted),
            Row("no guard, + PIL", pil, extra=unguarded),
            Row("+ guard + PIL (the method)", pil, extra=inpainted)]
    if copies is not None:
        rows.append(Row(COPIES, pil, extra=copies))
    return rows


def per_class_scores(runs: dict, rows, val_set: ImageSet, groups, threshold: float, metric: str = "F1") -> pd.DataFrame:
    """Per class (index) and row (columns): ``metric`` (F1 or AP) ×100, mean over the seeds each
    row was trained with; a ``group`` column first, as the paper's per-class tables."""
    classes = list(val_set.classes)
    out = {}
    for row in rows:
        scores = [evaluate(val_set.Y, r.val_probs, classes, groups, threshold).per_class[metric]
                  for (name, _), r in runs.items() if name == row]
        if scores:
            out[row] = 100 * pd.concat(scores, axis=1).mean(axis=1)
    table = pd.DataFrame(out)
    table.insert(0, "group", list(groups))
    return table


def interval_text(row) -> str:
    """"+0.0123 [+0.0010, +0.0236]" for a paired_differences row, without an interval for one seed."""
    if np.isnan(row["low"]):
        return f"{row.iloc[0]:+.4f} (one seed: no interval)"
    return f"{row.iloc[0]:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]"


def with_deltas(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Add "Δ <row>" columns: each row's score minus the reference's (the paper's "(+x)")."""
    out = table.copy()
    for col in [c for c in table.columns if c not in ("group", reference)]:
        out[f"Δ {col}"] = table[col] - table[reference]
    return out


def group_means(table: pd.DataFrame) -> pd.DataFrame:
    """Means of a per-class table by group (classes without a score left out), plus all."""
    num = table.drop(columns="group")
    g = num.groupby(table["group"]).mean().reindex([x for x in ("head", "medium", "tail") if x in set(table["group"])])
    g.loc["all"] = num.mean()
    return g


def guard_effect(guarded, unguarded) -> pd.DataFrame:
    """What the guard prevents, per setting: images inpainted, head findings erased, and how much
    of the kept findings' true lesions the inpainting masks paint over (phantoms)."""
    rows = {}
    for name, res in (("guard off", unguarded), (f"guard on ({guarded.report['guard']})", guarded)):
        d = res.damage["erased share"] if len(res.damage) else pd.Series(dtype=float)
        rows[name] = {"images inpainted": res.report["inpainted"], "head findings erased": res.report["erased"],
                      "head findings kept by the guard": res.report["kept by the guard"],
                      "kept lesions (image, finding)": int(len(d)),
                      "mean share of a kept lesion painted over": float(d.mean()) if len(d) else np.nan,
                      "kept lesions more than half painted over": int((d > 0.5).sum())}
    return pd.DataFrame.from_dict(rows, orient="index")
