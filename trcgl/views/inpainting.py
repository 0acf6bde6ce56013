"""Chapter 7 (the inpainting paper): the normal DiT, Grad-CAM masks, the entanglement guard,
RePaint, PIL, the head-to-head with prompt diffusion, and the ablation with its control."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import paper
from .. import stages as S
from ..claims import PRIMARY
from ..inpaint.experiment import group_means, guard_effect, per_class_scores, with_deltas
from ..seedtables import paired_differences, results_store, seed_means, seed_table
from ..tables import (BOTH, COPIES_ROW, INPAINT, METHOD_ROW, NO_AUG, PROMPT, PROMPT_BUDGET, PROMPT_MATCHED, UNFILTERED,
                      UNGUARDED_MATCHED, tables_config)
from .common import benchmark_note, f1_rule_text, interval_text, table

PAPER_2_H2H = "Paper 2's columns: its Table 3, real CheXpert / MIMIC-CXR, ResNet-50, one run, macro F1 in %."
PAPER_2_ABLATION = "Paper 2's columns: the cross-entropy rows of its Table 4 (ResNet-50, macro F1 in %)."


def needs(cfg) -> list:
    return [S.normal_dit(cfg), S.inpainted_set(cfg), S.inpainted_set(cfg, guard="off"),
            S.table(cfg, "inpaint_h2h"), S.table(cfg, "inpaint_ablation")]


def setting(ch):
    cfg = ch.cfg
    tcfg = tables_config(cfg)
    cohort = ch.get(S.cohort(cfg))
    train_set, test_set = ch.get(S.train_set(tcfg)), ch.get(S.test_set(cfg))
    normals = ch.get(S.image_set(cfg, "normal"))
    text = (f"profile {cfg.profile}: {len(train_set)} training images at {train_set.size}px, {len(normals)} normal "
            f"images for the DiT, seeds {list(cfg.seeds)}, device {ch.device}; every number on the test split")
    return tcfg, cohort, train_set, test_set, normals, text


def dit_samples(ch, normals, n: int = 8):
    """The DiT's size and loss (text) and its samples beside real normal phantoms (figure)."""
    from ..inpaint.normal_dit import sample_normals
    from ..plots import sample_grid

    p, dit = ch.cfg.inpaint, ch.get(S.normal_dit(ch.cfg))
    hist = dit.history
    text = (f"DiT: {p.dit_layers} layers × {p.dit_heads * p.dit_head_dim} hidden, patch {p.dit_patch}, "
            f"{sum(x.numel() for x in dit.pipeline.transformer.parameters()) / 1e6:.2f} M parameters, "
            f"{len(hist)} epoch(s) on {dit.n_images} normal images; noise-prediction loss "
            f"{hist.loss.iloc[0]:.4f} (epoch 1) -> {hist.loss.iloc[-1]:.4f} (epoch {len(hist)}).")
    samples = sample_normals(dit, n, ch.cfg.diffusion.sampling_steps, seed=ch.cfg.seed)
    return text, sample_grid([list(normals.images[:n] / 255.0), list(samples / 255.0)],
                             ["real normal phantoms", "DiT samples (DDIM, no guidance)"])


def inpainted(ch):
    """(the inpainting with the configured guard, the one with the guard off)."""
    return ch.get(S.inpainted_set(ch.cfg)), ch.get(S.inpainted_set(ch.cfg, guard="off"))


def cam_table(res) -> tuple[pd.DataFrame | None, str]:
    """The CAM masks against the true lesion masks, per class, with chance levels; and a verdict."""
    if not len(res.cams):
        return None, "Real images carry no lesion masks: the CAM masks cannot be scored here."
    cams = res.cams.rename(columns={"lesion area": "precision by chance", "mask area": "recall by chance"})
    cols = ["IoU", "precision", "precision by chance", "recall", "recall by chance"]
    table_ = cams.groupby("class")[cols].mean()
    table_.insert(0, "masks", cams.groupby("class").size())
    m = cams[cols].mean()
    lift = m["precision"] / max(m["precision by chance"], 1e-9)
    text = (f"Over {len(cams)} (image, head class) masks: precision {m['precision']:.3f} (chance "
            f"{m['precision by chance']:.3f}, {lift:.1f}×), recall {m['recall']:.3f} (chance {m['recall by chance']:.3f}), "
            f"IoU {m['IoU']:.3f}; one head class's mask covers {m['recall by chance']:.0%} of the image on average "
            "(an image's masks together cover more: the gallery below gives their union). "
            + ("The masks point at the lesions clearly more often than chance" if lift > 2
               else "The masks are little better than chance")
            + (", but they are broad, so they erase much more than the lesion." if m["recall by chance"] > 0.25 else "."))
    return table_.sort_values("masks", ascending=False).round(3), text


