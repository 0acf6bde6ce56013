"""Do the samples show the pathology? The oracle and the consistency score (not in the paper).

The **oracle** is a classifier trained on many freshly rendered, class-balanced phantoms (rows of
the training split that the experiment does not train on; a rare class's rows are repeated on new
patient anatomy), i.e. on the renderer's ground truth. Its probability of the prompted class on
a synthetic image is the **pathology-consistency score** (:func:`consistency_table`), compared
with real images of that class and with unconditional samples; the Fréchet distance between
oracle features of synthetic and real images (:func:`frechet_distance`) measures how far the
synthetic distribution is from the real one, and the mean pairwise distance how diverse it is.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data.datasets import ImageSet
from .generate import image_set_of


def oracle_config(cfg):
    """The oracle: the GAP-only classifier, 1 warm-up epoch + ``oracle_epochs`` fine-tuning epochs of
    the whole network at ``oracle_backbone_lr`` / ``oracle_head_lr``. It is also the learnability
    ceiling of chapter 1 (:mod:`trcgl.ceiling`), so it is trained to learn what the images allow: at
    the paper's fine-tuning rates (1.5e-5 for the backbone) the cpu profile's ceiling measured a
    mean AUC of 0.78; at 5e-4 / 1e-3, 0.94."""
    d = cfg.diffusion
    return cfg.replace({"model.channel_gate": False, "model.spatial_attention": False, "model.label_gcn": False,
                        "train.warmup_epochs": 1, "train.finetune_epochs": d.oracle_epochs,
                        "train.backbone_lr": d.oracle_backbone_lr, "train.head_lr": d.oracle_head_lr})


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||μ_a − μ_b||² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½) between two feature samples (rows)."""
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(sa @ sb)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(sa)) * 1e-6
        covmean = linalg.sqrtm((sa + eps) @ (sb + eps))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2 * covmean.real))


def mean_pairwise_distance(f: np.ndarray) -> float:
    """Diversity: the mean Euclidean distance between distinct pairs of feature rows (scipy's ``pdist``)."""
    from scipy.spatial.distance import pdist

    if len(f) < 2:
        return float("nan")
    return float(pdist(np.asarray(f, dtype=float)).mean())


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis) - y.mean(axis=axis)


def bootstrap_difference(a: np.ndarray, b: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95):
    """mean(a) − mean(b) with a percentile bootstrap interval (``scipy.stats.bootstrap``,
    independent resamples of a and b); the interval is NaN when a sample has fewer than 2 values."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    point = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if len(a) < 2 or len(b) < 2:
        return point, float("nan"), float("nan")
    ci = stats.bootstrap((a, b), _mean_difference, n_resamples=n, confidence_level=level, method="percentile",
                         paired=False, vectorized=True, rng=np.random.default_rng(seed)).confidence_interval
    return point, float(ci.low), float(ci.high)


def consistency_table(classes, targets, P_synth, synth_targets, P_uncond, P_real, Y_real,
                      n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per target class: the oracle's mean probability of the class on synthetic images prompted
    with it, on unconditional samples, on real images with and without it; the synthetic −
    unconditional difference with a 95 % bootstrap interval; ``above baseline`` when the interval
    lies above 0."""
    rows = []
    synth_targets = np.asarray(synth_targets)
    for c in targets:
        s = P_synth[synth_targets == c, c]
        u = P_uncond[:, c]
        diff, lo, hi = bootstrap_difference(s, u, n_boot, seed + int(c)) if len(s) else (np.nan,) * 3
        rows.append({"class": classes[c], "synthetic": s.mean() if len(s) else np.nan,
                     "synthetic > 0.5": (s > 0.5).mean() if len(s) else np.nan,
                     "unconditional": u.mean(), "real with class": P_real[Y_real[:, c] == 1, c].mean(),
                     "real without class": P_real[Y_real[:, c] == 0, c].mean(),
                     "synthetic - unconditional": diff, "ci low": lo, "ci high": hi,
                     "above baseline": bool(lo > 0)})
    return pd.DataFrame(rows).set_index("class")


_VIEWS: dict = {}   # (oracle model, images' digest, ...) -> (P, F): chapter 2 shows the same sets on several rungs
_VIEWS_MAX = 16


def oracle_view(oracle_run, images: np.ndarray, classes, device) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C), pooled features (N, D)) of the oracle on uint8 images, in one pass
    (a forward hook on the backbone pools its maps while the heads score them). Remembered per
    oracle and image content for the process, so a set shown on several rungs is scored once;
    the arrays returned are read-only."""
    from ..cache import digest
    from ..train import predict

    # the model itself, not its id: a remembered view keeps its model alive, so no id is reused
    key = (oracle_run.model, str(device), tuple(classes), digest(images))
    if key in _VIEWS:
        return _VIEWS[key]
    pooled = []
    hook = oracle_run.model.backbone.register_forward_hook(
        lambda _m, _i, out: pooled.append(out.float().mean(dim=(2, 3)).cpu()))
    try:
        P = predict(oracle_run.model, image_set_of(images, classes), oracle_run.mean, oracle_run.std, device)
    finally:
        hook.remove()
    F = torch.cat(pooled).numpy() if pooled else np.zeros((0, 0), np.float32)
    for a in (P, F):
        a.setflags(write=False)
    if len(_VIEWS) >= _VIEWS_MAX:
        _VIEWS.pop(next(iter(_VIEWS)))
    _VIEWS[key] = (P, F)
    return P, F


def guidance_sweep_table(oracle_run, images_by_omega: dict, plan: pd.DataFrame, real_train: ImageSet,
                         real_eval: ImageSet, targets, device) -> pd.DataFrame:
    """For each ω (``images_by_omega``: the same prompts and starting noise sampled at each ω): the
    oracle's mean probability of the prompted class, the fraction above 0.5, the Fréchet distance
    between oracle features of the synthetic images and of real evaluation images with a target
    class, and the diversity (mean pairwise feature distance within a class). Real-vs-real
    references (training vs evaluation images of the target classes) sit in the ``(real)`` columns."""
    classes = real_train.classes
    tgt = plan["target_id"].to_numpy()
    P_val, F_val = oracle_view(oracle_run, real_eval.images, classes, device)
    _, F_train = oracle_view(oracle_run, real_train.images, classes, device)
    val_any = real_eval.Y[:, targets].any(1)
    train_any = real_train.Y[:, targets].any(1)
    real_p = np.concatenate([P_val[real_eval.Y[:, c] == 1, c] for c in targets])
    real_div = np.nanmean([mean_pairwise_distance(F_val[real_eval.Y[:, c] == 1]) for c in targets])
    rows = {}
    for omega, x in images_by_omega.items():
        P, F = oracle_view(oracle_run, x, classes, device)
        p = P[np.arange(len(x)), tgt]
        rows[float(omega)] = {
            "oracle p(target)": p.mean(), "oracle p(target) (real)": real_p.mean(),
            "synthetic > 0.5": (p > 0.5).mean(), "synthetic > 0.5 (real)": (real_p > 0.5).mean(),
            "Fréchet distance": frechet_distance(F, F_val[val_any]),
            "Fréchet distance (real)": frechet_distance(F_train[train_any], F_val[val_any]),
            "diversity": np.nanmean([mean_pairwise_distance(F[tgt == c]) for c in targets]),
            "diversity (real)": real_div,
        }
    table = pd.DataFrame(rows).T
    table.index.name = "ω"
    return table
