"""Chapter 1 (the data): the real label table, the long tail, the split, phantom radiographs."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import stages as S
from ..graph import Request
from .common import interval_method_text

PAPER_GROUPS = {"head": 13, "medium": 11, "tail": 6}   # Sec. 4.1 of the paper


def needs(cfg) -> list:
    reqs = [Request("label-table", cfg), S.cohort(cfg), S.train_set(cfg), S.selection_set(cfg), S.test_set(cfg)]
    if cfg.data.source == "phantom":
        reqs += [S.oracle(cfg), S.predictions(S.oracle(cfg), S.test_set(cfg))]
    return reqs


def table_report(ch) -> pd.DataFrame:
    """How the label table was parsed (rows read, dropped, malformed labels...)."""
    table = ch.get(Request("label-table", ch.cfg))
    return pd.Series(table.report, name="rows").to_frame()


def split_and_groups(cohort) -> tuple[str, pd.DataFrame]:
    """A sentence on the patient-level split and the group sizes beside the paper's."""
    frame = cohort.frame
    n = {s: int((cohort.split == s).sum()) for s in ("train", "selection", "test")}
    patients = {s: set(frame.PatientID[cohort.split == s]) for s in n}
    shared = (patients["train"] & patients["test"]) | (patients["selection"] & patients["test"]) | \
        (patients["train"] & patients["selection"])
    sizes = pd.Series(cohort.groups).value_counts().reindex(["head", "medium", "tail"]).fillna(0).astype(int)
    everyone = len(set().union(*patients.values()))
    share = {s: 100 * len(patients[s]) / max(everyone, 1) for s in n}
    text = (f"{n['train']} train, {n['selection']} selection and {n['test']} test images, from "
            f"{share['train']:.0f} % / {share['selection']:.0f} % / {share['test']:.0f} % of the patients; "
            f"patients in more than one split: {len(shared)}")
    return text, pd.DataFrame({"classes (ours)": sizes, "classes (paper, Sec. 4.1)": pd.Series(PAPER_GROUPS)})


def class_summary(cohort):
    return cohort.summary().style.format({"train_share_%": "{:.2f}"})


def long_tail_figure(cohort, cfg):
    from ..plots import long_tail_bars

    return long_tail_bars(cohort.summary(), cfg.data.head_threshold, cfg.data.tail_threshold)


def imbalance_text(cohort) -> str:
    s = cohort.summary()
    ratio = s.train.max() / max(s.train.min(), 1)
    return (f"imbalance: the most frequent class has {ratio:.0f}x the images of the rarest "
            f"({s.train.idxmax()}: {s.train.max()}, {s.train.idxmin()}: {s.train.min()})")


def cooccurrence_figure(cohort):
    from ..data.padchest import cooccurrence, strongest_pairs
    from ..plots import cooccurrence_chord

    Q = cooccurrence(cohort.Y[cohort.is_train])
    return cooccurrence_chord(Q, list(cohort.class_set.classes), cohort.groups, strongest_pairs(Q))


def tail_partners(cohort, top: int = 3) -> pd.DataFrame:
    """For each tail class, its most frequent partners and the share of its images that carry them
    (from Q = YᵀY, Eq. 15, over the paper's training side)."""
    from ..data.padchest import cooccurrence

    Q = cooccurrence(cohort.Y[cohort.is_train])
    classes = list(cohort.class_set.classes)
    rows = []
    for c, name in enumerate(classes):
        if cohort.groups[c] != "tail":
            continue
        partners = np.argsort(-np.where(np.arange(len(classes)) == c, -1, Q[c]))[:top]
        rows.append({"tail class": name, "train images": int(Q[c, c]),
                     **{f"partner {k + 1}": f"{classes[j]} ({Q[c, j] / Q[c, c]:.0%})" for k, j in enumerate(partners)}})
    return pd.DataFrame(rows).set_index("tail class")


