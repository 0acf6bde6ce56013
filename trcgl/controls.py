"""Controls for the synthetic-image claim (not in the paper): what the generated tail images are
compared with, on the same real rows, seeds and loss weight.

- :func:`oversampled`: the real training rows of each target class, repeated to the count and
  weight of the synthetic budget of that class (more passes over real data, nothing new);
- :func:`ideal_renders`: the very label sets asked of the generator (or those its filter kept),
  rendered by the phantom renderer on fresh anatomy: a generator that is always right, the
  **positive control** and upper bound of what tail images can add on this benchmark;
- :func:`ideal_renders` with ``hidden`` (the target classes): the same label sets on the same
  anatomy with the target lesions left out, the **null control**: as many extra images with the
  same labels and weights, but images that show nothing of those labels; paired with the ideal
  generator image for image, so the difference between the two is what the lesions add;
- :func:`without_labels` of the null control's images: the same lesion-free images with the
  target labels removed too, the **bare control**: as many extra images, showing and claiming
  nothing of the tail, so the null control minus it is what tail labels on images that do not
  show them do (label noise), and it minus no extra images is what the extra images alone do;
- :func:`shuffled_labels`: the generated images with their label vectors permuted among them
  (each takes another target's labels), the **wrong-label control**: images that show one tail
  class labelled as another, i.e. what a generator drawing the wrong finding would do;
- :func:`retrieved`: where the generator first learnt from a pool of rows disjoint from every
  split (``diffusion.pretrain_pool``), that pool's own images of each target class at the
  budget's count and weight: extra real data the generator saw, added directly (what retrieving
  similar cases would give instead of generating them);
- :func:`at_count`: a set's images cut (or cycled) to another set's count, its target classes in
  proportion: two kinds of extra images at one dose (chapter 7 sets the generated images against
  the inpainted ones at the inpainted set's count).

If the ideal generator does not improve the tail, the benchmark cannot detect what the method
claims, whatever the method does.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .data.datasets import ImageSet, take


def oversampled(train_set: ImageSet, synthetic: ImageSet, seed: int) -> ImageSet:
    """Real training images of each target class, as many as ``synthetic`` has of that class (the
    budget), with its loss weights (rows cycled in a seeded order)."""
    return _at_budget(train_set, synthetic, np.random.default_rng([seed, 4231]), "over", "oversampled")


def retrieved(pool: ImageSet, synthetic: ImageSet, seed: int) -> ImageSet:
    """The pool's images of each target class (the rows the generator pretrained on), as many as
    ``synthetic`` has of that class (the budget), with its loss weights and the rows' own labels
    (rows cycled in a seeded order where the pool has fewer)."""
    return _at_budget(pool, synthetic, np.random.default_rng([seed, 6173]), "pool", "retrieved")


def _at_budget(source: ImageSet, synthetic: ImageSet, rng, tag: str, name: str) -> ImageSet:
    """``source``'s images of each target class of ``synthetic``, as many as it has of that class."""
    picks, weights = [], []
    for target, group in synthetic.rows.groupby("target_id", sort=True):
        rows = np.flatnonzero(source.Y[:, int(target)] == 1)
        if not len(rows):
            continue
        order = rng.permutation(rows)
        picks.extend(np.resize(order, len(group)).tolist())
        weights.extend(synthetic.weights[group.index.to_numpy()].tolist())
    out = take(source, np.asarray(picks, dtype=np.int64))
    rows = out.rows.assign(ImageID=[f"{i}~{tag}{k}" for k, i in enumerate(out.rows["ImageID"].astype(str))])
    return dataclasses.replace(out, rows=rows, weights=np.asarray(weights, np.float32), masks_packed=None,
                               source=name)


def at_count(source: ImageSet, n: int, seed: int) -> ImageSet:
    """``n`` of ``source``'s images, seeded, each target class (``target_id``; one class where the
    rows have none) given its share of ``n`` by largest remainders (ties to the lower class index)
    and drawn without replacement within it (cycled where the class has fewer images than its
    share), labels and weights kept."""
    rng = np.random.default_rng([seed, 5309])
    m = len(source)
    if n < 0 or (n > 0 and not m):
        raise ValueError(f"at_count: cannot take {n} images from a set of {m}")
    targets = source.rows["target_id"].to_numpy() if "target_id" in source.rows else np.zeros(m, int)
    classes, counts = np.unique(targets, return_counts=True)
    share = n * counts / max(m, 1)
    quota = np.floor(share).astype(int)
    quota[np.argsort(-(share - quota), kind="stable")[:n - quota.sum()]] += 1
    picks = [np.resize(rng.permutation(np.flatnonzero(targets == c)), q) for c, q in zip(classes, quota) if q]
    index = np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)
    return take(source, index.astype(np.int64))


