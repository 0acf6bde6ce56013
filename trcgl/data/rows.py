"""Which cohort rows the image sets beyond the three splits hold: rows of the train split that the
experiment does not train on (``exclude``: its training rows), chosen for

- the **oracle** (:func:`oracle_rows`): class-balanced, for fresh renders of every class
  (chapter 2's consistency score and chapter 1's learnability ceiling);
- the **pretraining pool** (:func:`pool_rows`): the pretrained backbone's training rows;
- the inpainting DiT's **normal** images (:func:`normal_rows`): rows labelled exactly ``normal``.

The ``image-set`` stage (:data:`trcgl.stages.ROWS`) renders them; the models they train live in
:mod:`trcgl.diffusion.oracle`, :mod:`trcgl.pretraining` and :mod:`trcgl.inpaint.normal_dit`.
"""
from __future__ import annotations

import numpy as np

NORMAL = "normal"      # the PadChest label of a radiograph without findings


def oracle_rows(cfg, cohort, exclude: np.ndarray, seed: int) -> np.ndarray:
    """Cohort rows for the oracle: frontal rows of the train split not in ``exclude`` (the
    experiment's training rows), ``oracle_per_class`` carrying each class. A class with fewer such rows has them repeated;
    a repeat is rendered on a new patient's anatomy (see ``repeat_ids``), so every class gets
    its share of fresh phantoms."""
    frame = cohort.frame
    pool = (cohort.split == "train") & frame["Projection"].isin(list(cfg.data.projections)).to_numpy()
    pool[np.asarray(exclude, dtype=np.int64)] = False
    rng = np.random.default_rng(seed + 991)
    chosen: list[int] = []
    n = cfg.diffusion.oracle_per_class
    for c in range(cohort.Y.shape[1]):
        rows = np.flatnonzero(pool & (cohort.Y[:, c] == 1))
        if len(rows):
            chosen.extend(rng.choice(rows, size=n, replace=len(rows) < n).tolist())
    return np.asarray(sorted(chosen), dtype=np.int64)


def pool_rows(cfg, cohort, exclude: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Cohort rows for the pretraining pool: frontal rows of the train split not in ``exclude``
    (the experiment's training rows), ``n`` of them drawn at random (all when fewer)."""
    allowed = (cohort.split == "train") & cohort.frame["Projection"].isin(list(cfg.data.projections)).to_numpy()
    allowed[exclude] = False
    pool = np.flatnonzero(allowed)
    rng = np.random.default_rng([seed, 5171])
    return np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))


def normal_rows(cfg, cohort, exclude: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Cohort rows labelled exactly ``normal``: frontal, train split, not in ``exclude`` (the
    classifier's training rows), ``n`` of them drawn at random (all when fewer)."""
    frame = cohort.frame
    only_normal = frame["labels"].map(lambda labels: list(labels) == [NORMAL]).to_numpy()
    allowed = (cohort.split == "train") & only_normal & frame["Projection"].isin(list(cfg.data.projections)).to_numpy()
    allowed[np.asarray(exclude, dtype=np.int64)] = False
    pool = np.flatnonzero(allowed)
    if len(pool) == 0:
        raise ValueError("no normal training-split rows outside the training set: the normal generator has nothing to learn")
    rng = np.random.default_rng(seed + 4409)
    return np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))