def localization_table(cohort) -> pd.DataFrame:
    """Per class: sentences, right/left share, the three most frequent location tokens."""
    stats = cohort.localization_stats()
    rows = []
    for name in cohort.class_set.classes:
        st = stats[name]
        top = list(st["locations"].items())[:3]
        rows.append({"class": name, "sentences": st["n_sentences"],
                     "right / left": f"{st['side_fraction']['R']:.0%} / {st['side_fraction']['L']:.0%}",
                     "top locations": ", ".join(f"{k[4:]} {v:.0%}" for k, v in top)})
    return pd.DataFrame(rows).set_index("class")


def rendered_rows(ch, cohort) -> tuple[str, pd.DataFrame]:
    """Per class: positives on the training side, its frontal rows, and in each rendered split."""
    from ..data.datasets import split_rows

    cfg = ch.cfg
    idx = {s: split_rows(cfg, cohort, s) for s in ("train", "selection", "test")}
    frontal = cohort.frame.Projection.isin(list(cfg.data.projections)).to_numpy()
    sample = pd.DataFrame({
        "group": cohort.groups,
        "train side (all rows)": cohort.train_counts,
        "train split (frontal)": cohort.Y[(cohort.split == "train") & frontal].sum(0),
        **{f"{s} (rendered)": cohort.Y[i].sum(0) for s, i in idx.items()},
    }, index=list(cohort.class_set.classes))
    def least(s: str) -> str:
        col, asked = sample[f"{s} (rendered)"], int(cfg.data[f"min_{s}_positives"])
        short = col.index[col < asked].tolist()
        return (f"{s} {col.min()} (asked {asked}" + (f"; the {s} split has no more rows of {', '.join(short)})"
                                                     if short else ")"))

    def count(s: str, i) -> str:       # the test split renders rare label rows again (data.test_repeats)
        rows = len(np.unique(i))
        return f"{len(i)} {s} images" + (f" ({rows} label rows)" if rows != len(i) else "")

    text = ("rendered: " + ", ".join(count(s, i) for s, i in idx.items())
            + "; fewest positives of a class: " + ", ".join(least(s) for s in idx))
    return text, sample


def image_sets(ch) -> dict:
    return {s: ch.get(S.image_set(ch.cfg, s)) for s in ("train", "selection", "test")}


def image_sets_text(image_sets: dict) -> str:
    return ", ".join(f"{name} set {s.images.shape}" for name, s in image_sets.items()) + " (uint8, cached)"


def gallery_full_size(ch, cohort, image_set, canvas: int = 256):
    """One image per class, the least crowded one, re-rendered on a ``canvas``-px canvas with its
    lesion mask; returns (figure, {image index: class}) for the low-resolution gallery."""
    from ..data.datasets import phantom_renderer
    from ..plots import phantom_gallery

    classes = list(cohort.class_set.classes)
    renderer = phantom_renderer(ch.cfg.replace({"phantom.render_size": canvas}), cohort)
    picked, panels, masks, titles, captions = {}, [], [], [], []
    for c, name in enumerate(classes):
        candidates = [i for i in np.flatnonzero(image_set.Y[:, c]) if i not in picked]
        if not candidates:
            continue
        i = min(candidates, key=lambda k: image_set.Y[k].sum())
        picked[i] = c
        row = image_set.rows.iloc[i]
        present = [classes[k] for k in np.flatnonzero(image_set.Y[i])]
        img, m = renderer.render(row.render_id, present, row.sentences, row.labels)
        panels.append(img)
        masks.append(m[c])
        titles.append(f"{name} [{cohort.groups[c]}]")
        captions.append(", ".join(p for p in present if p != name)[:60] or "no other finding")
    return phantom_gallery(panels, masks, titles, captions), picked


def gallery_training_size(image_set, picked: dict, last: int = 12):
    """The rarest classes' picks at the training resolution with the stored masks."""
    from ..plots import phantom_gallery

    chosen = list(picked.items())[-last:]
    return phantom_gallery([image_set.images[i] / 255 for i, c in chosen], [image_set.masks(i)[c] for i, c in chosen],
                           [f"{image_set.classes[c]} ({image_set.size}px)" for i, c in chosen])


