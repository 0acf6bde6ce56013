"""The learnability ceiling: how well each class can be learnt from the phantom images at all.

A results table can only be as good as its images allow. If a class's lesion is too faint or too
thin to be seen at the training resolution, every method scores chance on it and the table
measures the renderer, not the method. The ceiling is the yardstick: the GAP-only classifier
(the paper's backbone without channel-class attention or the label graph) trained on a large,
class-balanced set of *fresh* renders (every class on ``ceiling.per_class`` training-split rows;
a class with fewer rows has them repeated, each repeat drawn on a new patient's anatomy), then
scored per class (ROC AUC with a stratified bootstrap interval) on held-out rows from the other
side of the patient split.

The evaluation rows are the evaluation image set a caller passes (today the validation split of
:func:`trcgl.data.datasets.load_splits`) plus, for classes with fewer than
``ceiling.eval_min_positives`` positives there, rows from the same side of the split drawn on
fresh anatomy (flagged ``fresh`` in the set's rows), so every class is scored on enough
positives. The epoch is chosen on a patient-disjoint share of the fresh training renders
(``ceiling.selection_fraction``) unless a selection set is passed, so nothing is chosen on the
rows that are scored.

The acceptance of issue 13 ("a fair task"): every class's ceiling AUC >= ``ceiling.min_auc``, and
their mean >= ``ceiling.min_mean_auc``; a class below gets a more visible lesion model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .cache import ArtifactCache
from .data.datasets import ImageSet, build_image_set, concat_sets, take
from .data.padchest import Cohort
from .metrics import bootstrap_auc
from .train import TrainResult, predict, train_classifier
from .variants import GAP_ONLY, component_variants


@dataclass
class CeilingResult:
    table: pd.DataFrame         # per class: group, AUC, low, high, positives, fresh positives, training positives, note
    run: TrainResult            # the GAP-only classifier trained on fresh renders
    train_set: ImageSet         # the fresh renders it learnt from
    selection_set: ImageSet     # the rows that chose its epoch
    eval_set: ImageSet          # the scored rows; fresh extra rows flagged in rows["fresh"]
    probs: np.ndarray           # its probabilities on eval_set (N, C)
    min_auc: float
    min_mean_auc: float

    @property
    def mean_auc(self) -> float:
        return float(np.nanmean(self.table["AUC"]))

    def failing(self) -> list[str]:
        """Classes whose ceiling is below ``ceiling.min_auc`` (or could not be scored)."""
        auc = self.table["AUC"]
        return list(auc.index[~(auc >= self.min_auc)])

    def passes(self) -> bool:
        return not self.failing() and self.mean_auc >= self.min_mean_auc


def ceiling_config(cfg):
    """The ceiling's classifier: GAP only, trained from the first epoch on (no warm-up on a frozen
    random backbone), for ``ceiling.epochs`` epochs at ``ceiling.lr`` with batches of ``ceiling.batch_size``."""
    c = cfg.ceiling
    return component_variants(cfg, (GAP_ONLY,))[GAP_ONLY].replace({
        "train.warmup_epochs": 0, "train.finetune_epochs": c.epochs, "train.backbone_lr": c.lr,
        "train.head_lr": c.lr, "train.batch_size": c.batch_size})


def training_rows(cfg, cohort: Cohort, exclude_ids=(), seed: int | None = None) -> np.ndarray:
    """Class-balanced training-split rows: ``ceiling.per_class`` carrying each class (repeats of
    rare rows are rendered on new anatomy), drawn as the oracle's are."""
    from .diffusion.synthetic import oracle_rows

    seed = cfg.seed if seed is None else seed
    return oracle_rows(cfg.replace({"diffusion.oracle_per_class": cfg.ceiling.per_class}), cohort, exclude_ids, seed)


