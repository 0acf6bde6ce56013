"""The entanglement guard: which head lesions must not be erased (the paper's LLM knowledge
module, Sec. 3.2.1, replaced by a rule computed from data).

A chest X-ray projects 3-D anatomy onto a plane, so a head-class lesion can overlie a tail-class
lesion; inpainting the first would erase the second. The paper asks GPT-4 which head class is
entangled with the tail class of an image and keeps that one. Here each class gets a spatial
prior p_c (a distribution over a grid of the frontal view) and two classes are entangled when
their priors overlap:

    e(h, k) = Σ_xy min(p_h(x, y), p_k(x, y))    (1 for identical priors, 0 for disjoint ones).

As in the paper, the guard keeps (does not erase; its label stays) the one head class of an image
most entangled with a finding the image keeps, when that entanglement max_k e(h, k) reaches τ,
and erases the other head classes. The priors come from the real PadChest localization statistics (each
location token's frequency for the class times its approximate box, split by side), or, on
phantoms, from the renderer's true lesion masks averaged over the training images.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

GUARDS = ("padchest", "masks", "off")
NOT_A_LESION = ("normal",)      # head labels with nothing to erase


def _box_grid(box, grid: int) -> np.ndarray:
    lin = (np.arange(grid) + 0.5) / grid
    X, Y = np.meshgrid(lin, lin)
    x0, y0, x1, y1 = box
    return ((X >= x0) & (X <= x1) & (Y >= y0) & (Y <= y1)).astype(float)


def _normalised(p: np.ndarray) -> np.ndarray:
    s = p.sum()
    return p / s if s > 0 else np.full_like(p, 1.0 / p.size)


def priors_from_statistics(stats: dict, classes, grid: int = 32) -> np.ndarray:
    """(C, grid, grid) priors from :func:`trcgl.data.padchest.localization_stats`: the sum over
    location tokens of frequency × box, restricted to the image half of each side in proportion
    to the side fractions (the patient's right is the image's left). A class without a located
    sentence gets a uniform prior (it may be anywhere, so it overlaps everything a little)."""
    from ..data.phantom import _location_boxes

    boxes = _location_boxes()
    lin = (np.arange(grid) + 0.5) / grid
    left = np.broadcast_to(lin[None, :] < 0.5, (grid, grid)).astype(float)
    out = []
    for name in classes:
        s = stats.get(name, {})
        base = np.zeros((grid, grid))
        for loc, freq in s.get("locations", {}).items():
            box = boxes.get(loc, {}).get("box_xyxy_norm")
            if box is not None:
                base += freq * _box_grid(box, grid)
        sides = s.get("side_fraction", {})
        f_r, f_l = sides.get("R", 0.0), sides.get("L", 0.0)
        f_rest = max(1.0 - f_r - f_l, 0.0)
        out.append(_normalised(base * (f_r * left + f_l * (1 - left) + f_rest)))
    return np.stack(out)


def priors_from_masks(image_set, grid: int = 32) -> np.ndarray:
    """(C, grid, grid) priors: the mean true lesion mask of each class over the images carrying it
    (phantom source only; uniform for a class no image carries)."""
    from ..localization import mask_to_grid

    C = len(image_set.classes)
    acc = np.zeros((C, grid, grid))
    for i in range(len(image_set)):
        present = np.flatnonzero(image_set.Y[i])
        if len(present) == 0:
            continue
        m = image_set.masks(i)
        for c in present:
            acc[c] += mask_to_grid(m[c], grid, grid)
    return np.stack([_normalised(a) for a in acc])


def entanglement(priors: np.ndarray) -> np.ndarray:
    """(C, C) overlap e(h, k) = Σ min(p_h, p_k) of normalised priors (symmetric, diagonal 1)."""
    P = priors.reshape(len(priors), -1)
    return np.minimum(P[:, None, :], P[None, :, :]).sum(-1)


def erase_plan(Y: np.ndarray, classes, groups, E: np.ndarray | None, threshold: float,
               keep_groups=("medium", "tail")) -> pd.DataFrame:
    """Per image that has an erasable head finding and a finding of ``keep_groups``: the head
    classes to erase, the head class the guard keeps (the most entangled one, if its
    entanglement reaches ``threshold``; ``E`` None: guard off) and the findings kept. An image
    whose only head finding the guard keeps is listed with nothing to erase."""
    classes, groups = list(classes), np.asarray(groups)
    head = np.array([g == "head" and c not in NOT_A_LESION for c, g in zip(classes, groups)])
    keep = np.isin(groups, list(keep_groups))
    rows = []
    for i in np.flatnonzero((Y[:, head] == 1).any(1) & (Y[:, keep] == 1).any(1)):
        heads = [c for c in np.flatnonzero(Y[i] == 1) if head[c]]
        kept_findings = [c for c in np.flatnonzero(Y[i] == 1) if not head[c]]
        guard_kept = []
        if E is not None:
            score = {h: max(E[h, k] for k in kept_findings) for h in heads}
            best = max(heads, key=lambda h: (score[h], -h))
            guard_kept = [best] if score[best] >= threshold else []
        rows.append({"index": int(i), "head": heads, "erase": [h for h in heads if h not in guard_kept],
                     "guard_kept": guard_kept, "kept_findings": kept_findings})
    return pd.DataFrame(rows, columns=["index", "head", "erase", "guard_kept", "kept_findings"])


def guard_matrix(cfg, cohort, train_set, grid: int = 32) -> np.ndarray | None:
    """The entanglement matrix ``inpaint.guard`` asks for (None when the guard is off)."""
    source = cfg.inpaint.guard
    if source not in GUARDS:
        raise ValueError(f"inpaint.guard must be one of {GUARDS}, got {source!r}")
    if source == "off":
        return None
    if source == "masks":
        if train_set.masks_packed is None:
            raise ValueError("inpaint.guard: masks needs the phantom's true lesion masks; use 'padchest' on real images")
        return entanglement(priors_from_masks(train_set, grid))
    return entanglement(priors_from_statistics(cohort.localization_stats(), cohort.class_set.classes, grid))