def entanglement_figure(ch, cohort, train_set):
    """The entanglement of head classes with kept classes (the guard's priors; PadChest's when off)."""
    from ..inpaint.guard import guard_matrix
    from ..plots import entanglement_heatmap

    p = ch.cfg.inpaint
    source = p.guard if p.guard != "off" else "padchest"
    E = guard_matrix(ch.cfg.replace({"inpaint.guard": source}), cohort, train_set)
    classes, groups = list(cohort.class_set.classes), cohort.groups
    head = [i for i, (c, g) in enumerate(zip(classes, groups)) if g == "head" and c != "normal"]
    kept = [i for i, g in enumerate(groups) if g in p.keep_groups]
    return entanglement_heatmap(E[np.ix_(head, kept)], [classes[i] for i in head], [classes[i] for i in kept],
                                f"Entanglement of head classes (rows) with kept classes (priors: {source}); "
                                f"τ = {p.guard_threshold}")


def guard_table(res, off) -> pd.DataFrame:
    """What the guard prevents (images inpainted, findings erased, damage to kept lesions)."""
    return guard_effect(res, off)


def guard_text(ch, res, off) -> str:
    if not (len(res.damage) and len(off.damage)):
        return ""
    p = ch.cfg.inpaint
    d_on, d_off = res.damage["erased share"].mean(), off.damage["erased share"].mean()
    return (f"With the guard ({p.guard}, τ = {p.guard_threshold}) {res.report['kept by the guard']} of "
            f"{res.report['head findings']} head findings are kept and {res.report['guard kept the only head finding']} "
            f"images are left alone. The mean share of a kept lesion painted over is {d_on:.3f} with the guard "
            f"({len(res.damage)} kept lesions) and {d_off:.3f} without ({len(off.damage)}): point values over "
            f"different lesion sets, no interval; the guard {'lowers' if d_on < d_off else 'does not lower'} the "
            f"mean damage to the findings the labels still claim.")


def gallery(res, train_set, n: int = 6):
    """Six inpainted images from the smallest mask to the largest (figure) and what changed (text)."""
    from ..plots import inpaint_gallery

    classes = list(train_set.classes)
    area = res.masks.mean(axis=(1, 2))
    order = np.argsort(area, kind="stable")[np.linspace(0, len(area) - 1, min(n, len(area))).round().astype(int)]
    idx = res.originals[order]
    plan = res.plan.set_index("index")
    blank = np.zeros((train_set.size,) * 2, bool)
    has = train_set.masks_packed is not None
    head_masks = [train_set.masks(i)[plan.loc[i, "erase"]].any(0) if has else blank for i in idx]
    kept_masks = [train_set.masks(i)[plan.loc[i, "kept_findings"]].any(0) if has else blank for i in idx]
    titles = [f"erase {', '.join(classes[c] for c in plan.loc[i, 'erase'])}; keep "
              f"{', '.join(classes[c] for c in plan.loc[i, 'kept_findings'])}" for i in idx]
    fig = inpaint_gallery(train_set.images[idx] / 255.0, head_masks, res.masks[order], res.images.images[order] / 255.0,
                          kept_masks, titles)
    changed = res.images.images != train_set.images[res.originals]
    text = (f"{res.report['inpainted']} images inpainted; pixels changed outside the masks: "
            f"{int(changed[~res.masks].sum())}; mean mask area {res.masks.mean():.3f} of the image. Labels: "
            f"{res.report['erased']} head labels removed, all other labels kept.")
    return fig, text