def ideal_renders(renderer, synthetic: ImageSet, train_set: ImageSet, size: int, seed: int | str,
                  hidden=()) -> ImageSet:
    """The label sets of ``synthetic`` (its rows' ``source_row`` and labels; its images are not
    read) rendered by the phantom renderer on fresh anatomy (the finding placed where the source
    row's sentences put it), same labels and weights; ``seed`` names the anatomy drawn. Classes in
    ``hidden`` keep their labels but are not drawn (the null control): the renderer draws anatomy
    and each finding from streams of their own, so with the same ``seed`` each image is the
    ideal one without those findings."""
    from .data.phantom import downsample

    names, hidden = list(synthetic.classes), set(hidden)
    unknown = hidden - set(names)
    if unknown:
        raise ValueError(f"ideal_renders: hidden classes {sorted(unknown)} are not in the image set's classes")
    suffix = "~nolesion" if hidden else ""
    imgs, masks = [], []
    for k in range(len(synthetic)):
        row = synthetic.rows.iloc[k]
        src = train_set.rows.iloc[int(row["source_row"])]
        present = [names[c] for c in np.flatnonzero(synthetic.Y[k]) if names[c] not in hidden]
        img, m = renderer.render(f"ideal-{seed}-{k}", present, src["sentences"], src["labels"])
        img, m = downsample(img, m, size)
        imgs.append(np.round(img * 255).astype(np.uint8))
        masks.append(np.packbits(m.reshape(len(names), -1), axis=-1))
    rows = synthetic.rows.assign(ImageID=[f"ideal-{seed}-{k}{suffix}" for k in range(len(synthetic))])
    return dataclasses.replace(synthetic, images=np.stack(imgs), masks_packed=np.stack(masks), rows=rows,
                               source="ideal, lesions hidden" if hidden else "ideal")


def without_labels(image_set: ImageSet, classes) -> ImageSet:
    """``image_set`` with the labels of ``classes`` (names) removed: those columns of ``Y`` set to
    0 and those names dropped from the rows' ``findings`` and ``labels`` lists; images, weights and
    the other labels kept. Meant for images that do not show those classes (the null control's),
    so that image and labels agree again."""
    names = list(image_set.classes)
    unknown = set(classes) - set(names)
    if unknown:
        raise ValueError(f"without_labels: classes {sorted(unknown)} are not in the image set's classes")
    drop = set(classes)
    Y = image_set.Y.copy()
    Y[:, [names.index(c) for c in sorted(drop)]] = 0
    rows = image_set.rows.copy()
    for col in ("findings", "labels"):
        if col in rows:
            rows[col] = [[f for f in v if f not in drop] if isinstance(v, (list, tuple, np.ndarray)) else v
                         for v in rows[col]]
    rows["ImageID"] = [f"{i}~nolabel" for i in rows["ImageID"].astype(str)]
    return dataclasses.replace(image_set, Y=Y, rows=rows, source=f"{image_set.source}, labels removed")


def shuffled_labels(synthetic: ImageSet, seed: int) -> ImageSet:
    """The same images with their label vectors permuted among them: each image takes the labels
    of an image made for **another target class** where the targets allow it (rows shuffled within
    each target, ordered by target, then shifted by the largest target's count), else a seeded
    derangement. The images no longer say anything about their labels."""
    rng = np.random.default_rng([seed, 977])
    n = len(synthetic)
    targets = (synthetic.rows["target_id"].to_numpy() if "target_id" in synthetic.rows else np.zeros(n, int))
    order = np.lexsort((rng.permutation(n), targets))          # by target, seeded order within a target
    largest = int(np.bincount(pd.factorize(targets)[0]).max()) if n else 0
    if 0 < largest <= n - largest:                              # a shift by the largest block leaves every block
        perm = np.empty(n, np.int64)
        perm[order] = np.roll(order, -largest)
    else:                                                       # one target (or one dominating): a derangement
        perm = rng.permutation(n)
        if n > 1:
            fixed = perm == np.arange(n)
            perm[fixed] = np.roll(perm[fixed], 1) if fixed.sum() > 1 else perm[fixed]
            if (perm == np.arange(n)).any():
                perm = np.roll(np.arange(n), 1)
    rows = synthetic.rows.copy()
    for col in ("findings", "target", "target_id", "prompt"):
        if col in rows:
            rows[col] = rows[col].to_numpy()[perm]
    rows = rows.assign(ImageID=[f"{i}~shuffled" for i in synthetic.rows["ImageID"].astype(str)])
    return dataclasses.replace(synthetic, Y=synthetic.Y[perm], rows=pd.DataFrame(rows), source="shuffled")