def prompt_examples(ch, cohort, image_set, n: int = 6) -> pd.DataFrame:
    """Prompts built from a few rows with a tail finding."""
    from ..data.prompts import prompt_for_row

    classes = list(cohort.class_set.classes)
    tail = [c for c, g in enumerate(cohort.groups) if g == "tail"]
    rows = [i for i in range(len(image_set)) if image_set.Y[i, tail].any()][:n]
    out = []
    for i in rows:
        present = [classes[c] for c in np.flatnonzero(image_set.Y[i])]
        out.append({"image": image_set.rows.ImageID.iloc[i], "classes": ", ".join(present),
                    "prompt": prompt_for_row(present, cohort.class_set, image_set.rows.sentences.iloc[i],
                                             image_set.rows.ImageID.iloc[i], seed=ch.cfg.seed)})
    return pd.DataFrame(out)


def renderer_speed(ch, cohort, n: int = 32) -> pd.DataFrame:
    """Renderer images/s at two canvas sizes against one ConvNeXtV2-atto training step (measured now)."""
    import timm

    from ..data.datasets import phantom_renderer, split_rows
    from ..data.padchest import multi_hot
    from ..data.phantom import downsample
    from ..runtime import images_per_second, training_throughput

    rows = cohort.frame.iloc[split_rows(ch.cfg, cohort, "train")[:n]]
    classes = list(cohort.class_set.classes)
    out = []
    for canvas, size in ((128, 64), (256, 128)):
        r = phantom_renderer(ch.cfg.replace({"phantom.render_size": canvas}), cohort)

        def render_batch(r=r, size=size):
            for _, row in rows.iterrows():
                present = [classes[c] for c in np.flatnonzero(multi_hot([row.labels], cohort.class_set)[0])]
                img, m = r.render(row.ImageID, present, row.sentences, row.labels)
                downsample(img, m, size)

        model = timm.create_model("convnextv2_atto", pretrained=False, in_chans=1, num_classes=len(classes))
        out.append({"image size": size, "render canvas": canvas,
                    "renderer img/s": images_per_second(render_batch, len(rows), repeats=1),
                    "trainer img/s (convnextv2_atto)": training_throughput(model, size, 32, ch.device)})
    table = pd.DataFrame(out).set_index("image size")
    table["renderer / trainer"] = table["renderer img/s"] / table["trainer img/s (convnextv2_atto)"]
    return table.round(1)


def learnability_ceiling(ch) -> tuple[str, pd.DataFrame | None]:
    """The learnability ceiling per class (:mod:`trcgl.ceiling`): the oracle, trained on fresh
    class-balanced renders, scored on the test split; a sentence and the per-class table."""
    from ..ceiling import ceiling_table, failing

    cfg = ch.cfg
    if cfg.data.source != "phantom":
        return "the learnability ceiling needs fresh renders: it is measured on phantoms only (data.source: phantom)", None
    cohort, test = ch.get(S.cohort(cfg)), ch.get(S.test_set(cfg))
    oracle_set = ch.get(S.image_set(cfg, "oracle"))
    P = ch.get(S.predictions(S.oracle(cfg), S.test_set(cfg)))
    table = ceiling_table(test.Y, P, test.rows["ImageID"].to_numpy(), list(cohort.class_set.classes), cohort.groups,
                          oracle_set.Y.sum(0), cfg.eval.bootstrap, cfg.seed, method=cfg.eval.interval)
    low = failing(table, cfg.ceiling.min_auc)
    mean = float(np.nanmean(table["AUC"]))
    text = (f"ceiling classifier: {len(oracle_set)} fresh class-balanced renders; test split: {len(test)} images of "
            f"{test.rows['ImageID'].nunique()} label rows. Mean ceiling AUC {mean:.3f} (chance 0.5; the fair-task "
            f"target {cfg.ceiling.min_mean_auc}); classes below {cfg.ceiling.min_auc}: "
            + (", ".join(f"{c} ({table.loc[c, 'AUC']:.2f})" for c in low) if low else "none")
            + f". Intervals: {interval_method_text(cfg)} of the test label rows.")
    return text, table.round(3)


