"""The learnability ceiling (chapter 1): how well each class can be learnt from the images at all.

A results table can only be as good as its images allow. If a class's lesion is too faint or too
thin to be seen at the training resolution, every method scores chance on it and the table
measures the renderer, not the method. The yardstick is the **oracle** of
:mod:`trcgl.diffusion.oracle` (the GAP-only classifier trained on ``diffusion.oracle_per_class``
fresh, class-balanced renders of training-split rows the experiment does not use; a rare class's
rows repeated on new patient anatomy), scored here per class on the **test split** (rare test rows
repeated on fresh anatomy up to ``data.min_test_positives``), with a percentile interval that
resamples label rows (a row and its repeats are drawn together).

A class whose ceiling is below ``ceiling.min_auc`` is flagged: its lesion model needs to be more
visible (issue "a fair task"), not its row dropped.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import RankedScores
from .resampling import interval, row_weights


def ceiling_table(Y: np.ndarray, P: np.ndarray, clusters, classes, groups, train_positives,
                  n_boot: int = 500, seed: int = 0, level: float = 0.95, method: str = "bc") -> pd.DataFrame:
    """Per class: ROC AUC of ``P`` on ``Y`` with a ``method`` interval over ``n_boot`` resamples of
    the ``clusters`` (label rows: an image and its repeats count once), the test positives (images
    and distinct label rows) and the training positives of the ceiling classifier. A class without
    positives or negatives is not scored (NaN)."""
    Y, P = np.asarray(Y), np.asarray(P, dtype=float)
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    ranked = RankedScores(Y, P)
    auc = ranked.scores()[1]
    draws = np.array([ranked.scores(w)[1] for w in row_weights(clusters, n_boot, seed)]).reshape(n_boot, -1)
    out = []
    for c, name in enumerate(classes):
        y = Y[:, c] == 1
        lo, hi = interval(draws[:, c], auc[c], method, level)
        out.append({"class": name, "group": groups[c], "AUC": auc[c], "low": lo, "high": hi,
                    "test images": int(y.sum()), "test label rows": int(len(np.unique(inverse[y]))),
                    "training positives": int(train_positives[c])})
    return pd.DataFrame(out).set_index("class")


def failing(table: pd.DataFrame, min_auc: float) -> list[str]:
    """The classes whose ceiling AUC is below ``min_auc`` or could not be scored."""
    auc = table["AUC"]
    return list(auc.index[~(auc >= min_auc)])
