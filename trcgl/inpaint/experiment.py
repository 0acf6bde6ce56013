"""The inpainting chapter's results: the control set, per-class scores in the paper's style, and
what the guard prevents.

Every arm (the rows are in :mod:`trcgl.tables`) is the tables' ConvNeXt baseline
(``tables.gap_only``: TRCGL-Net's backbone, GAP and a linear classifier), trained on the same split
with the same seeds and recipe as Tables 1-5, so "no augmentation" is exactly Table 1's ConvNeXt
row. The inpainting paper evaluates plain classifiers (ResNet-50, EfficientNet, ConvNeXt, ...) the
same way.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..data.datasets import ImageSet
from ..metrics import evaluate


def originals_control(train_set: ImageSet, result) -> ImageSet:
    """The control for "is it the inpainting, or just more images?": the very images that were
    inpainted, unchanged and with all their labels, added as extra images with the same weight."""
    from ..data.datasets import take

    copies = take(train_set, result.originals)
    rows = copies.rows.assign(ImageID=copies.rows["ImageID"].astype(str) + "~copy", progressive=True)
    return dataclasses.replace(copies, rows=rows, weights=result.images.weights.copy(), masks_packed=None,
                               source="copies")


def per_class_scores(result, rows, test_set: ImageSet, groups, metric: str = "F1") -> pd.DataFrame:
    """Per class (index) and row (columns): ``metric`` (F1 or AP) ×100 on the test split, mean over
    the seeds each row was trained with (``result``: a table stage's result; F1 at each run's own
    thresholds, as the table scored it); a ``group`` column first, as the paper's per-class tables."""
    classes = list(test_set.classes)
    out = {}
    for row in rows:
        scores = [evaluate(test_set.Y, P, classes, groups, result.thresholds[(name, seed)]).per_class[metric]
                  for (name, seed), P in result.probs.items() if name == row]
        if scores:
            out[row] = 100 * pd.concat(scores, axis=1).mean(axis=1)
    table = pd.DataFrame(out)
    table.insert(0, "group", list(groups))
    return table


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