def trainer_speed(ch, steps: int = 6, repeats: int = 3) -> pd.DataFrame:
    """The classifier trainer's optimiser steps (the tensor input pipeline, the weighted loss, AdamW
    with its schedule) against a bare timm loop on the same network, image size and batch
    (:func:`trcgl.train.trainer_benchmark`), measured now on this run's device; the reproduce page
    points here."""
    from ..train import trainer_benchmark

    rows = []
    for amp_cpu in (False, True):   # on a GPU both rows are bf16 (train.amp); on the CPU: fp32, then bf16 autocast
        cfg = ch.cfg.replace({"model.arch": "timm", "train.batch_size": 32, "train.amp_cpu": amp_cpu})
        r = trainer_benchmark(cfg, steps, repeats, ch.device)
        rows.append({"device": f"{r['device']} ({r['threads']} torch threads)", "model": r["model"],
                     "precision": r["precision"], "image size": r["image_size"], "batch": r["batch_size"],
                     "trainer img/s": r["trainer_images_per_s"], "bare timm loop img/s": r["bare_images_per_s"],
                     "trainer / bare": r["ratio"]})
    return pd.DataFrame(rows).drop_duplicates(subset=["precision"]).round(2)


def exercises(ch, cohort):
    """The chapter's exercises, with this run's group sizes, thresholds and the classes nearest to them."""
    from .common import exercises as items

    cfg = ch.cfg
    s = cohort.summary()
    sizes = s.group.value_counts().reindex(["head", "medium", "tail"]).fillna(0).astype(int)
    head, tail = int(cfg.data.head_threshold), int(cfg.data.tail_threshold)
    margin = pd.concat([(s.train / head).apply(np.log).abs(), (s.train / tail).apply(np.log).abs()], axis=1).min(axis=1)
    near = margin.sort_values().index[:2].tolist()

    def nearest(c) -> str:          # a class's count against the threshold it is nearest to
        n = int(s.loc[c, "train"])
        t = head if abs(np.log(n / head)) <= abs(np.log(n / tail)) else tail
        return f"*{c}* has {n:,}, {abs(n / t - 1):.0%} {'above' if n >= t else 'below'} {t:,}"

    return items(
        (f"Run this chapter with `-p class_set {'cxrlt2026' if cfg.data.class_set == 'paper' else 'paper'}` (this "
         f"run: `{cfg.data.class_set}`). How many classes fall in each group under the same thresholds? Which "
         "classes change group?",
         "The groups table near the top is computed, not typed: compare it with this run's. Support devices are "
         "frequent; *Hydropneumothorax* is rarer than any class of the paper's set."),
        (f"Change `split_seed` (this run: {cfg.data.split_seed}). Do the group sizes stay {sizes['head']} / "
         f"{sizes['medium']} / {sizes['tail']}? What does that tell you about thresholds that sit close to a "
         f"class's count (look at *{near[0]}* and *{near[1]}*)?",
         f"The nearest classes to a threshold here: {nearest(near[0])}; {nearest(near[1])}. A class changes group only "
         "if the split moves its count across the threshold; the class table gives every margin. Group results are "
         "only as stable as those margins."),
        (f"Set `difficulty` to {2 * float(cfg.phantom.difficulty):g} (this run: {cfg.phantom.difficulty:g}) and look "
         f"at the gallery. Which classes become hard to see by eye at the training resolution ({cfg.data.image_size} "
         "px)?",
         f"Thin structures (the azygos fissure, rib fractures, subcutaneous streaks) lose most at "
         f"{cfg.data.image_size} px: area averaging spreads a thin line over its neighbours. Compare the two "
         f"galleries, then rerun the learnability ceiling: which classes fall below `ceiling.min_auc` "
         f"({cfg.ceiling.min_auc:g})?"),
    )
