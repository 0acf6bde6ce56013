"""The synthetic tail set (paper Sec. 3.1) and the checks the paper does not make.

1. :func:`draw_label_sets`: for each target class (tail, or tail + medium), label sets are drawn
   from real training rows that contain it, and turned into prompts; the synthetic image's label
   vector is exactly the set of findings its prompt names.
2. :func:`sample_images`: DDIM + classifier-free guidance (Eq. 4-6), cached by pipeline, prompts,
   ω, steps and seed.
3. :func:`filter_thresholds` / :func:`synthetic_training_set`: a classifier trained on real data
   keeps an image when its probability for the prompted class exceeds the
   ``filter_negative_quantile`` quantile of its probabilities on real training images without
   that class (it must look more like the class than 90 % of real negatives do). Kept images
   become an :class:`~trcgl.data.datasets.ImageSet` with per-sample weight ``synthetic_weight``.
4. The **oracle** (:func:`train_oracle`): a classifier trained on many freshly rendered, class-
   balanced phantoms, i.e. on the renderer's ground truth. Its probability of the prompted class
   on a synthetic image is the **pathology-consistency score** (:func:`consistency_table`),
   compared with real images of that class and with unconditional samples; the Fréchet distance
   between oracle features of synthetic and real images (:func:`frechet_distance`) measures how
   far the synthetic distribution is from the real one.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..cache import ArtifactCache
from ..data.datasets import ImageSet, XrayDataset, build_image_set, make_loader
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


def draw_label_sets(train_set: ImageSet, class_set, targets, n_per_class: int, seed: int = 0,
                    max_findings: int = 4) -> pd.DataFrame:
    """One row per synthetic image to make: target class, source row, its findings, prompt, labels.

    The findings are the target class first, then the source row's other findings in class-set
    order up to ``max_findings`` (``normal`` is dropped when a finding is present)."""
    names = list(class_set.classes)
    rng = np.random.default_rng(seed)
    out = []
    for c in targets:
        rows = np.flatnonzero(train_set.Y[:, c] == 1)
        if len(rows) == 0:
            raise ValueError(f"class '{names[c]}' has no training row to draw a label set from")
        pick = rng.choice(rows, size=n_per_class, replace=len(rows) < n_per_class)
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


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pipeline_key(run) -> str:
    """What identifies a diffusion model in cache keys: its cache folder, or a loaded folder's path."""
    return run.folder.name if run.folder is not None else f"loaded:{run.pipeline.name_or_path}"


def sample_images(run, prompts, class_ids, omega: float, steps: int, seed: int, cache: ArtifactCache,
                  unconditional: bool = False, batched_cfg: bool = True, clip_latents: float | None = None) -> np.ndarray:
    """uint8 images (N, H, W) for prompts with guidance scale ω, cached."""
    params = {"stage": "samples-v1", "pipeline": pipeline_key(run), "prompts": _digest(list(prompts)),
              "class_ids": _digest([int(c) for c in class_ids]), "omega": float(omega), "steps": int(steps),
              "seed": int(seed), "unconditional": unconditional}
    if clip_latents is not None:
        params["clip_latents"] = float(clip_latents)

    def build(work):
        x = run.pipeline(list(prompts), [int(c) for c in class_ids], guidance_scale=omega,
                         num_inference_steps=steps, seed=seed, unconditional=unconditional, batched_cfg=batched_cfg,
                         clip_latents=clip_latents)
        np.save(work / "images.npy", np.round(x * 255).astype(np.uint8))

    return np.load(cache.get_or_compute("samples", params, build) / "images.npy")


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


# ----------------------------------------------------------------------------- the filter

def filter_thresholds(P_train: np.ndarray, Y_train: np.ndarray, quantile: float) -> np.ndarray:
    """Per class: the ``quantile`` quantile of the filter's probabilities on real training negatives."""
    if not 0 < quantile < 1:
        raise ValueError(f"filter quantile must be in (0, 1), got {quantile}")
    out = np.full(P_train.shape[1], np.inf)
    for c in range(P_train.shape[1]):
        neg = P_train[Y_train[:, c] == 0, c]
        if len(neg):
            out[c] = np.quantile(neg, quantile)
    return out