def pil_schedule(tcfg, res):
    """The PIL curve (figure) and how many inpainted images each epoch of this recipe trains on."""
    from ..inpaint.pil import pil_count, pil_fraction
    from ..plots import pil_curve

    beta, n_epochs = tcfg.train.pil_beta, tcfg.train.warmup_epochs + tcfg.train.finetune_epochs
    epochs = list(range(max(n_epochs, 10) + 1))
    fig = pil_curve({b: (epochs, [pil_fraction(n, b) for n in epochs]) for b in sorted({0.25, beta, 1.0})})
    counts = [pil_count(len(res.images), n, beta) for n in range(1, n_epochs + 1)]
    return fig, f"β = {beta}: inpainted images per epoch {counts} of {len(res.images)}."


def head_to_head(ch, tcfg):
    result = table(ch, "inpaint_h2h")
    names = [r["name"] for r in result.rows]
    extra = {NO_AUG: 0, PROMPT: len(ch.get(S.synthetic_set(ch.cfg)).kept), INPAINT: len(ch.get(S.inpainted_set(ch.cfg)).images),
             PROMPT_BUDGET: len(ch.get(S.control_set(ch.cfg, UNFILTERED)))}
    extra[BOTH] = extra[PROMPT] + extra[INPAINT]
    extra[PROMPT_MATCHED] = extra[INPAINT]
    h2h = seed_table(results_store(ch.cfg), "inpaint_h2h", ["mAUC tail", "mAP", "macro-F1", "mAP head", "mAP medium",
                                                             "mAP tail"], rows=names)
    h2h.insert(0, "extra images", [extra.get(r, 0) for r in h2h.index])
    w_syn, w_inp = f"{ch.cfg.diffusion.synthetic_weight:g}", f"{ch.cfg.inpaint.weight:g}"
    recipe = {NO_AUG: ("—", "—"), PROMPT: (w_syn, "all at once"), PROMPT_BUDGET: (w_syn, "all at once"),
              INPAINT: (w_inp, "PIL"), PROMPT_MATCHED: (w_inp, "PIL"), BOTH: (f"{w_syn} / {w_inp}", "all at once / PIL")}
    h2h.insert(1, "loss weight", [recipe.get(r, ("—", "—"))[0] for r in h2h.index])
    h2h.insert(2, "schedule", [recipe.get(r, ("—", "—"))[1] for r in h2h.index])
    note = benchmark_note(tcfg, PAPER_2_H2H, result.records)
    return result, pd.concat([h2h, paper.inpaint_table(3).reindex(h2h.index)], axis=1), note


def _tail_labels_text(ch) -> str:
    """How many images of the two sets at one dose carry a tail label: the generated images are made
    for the tail, the inpainted ones keep whatever tail or medium findings their source rows had."""
    from ..stages.tables import extra_request
    from ..tablerow import Extra
    from ..tables import UNFILTERED_AT_INPAINTED

    tail = np.asarray(ch.get(S.cohort(ch.cfg)).groups) == "tail"
    gen = ch.get(extra_request(ch.cfg, Extra.of(UNFILTERED_AT_INPAINTED)))
    inp = ch.get(S.inpainted_set(ch.cfg)).images
    count = {name: int(np.asarray(s.Y)[:, tail].any(axis=1).sum()) for name, s in (("generated", gen), ("inpainted", inp))}
    return (f"The two sets differ in their labels too: {count['generated']} of the {len(gen)} generated images and "
            f"{count['inpainted']} of the {len(inp)} inpainted ones carry a tail label, so the difference mixes the kind "
            "of image with the number of tail positives each method makes.")


