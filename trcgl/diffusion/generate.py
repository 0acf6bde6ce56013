"""The synthetic tail set (paper Sec. 3.1): label sets, prompts, sampling and the filter.

1. :func:`synthetic_plan`: for each target class (tail, or tail + medium), the budget's count of
   label sets (:func:`budget_counts`: a multiple of the class's real training positives) is drawn
   from real training rows that contain it (:func:`draw_label_sets`) and turned into prompts; the
   synthetic image's label vector is exactly the set of findings its prompt names.
2. :func:`sample`: DDIM + classifier-free guidance (Eq. 4-6); the ``samples`` stage caches it.
3. :func:`filter_synthetic`: a classifier trained on real data keeps an image when its
   probability for the prompted class exceeds the ``filter_negative_quantile`` quantile of its
   probabilities on real selection-split images without that class (it must look more like the
   class than 90 % of real negatives do). Kept images become an
   :class:`~trcgl.data.datasets.ImageSet` with per-sample weight ``synthetic_weight``.

How far the samples show what they were asked for is measured in :mod:`trcgl.diffusion.oracle`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.datasets import ImageSet
from ..data.padchest import multi_hot
from ..data.prompts import prompt_for_row

SYNTHETIC = "synthetic"


def target_classes(cfg, groups) -> list[int]:
    """Indices of the classes that get synthetic images (``diffusion.target_groups``)."""
    wanted = set(cfg.diffusion.target_groups)
    unknown = wanted - {"head", "medium", "tail"}
    if unknown:
        raise ValueError(f"diffusion.target_groups: unknown group(s) {sorted(unknown)}; use head, medium, tail")
    return [i for i, g in enumerate(groups) if g in wanted]


def budget_counts(cfg, train_set: ImageSet, targets, scale: float = 1.0) -> list[int]:
    """Synthetic images to request per target class (chapters 2, 5): ``diffusion.budget_multiple``
    times the class's real training positives, or ``diffusion.n_per_class`` for every class when
    that is null; times ``scale`` (the ideal generator's dose curve); at least one per class.
    The same counts for every arm of the controls, fixed before any filter."""
    d = cfg.diffusion
    if d.budget_multiple is None:
        base = np.full(len(targets), float(d.n_per_class))
    else:
        base = d.budget_multiple * train_set.Y[:, list(targets)].sum(0).astype(float)
    return [max(int(round(b * scale)), 1) for b in base]


def synthetic_plan(cfg, train_set: ImageSet, class_set, targets, seed: int, scale: float = 1.0) -> pd.DataFrame:
    """The label sets of the synthetic budget (:func:`budget_counts`): what the generator is asked
    for, and what the ideal generator renders (the same rows at scale 1)."""
    return draw_label_sets(train_set, class_set, targets, budget_counts(cfg, train_set, targets, scale), seed)


def draw_label_sets(train_set: ImageSet, class_set, targets, n_per_class, seed: int = 0,
                    max_findings: int = 4) -> pd.DataFrame:
    """One row per synthetic image to make: target class, source row, its findings, prompt, labels.

    ``n_per_class`` is one count for every target or one per target. The findings are the target
    class first, then the source row's other findings in class-set order up to ``max_findings``
    (``normal`` is dropped when a finding is present)."""
    names = list(class_set.classes)
    counts = [int(n_per_class)] * len(targets) if np.ndim(n_per_class) == 0 else [int(n) for n in n_per_class]
    if len(counts) != len(targets):
        raise ValueError(f"draw_label_sets: {len(counts)} counts for {len(targets)} target classes")
    rng = np.random.default_rng(seed)
    out = []
    for c, n in zip(targets, counts):
        rows = np.flatnonzero(train_set.Y[:, c] == 1)
        if len(rows) == 0:
            raise ValueError(f"class '{names[c]}' has no training row to draw a label set from")
        pick = rng.choice(rows, size=n, replace=len(rows) < n)
        for k, r in enumerate(pick):
            others = [names[j] for j in np.flatnonzero(train_set.Y[r]) if j != c and names[j] != "normal"]
            present = [names[c]] + others[:max_findings - 1]
            meta = train_set.rows.iloc[r]
            prompt = prompt_for_row(present, class_set, meta["sentences"], meta["ImageID"], seed + k)
            out.append({"target": names[c], "target_id": c, "source_row": int(r), "findings": present,
                        "prompt": prompt})
    plan = pd.DataFrame(out)
    plan["ImageID"] = [f"synthetic-{i:06d}" for i in range(len(plan))]
    return plan


def plan_labels(plan: pd.DataFrame, class_set) -> np.ndarray:
    """The multi-hot label vectors (N, C) of a plan: exactly the findings each prompt names."""
    return multi_hot(list(plan["findings"]), class_set)


def sample(run, prompts, class_ids, omega: float, steps: int, seed: int, unconditional: bool = False,
           batched_cfg: bool = True, clip_latents: float | None = None, labels=None) -> np.ndarray:
    """uint8 images (N, H, W) for prompts with guidance scale ω (Eq. 4-6); the ``samples`` stage
    caches them. ``labels``: the prompts' multi-hot findings (used by a label-conditioned model)."""
    x = run.pipeline(list(prompts), [int(c) for c in class_ids], guidance_scale=omega, num_inference_steps=steps,
                     seed=seed, unconditional=unconditional, batched_cfg=batched_cfg, clip_latents=clip_latents,
                     labels=labels)
    return np.round(x * 255).astype(np.uint8)


def as_image_set(images: np.ndarray, plan: pd.DataFrame, class_set, weight: float) -> ImageSet:
    """Synthetic images with their label vectors and a per-sample loss weight."""
    rows = plan.assign(ImageDir="", PatientID=plan["ImageID"], Projection=SYNTHETIC, labels=plan["findings"],
                       sentences=[[] for _ in range(len(plan))]).reset_index(drop=True)
    return ImageSet(images=images, Y=plan_labels(plan, class_set), weights=np.full(len(images), weight, np.float32),
                    rows=rows, classes=tuple(class_set.classes), masks_packed=None, source=SYNTHETIC)


def image_set_of(images: np.ndarray, classes) -> ImageSet:
    """Unlabelled images wrapped as an ImageSet (to run a classifier on them)."""
    n = len(images)
    return ImageSet(images=images, Y=np.zeros((n, len(classes)), np.uint8), weights=np.ones(n, np.float32),
                    rows=pd.DataFrame({"ImageID": [f"x{i}" for i in range(n)]}), classes=tuple(classes),
                    source=SYNTHETIC)


def filter_thresholds(P_train: np.ndarray, Y_train: np.ndarray, quantile: float) -> np.ndarray:
    """Per class: the ``quantile`` quantile of the filter's probabilities on the real negatives
    given (the selection split's, in :func:`filter_synthetic`)."""
    if not 0 < quantile < 1:
        raise ValueError(f"filter quantile must be in (0, 1), got {quantile}")
    out = np.full(P_train.shape[1], np.inf)
    for c in range(P_train.shape[1]):
        neg = P_train[Y_train[:, c] == 0, c]
        if len(neg):
            out[c] = np.quantile(neg, quantile)
    return out


def real_pass_rates(P: np.ndarray, Y: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per class: the fraction of the real images **with** the class whose filter probability
    passes the class's threshold (the filter's recall on real images at its own cut-off; NaN
    without positives). A class whose real images rarely pass is one the filter cannot recognise:
    its verdict on samples of that class says little about the samples."""
    Y = np.asarray(Y).astype(bool)
    n = Y.sum(0)
    passed = ((P > thresholds[None, :]) & Y).sum(0)
    return np.where(n > 0, passed / np.maximum(n, 1), np.nan)


def keep_mask(p_target: np.ndarray, target_ids: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Keep an image when its probability for its own target class passes that class's threshold."""
    return p_target > thresholds[np.asarray(target_ids)]


@dataclass
class SyntheticResult:
    kept: ImageSet              # what joins the training set (weight = diffusion.synthetic_weight)
    plan: pd.DataFrame          # every generated image: target, prompt, findings, p_filter, kept
    images: np.ndarray          # every generated image (uint8), kept or not
    report: pd.DataFrame        # per target class: generated, kept, kept fraction, threshold, real pass rate
    thresholds: np.ndarray


def filter_synthetic(cfg, class_set, plan: pd.DataFrame, images: np.ndarray, filter_run,
                     calibration: ImageSet, device) -> SyntheticResult:
    """Keep a synthetic image when the filter's probability for its prompted class passes that
    class's threshold: the ``filter_negative_quantile`` quantile of the filter's probabilities on
    the real **selection-split** images without the class (calibrated on a split the filter did not
    train on); kept images get loss weight ``synthetic_weight``."""
    from ..train import predict

    d = cfg.diffusion
    P_cal = predict(filter_run.model, calibration, filter_run.mean, filter_run.std, device)
    thresholds = filter_thresholds(P_cal, calibration.Y, d.filter_negative_quantile)
    P = predict(filter_run.model, image_set_of(images, calibration.classes), filter_run.mean, filter_run.std, device)
    plan = plan.assign(p_filter=P[np.arange(len(plan)), plan["target_id"]])
    plan["kept"] = keep_mask(plan["p_filter"].to_numpy(), plan["target_id"].to_numpy(), thresholds)
    report = plan.groupby("target", sort=False).agg(generated=("kept", "size"), kept=("kept", "sum"))
    report["kept_fraction"] = report["kept"] / report["generated"]
    ids = [class_set.index(c) for c in report.index]
    report["threshold"] = thresholds[ids]
    report["real_positives"] = [int(calibration.Y[:, c].sum()) for c in ids]
    report["real_kept_fraction"] = real_pass_rates(P_cal, calibration.Y, thresholds)[ids]
    keep = plan["kept"].to_numpy()
    kept = as_image_set(images[keep], plan[keep].reset_index(drop=True), class_set, d.synthetic_weight)
    return SyntheticResult(kept, plan, images, report, thresholds)