def keep_mask(p_target: np.ndarray, target_ids: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Keep an image when its probability for its own target class passes that class's threshold."""
    return p_target > thresholds[np.asarray(target_ids)]


@dataclass
class SyntheticResult:
    kept: ImageSet              # what joins the training set (weight = diffusion.synthetic_weight)
    plan: pd.DataFrame          # every generated image: target, prompt, findings, p_filter, kept
    images: np.ndarray          # every generated image (uint8), kept or not
    report: pd.DataFrame        # per target class: generated, kept, kept fraction, threshold
    thresholds: np.ndarray


def synthetic_training_set(cfg, cohort, train_set: ImageSet, run, filter_run, cache: ArtifactCache,
                           seed: int | None = None) -> SyntheticResult:
    """Generate ``n_per_class`` images per target class at ω = ``guidance_scale``, filter them with
    ``filter_run`` (a :class:`~trcgl.train.TrainResult` trained on real data) and weight the rest."""
    from ..runtime import select_device
    from ..train import predict

    d = cfg.diffusion
    seed = cfg.seed if seed is None else seed
    targets = target_classes(cfg, cohort.groups)
    plan = draw_label_sets(train_set, cohort.class_set, targets, d.n_per_class, seed)
    images = sample_images(run, plan["prompt"], plan["target_id"], d.guidance_scale, d.sampling_steps, seed, cache,
                           clip_latents=d.clip_latents)
    device = select_device(cfg.device)
    P_train = predict(filter_run.model, train_set, filter_run.mean, filter_run.std, device)
    thresholds = filter_thresholds(P_train, train_set.Y, d.filter_negative_quantile)
    P = predict(filter_run.model, image_set_of(images, train_set.classes), filter_run.mean, filter_run.std, device)
    plan = plan.assign(p_filter=P[np.arange(len(plan)), plan["target_id"]])
    plan["kept"] = keep_mask(plan["p_filter"].to_numpy(), plan["target_id"].to_numpy(), thresholds)
    report = plan.groupby("target", sort=False).agg(generated=("kept", "size"), kept=("kept", "sum"))
    report["kept_fraction"] = report["kept"] / report["generated"]
    report["threshold"] = [thresholds[cohort.class_set.index(c)] for c in report.index]
    keep = plan["kept"].to_numpy()
    kept = as_image_set(images[keep], plan[keep].reset_index(drop=True), cohort.class_set, d.synthetic_weight)
    return SyntheticResult(kept, plan, images, report, thresholds)


# ----------------------------------------------------------------------------- the oracle

def oracle_rows(cfg, cohort, exclude_ids, seed: int) -> np.ndarray:
    """Cohort rows for the oracle: frontal training-split rows not in the training set,
    ``oracle_per_class`` carrying each class. A class with fewer such rows has them repeated;
    a repeat is rendered on a new patient's anatomy (see ``repeat_ids``), so every class gets
    its share of fresh phantoms."""
    frame = cohort.frame
    pool = (cohort.is_train & frame["Projection"].isin(list(cfg.data.projections)).to_numpy()
            & ~frame["ImageID"].isin(set(exclude_ids)).to_numpy())
    rng = np.random.default_rng(seed + 991)
    chosen: list[int] = []
    n = cfg.diffusion.oracle_per_class
    for c in range(cohort.Y.shape[1]):
        rows = np.flatnonzero(pool & (cohort.Y[:, c] == 1))
        if len(rows):
            chosen.extend(rng.choice(rows, size=n, replace=len(rows) < n).tolist())
    return np.asarray(sorted(chosen), dtype=np.int64)


def oracle_config(cfg):
    """The oracle: the GAP-only classifier, 1 warm-up epoch + ``oracle_epochs`` fine-tuning epochs."""
    return cfg.replace({"model.channel_gate": False, "model.spatial_attention": False, "model.label_gcn": False,
                        "train.warmup_epochs": 1, "train.finetune_epochs": cfg.diffusion.oracle_epochs})


def train_oracle(cfg, cohort, train_set: ImageSet, val_set: ImageSet, cache: ArtifactCache):
    """(oracle TrainResult, its training ImageSet): trained on freshly rendered phantoms."""
    from ..train import train_classifier

    if cfg.data.source != "phantom":
        raise ValueError("the oracle needs the renderer's ground truth: it exists for data.source = phantom only")
    index = oracle_rows(cfg, cohort, train_set.rows["ImageID"], cfg.seed)
    oracle_set = build_image_set(cfg, cohort, "oracle", cache, index=index)
    return train_classifier(oracle_config(cfg), oracle_set, val_set, cohort.groups, cache=cache, name="oracle"), oracle_set


@torch.no_grad()
def features(model, image_set: ImageSet, mean: float, std: float, device, batch_size: int = 128) -> np.ndarray:
    """The classifier's globally pooled backbone features (N, D)."""
    model.eval()
    out = []
    for x, _, _ in make_loader(XrayDataset(image_set, mean, std), batch_size, shuffle=False):
        out.append(model.backbone(x.to(device)).float().mean(dim=(2, 3)).cpu())
    return torch.cat(out).numpy()


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


def oracle_view(oracle_run, images: np.ndarray, classes, device) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C), pooled features (N, D)) of the oracle on uint8 images."""
    from ..train import predict

    s = image_set_of(images, classes)
    return (predict(oracle_run.model, s, oracle_run.mean, oracle_run.std, device),
            features(oracle_run.model, s, oracle_run.mean, oracle_run.std, device))


def guidance_sweep_table(cfg, run, oracle_run, plan: pd.DataFrame, real_train: ImageSet, real_val: ImageSet,
                         targets, cache: ArtifactCache, seed: int, device) -> tuple[pd.DataFrame, dict]:
    """For each ω of ``diffusion.guidance_sweep``: the oracle's mean probability of the prompted
    class, the fraction above 0.5, the Fréchet distance between oracle features of the synthetic
    images and of real validation images with a target class, and the diversity (mean pairwise
    feature distance within a class). Real-vs-real references (training vs validation images of
    the target classes) sit in the ``(real)`` columns. Returns (table indexed by ω, images by ω)."""
    d = cfg.diffusion
    classes = real_train.classes
    tgt = plan["target_id"].to_numpy()
    P_val, F_val = oracle_view(oracle_run, real_val.images, classes, device)
    _, F_train = oracle_view(oracle_run, real_train.images, classes, device)
    val_any = real_val.Y[:, targets].any(1)
    train_any = real_train.Y[:, targets].any(1)
    real_p = np.concatenate([P_val[real_val.Y[:, c] == 1, c] for c in targets])
    real_div = np.nanmean([mean_pairwise_distance(F_val[real_val.Y[:, c] == 1]) for c in targets])
    rows, images = {}, {}
    for omega in d.guidance_sweep:
        x = sample_images(run, plan["prompt"], tgt, omega, d.sampling_steps, seed, cache, clip_latents=d.clip_latents)
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
        images[float(omega)] = x
    table = pd.DataFrame(rows).T
    table.index.name = "ω"
    return table, images