def head_to_head_differences(ch) -> tuple[pd.DataFrame, str]:
    store = results_store(ch.cfg)
    diffs = pd.concat({m: paired_differences(store, "inpaint_h2h", NO_AUG, m)
                       for m in ["mAUC tail", "mAP", "mAP head", "mAP tail"]}, axis=1)
    means = seed_means(store, "inpaint_h2h")
    d = paired_differences(store, "inpaint_h2h", NO_AUG, "mAP tail").loc[INPAINT]
    u = "mAUC tail"
    du_all = paired_differences(store, "inpaint_h2h", NO_AUG, u)
    du = {r: du_all.loc[r] for r in (PROMPT, PROMPT_BUDGET, PROMPT_MATCHED, INPAINT, BOTH) if r in du_all.index}
    t3 = paper.INPAINT_TABLE_3
    same = ""
    if PROMPT_MATCHED in means.index:       # the one pair of arms that differs in the images alone
        m = paired_differences(store, "inpaint_h2h", INPAINT, u).loc[PROMPT_MATCHED]
        side = ("the generated images give more" if m["low"] > 0 else "the inpainted images give more" if m["high"] < 0
                else "the interval contains 0: the two kinds of images are not told apart")
        same = (f"At one count, loss weight and schedule (the inpainted set's), generated − inpainted images: "
                f"{interval_text(m)} tail mAUC ({side}). {_tail_labels_text(ch)}\n")
    text = ("Tail mAUC (the primary endpoint) against no augmentation "
            f"({means.loc[NO_AUG, u]:.4f}): " + "; ".join(
                f"{r} {interval_text(x)} ({'sure' if x['sure'] else 'not sure at this number of seeds'})"
                for r, x in du.items()) + ".\n" + same +
            f"Tail mAP: no augmentation {means.loc[NO_AUG, 'mAP tail']:.4f}, prompt diffusion "
            f"{means.loc[PROMPT, 'mAP tail']:.4f}, inpainting {means.loc[INPAINT, 'mAP tail']:.4f}, both "
            f"{means.loc[BOTH, 'mAP tail']:.4f}; the best by tail mAUC is {means[u].idxmax()}, by tail mAP "
            f"{means['mAP tail'].idxmax()}. Inpainting vs no augmentation on tail mAP: {interval_text(d)} ({'sure' if d['sure'] else 'not sure at this number of seeds'}). The "
            f"inpainting paper reports +{t3['inpainting'][0] - t3['no augmentation'][0]:.2f} F1 points (CheXpert) for "
            f"inpainting and +{t3['prompt diffusion'][0] - t3['no augmentation'][0]:.2f} for caption-based generation.")
    return diffs.round(4), text


def per_class(ch, result, test_set, cohort):
    """Per-class AP (%) with Δ against no augmentation, the group means of F1 and AP, and a line on F1."""
    names = [r["name"] for r in result.rows]
    f1 = per_class_scores(result, names, test_set, cohort.groups, "F1")
    ap = per_class_scores(result, names, test_set, cohort.groups, "AP")
    scored = f1.drop(columns="group").dropna(how="all")
    zero = int((scored == 0).all(axis=1).sum())
    return (with_deltas(ap, NO_AUG).round(1), pd.concat({"F1 %": group_means(f1), "AP %": group_means(ap)}, axis=1).round(1),
            f"{zero} of the {len(scored)} classes with a test positive have F1 = 0 in every arm, with F1 "
            f"{f1_rule_text(tables_config(ch.cfg))}.")


def ablation(ch, tcfg):
    result = table(ch, "inpaint_ablation")
    names = [r["name"] for r in result.rows]
    ab = seed_table(results_store(ch.cfg), "inpaint_ablation", ["mAUC tail", "mAP", "macro-F1", "mAP head", "mAP tail"],
                    rows=names)
    note = benchmark_note(tcfg, PAPER_2_ABLATION, result.records)
    return result, pd.concat([ab, paper.inpaint_table(4).reindex(ab.index)], axis=1), note