def fresh_evaluation_rows(cfg, cohort: Cohort, eval_set: ImageSet, min_positives: int,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows to add to ``eval_set`` so each class has ``min_positives`` positives: ``(index, keep)``.

    Rows come from the side of the split ``eval_set`` comes from (validation: not ``is_train``),
    frontal, carrying the class; rows not in ``eval_set`` first, then repeats. Rendering ``index``
    with :func:`build_image_set` draws a row's k-th occurrence on a new patient's anatomy; a row
    already in ``eval_set`` gets a leading copy (which would render the image ``eval_set`` already
    has) that ``keep`` drops, so every kept image is new. Classes are filled rarest first, counting
    the positives earlier additions brought.
    """
    frame = cohort.frame
    ids = set(eval_set.rows["ImageID"])
    in_eval = frame["ImageID"].isin(ids).to_numpy()
    side = cohort.is_train[in_eval].any() if in_eval.any() else False
    pool = (cohort.is_train == side) & frame["Projection"].isin(list(cfg.data.projections)).to_numpy()
    have = eval_set.Y.sum(0).astype(np.int64)
    rng = np.random.default_rng(seed + 7919)
    uses: dict[int, int] = {}
    for c in np.argsort(cohort.train_counts, kind="stable"):
        need = int(min_positives - have[c])
        if need <= 0:
            continue
        new = np.flatnonzero(pool & ~in_eval & (cohort.Y[:, c] == 1))
        new = new[[uses.get(int(i), 0) == 0 for i in new]] if len(new) else new
        picks = list(rng.permutation(new)[:need])
        if len(picks) < need:  # too few unseen rows: the class's rows again, on new anatomy
            every = np.flatnonzero(pool & (cohort.Y[:, c] == 1))
            if len(every):
                picks += list(rng.choice(every, size=need - len(picks)))
        for i in picks:
            uses[int(i)] = uses.get(int(i), 0) + 1
            have += cohort.Y[i].astype(np.int64)
    index, keep = [], []
    for i in sorted(uses):
        if in_eval[i]:
            index.append(i)
            keep.append(False)
        index += [i] * uses[i]
        keep += [True] * uses[i]
    return np.asarray(index, dtype=np.int64), np.asarray(keep, dtype=bool)


def evaluation_set(cfg, cohort: Cohort, eval_set: ImageSet, cache: ArtifactCache | None = None,
                   name: str = "ceiling-eval") -> ImageSet:
    """``eval_set`` plus fresh renders of rare classes (rows flagged ``fresh``), so that every class
    has at least ``ceiling.eval_min_positives`` positives (where the split has rows carrying it)."""
    index, keep = fresh_evaluation_rows(cfg, cohort, eval_set, cfg.ceiling.eval_min_positives, cfg.seed)
    base = take(eval_set, np.arange(len(eval_set)))
    base.rows["fresh"] = False
    if len(index) == 0:
        return base
    extra = take(build_image_set(cfg, cohort, name, cache, index=index), np.flatnonzero(keep))
    extra.rows["fresh"] = True
    return concat_sets(base, extra)


def _patient_split(rows: pd.DataFrame, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import GroupShuffleSplit

    split = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    fit, select = next(split.split(np.zeros(len(rows)), groups=rows["PatientID"].astype(str)))
    return np.sort(fit), np.sort(select)


def ceiling_table(Y: np.ndarray, P: np.ndarray, classes, groups, fresh: np.ndarray, train_positives,
                  min_positives: int, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """Per class: AUC with a bootstrap interval, evaluation positives (and how many are fresh
    renders), training positives, and a note where the positives are too few to trust."""
    rows = []
    for c, name in enumerate(classes):
        y = Y[:, c] == 1
        auc, lo, hi = bootstrap_auc(y, P[:, c], n_boot, seed + c)
        n = int(y.sum())
        note = ("no evaluation positives: not scored" if n == 0 else
                f"only {n} evaluation positives (< {min_positives}): a wide interval" if n < min_positives else "")
        rows.append({"class": name, "group": groups[c], "AUC": auc, "low": lo, "high": hi, "positives": n,
                     "fresh positives": int((y & fresh).sum()), "training positives": int(train_positives[c]),
                     "note": note})
    return pd.DataFrame(rows).set_index("class")


def learnability_ceiling(cfg, cohort: Cohort, eval_set: ImageSet, cache: ArtifactCache | None = None,
                         selection_set: ImageSet | None = None, exclude_ids=()) -> CeilingResult:
    """Train the ceiling classifier on fresh renders and score it per class on ``eval_set`` plus
    fresh rare-class rows from the same side of the split (see the module docstring).

    ``selection_set`` chooses the epoch (default: a patient-disjoint ``ceiling.selection_fraction``
    of the fresh renders); ``exclude_ids`` are ImageIDs the training rows must not use (e.g. the
    experiment's own training set).
    """
    if cfg.data.source != "phantom":
        raise ValueError("the learnability ceiling needs fresh renders: it exists for data.source = phantom only")
    cache = cache or ArtifactCache()
    c = cfg.ceiling
    renders = build_image_set(cfg, cohort, "ceiling", cache, index=training_rows(cfg, cohort, exclude_ids))
    if selection_set is None:
        fit, select = _patient_split(renders.rows, c.selection_fraction, cfg.seed)
        train_set, selection_set = take(renders, fit), take(renders, select)
    else:
        train_set = renders
    scored = evaluation_set(cfg, cohort, eval_set, cache)
    run = train_classifier(ceiling_config(cfg), train_set, selection_set, cohort.groups, cache=cache, name="ceiling")
    from .runtime import select_device

    P = predict(run.model, scored, run.mean, run.std, select_device(cfg.device))
    table = ceiling_table(scored.Y, P, train_set.classes, cohort.groups, scored.rows["fresh"].to_numpy(bool),
                          train_set.Y.sum(0), c.eval_min_positives, cfg.eval.bootstrap, cfg.seed)
    return CeilingResult(table, run, train_set, selection_set, scored, P, c.min_auc, c.min_mean_auc)