def ablation_findings(ch) -> tuple[pd.DataFrame, str, pd.DataFrame, str]:
    """Differences against no augmentation, the PIL and guard effects with their paired intervals, the
    method against the unchanged copies, and the verdict on where the gain comes from."""
    store = results_store(ch.cfg)
    diffs = pd.concat({m: paired_differences(store, "inpaint_ablation", NO_AUG, m) for m in ("mAUC tail", "mAP")},
                      axis=1)

    def said(d) -> str:
        return interval_text(d) + ("" if np.isnan(d["low"]) else f" ({'sure' if d['sure'] else 'its interval contains 0'})")

    parts = []
    for metric in ("mAUC tail", "mAP"):            # the primary endpoint first
        pil = paired_differences(store, "inpaint_ablation", "+ guard, all at once", metric).loc[METHOD_ROW]
        guard = paired_differences(store, "inpaint_ablation", "no guard, + PIL", metric).loc[METHOD_ROW]
        parts.append(f"{metric}{' (the primary endpoint)' if metric == 'mAUC tail' else ''}: with the guard, PIL "
                     f"changes it by {said(pil)}; with PIL, the guard changes it by {said(guard)}; each paired over "
                     f"the same seeds and test resamples.")
    n_on, n_off = (len(ch.get(S.inpainted_set(ch.cfg, guard=g)).images) for g in (None, "off"))
    if n_on == n_off:
        parts.append(f"The guard leaves the dose alone here ({n_on} inpainted images with it and without).")
    else:
        matched = paired_differences(store, "inpaint_ablation", UNGUARDED_MATCHED, PRIMARY).loc[METHOD_ROW]
        parts.append(f"The guard also changes the dose: {n_on} inpainted images with it, {n_off} without, so the "
                     f"guard's effect above mixes which lesions are erased with how many images are added. Against "
                     f"{n_on} of the unguarded images (drawn at random), with PIL, the guard alone changes {PRIMARY} by "
                     f"{said(matched)}.")
    effects = " ".join(parts)
    copies = {k: paired_differences(store, "inpaint_ablation", COPIES_ROW, k).loc[[METHOD_ROW]]
              for k in ["mAUC tail", "mAP", "mAP head", "mAP tail"]}
    vs = pd.concat(copies, axis=1)
    d_auc, d_all, d_tail = (copies[k].iloc[0] for k in ("mAUC tail", "mAP", "mAP tail"))

    def verdict(d):
        if not d["sure"]:
            return "not distinguishable from the copies"
        return "better than the copies" if d.iloc[0] > 0 else "worse than the copies"

    helped = any(d["sure"] and d.iloc[0] > 0 for d in (d_auc, d_all, d_tail))
    text = (f"The method against the unchanged copies: tail mAUC (the primary endpoint) {interval_text(d_auc)} "
            f"({verdict(d_auc)}), mAP {interval_text(d_all)} ({verdict(d_all)}), tail mAP "
            f"{interval_text(d_tail)} ({verdict(d_tail)}). "
            + ("The erasing itself adds something beyond seeing these images again." if helped else
               "So on this benchmark the gain over no augmentation comes from seeing these images again, not from "
               "erasing their head lesions."))
    return diffs.round(4), effects, vs.round(4), text


def exercises(ch):
    """The chapter's exercises, with this run's guard, PIL β, epochs and CAM threshold."""
    from ..inpaint.pil import pil_fraction
    from .common import exercises as items

    cfg, tcfg = ch.cfg, tables_config(ch.cfg)
    epochs = int(tcfg.train.warmup_epochs) + int(tcfg.train.finetune_epochs)
    others = [g for g in ("off", "masks", "padchest") if g != cfg.inpaint.guard]
    thr = float(cfg.inpaint.cam_threshold)
    higher = round(min(thr + 0.3, 0.95), 2)
    low, high = 0.05, 5.0
    return items(
        (f"This run's guard is `{cfg.inpaint.guard}`. Run the chapter with `-p guard {others[0]}` and with `-p guard "
         f"{others[1]}`. How does the share of kept lesions painted over change, and does the tail mAUC follow?",
         "The `masks` guard knows the true average lesion position of each class on these phantoms, so its "
         "entanglement scores are sharper (compare its heatmap with the PadChest one); the inpainted set and "
         "therefore the classifier runs change, while the cached DiT is reused."),
        (f"This run uses β = {cfg.train.pil_beta:g}. Set `-p pil_beta {low:g}` (few inpainted images until late) "
         f"and `-p pil_beta {high:g}` (almost all of them from the first epoch). Which end reproduces the \"all at "
         "once\" row of the ablation?",
         f"1 − e^(−{high:g}) ≈ {pil_fraction(1, high):.3f}, so β = {high:g} is all at once up to rounding; with "
         f"β = {low:g} the share in the first epoch is {pil_fraction(1, low):.1%}, and in the last of this run's "
         f"{epochs} training epochs {pil_fraction(epochs, low):.0%} of the inpainted set."),
        (f"Raise `-p cam_threshold {higher:g}` (this run: {thr:g}). The masks shrink: what happens to precision, to "
         "recall and to the head labels that are removed although part of their lesion is still visible?",
         "A label removed while part of its lesion remains is label noise of a new kind (a false negative made on "
         "purpose). Compare recall in section 2 with the head-class AP in section 6."),
    )
