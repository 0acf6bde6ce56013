"""Chapter 3 (channel-class attention): the module step by step, GAP-only against channel-class
attention, and whether the attention maps look at the lesions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import stages as S
from ..claims import effect_words, paper_effect
from ..tables import CCA, GAP_ONLY
from .common import interval_text, row_means, run, table


def needs(cfg) -> list:
    return [S.train_set(cfg), S.test_set(cfg), S.table(cfg, "components", seeds=[cfg.seed]), S.table(cfg, "cca")]


def setting(ch):
    cfg = ch.cfg
    cohort = ch.get(S.cohort(cfg))
    train_set, test_set = ch.get(S.train_set(cfg)), ch.get(S.test_set(cfg))
    text = (f"profile {cfg.profile}: {len(train_set)} training / {len(test_set)} test phantoms at "
            f"{train_set.size}px, backbone {cfg.model.backbone} (stage {cfg.model.feature_stage}), device {ch.device}")
    return cohort, train_set, test_set, text


def walkthrough(ch, train_set, test_set, n: int = 4):
    """A batch of test images through a freshly initialised model, equation by equation: the
    shapes (table) and two properties checked by hand (text)."""
    from ..data.datasets import XrayDataset, make_loader, normalisation
    from ..models import build_model

    cfg = ch.cfg
    model = build_model(cfg.replace({"model.label_gcn": False}), len(train_set.classes)).eval()
    mean, std = normalisation(train_set)
    x, _, _ = next(iter(make_loader(XrayDataset(test_set, mean, std), n, shuffle=False)))
    with torch.no_grad():
        X = model.backbone(x)                               # Eq. 7
        u = X.mean(dim=(2, 3))                              # Eq. 8
        g = model.head.gate.gate(X)                         # Eq. 9
        Xr, _ = model.head.gate(X)                          # Eq. 10
        M = model.head.attention.conv(Xr)                   # class response map
        v, a = model.head.attention(Xr)                     # Eq. 12-13
        out = model.head(X)                                 # Eq. 11, 14
    shapes = {"input I": x, "X = φ(I)  (Eq. 7)": X, "u  (Eq. 8)": u, "g  (Eq. 9)": g, "X_r  (Eq. 10)": Xr,
              "M (1x1 conv)": M, "a_c  (Eq. 12)": a, "v_c  (Eq. 13)": v, "s_gap  (Eq. 11)": out["s_gap"],
              "s_spatial": out["s_spatial"], "s_img  (Eq. 14)": out["s_img"]}
    table_ = pd.DataFrame({"shape": {k: tuple(t.shape) for k, t in shapes.items()}})
    ratio = (Xr / X.where(X.abs() > 1e-6, torch.ones_like(X)))[X.abs() > 1e-6]
    text = (f"attention maps sum to 1: {torch.allclose(a.flatten(2).sum(-1), torch.ones(a.shape[:2]))}; "
            f"X_r / X ranges over [{ratio.min():.3f}, {ratio.max():.3f}] (gate scale {cfg.model.gate_scale})")
    return table_, text


def comparison(ch, rows=(GAP_ONLY, CCA)):
    """The component runs (one seed): selection curves (figure) and test means (table)."""
    from ..plots import training_curves

    result = table(ch, "components", seeds=[ch.cfg.seed])
    runs = {r: run(ch, result, r, ch.cfg.seed) for r in rows}
    fig = training_curves({name: r.history for name, r in runs.items()}, metric="selection_mAP")
    return result, runs, fig, row_means(result).loc[list(rows)]


def gain_text(ch, means: pd.DataFrame, test_set) -> str:
    from .common import training_text, wrapped

    gain = means.loc[CCA] - means.loc[GAP_ONLY]
    return wrapped(
        f"Tail mAUC (the primary endpoint): channel-class attention {means.loc[CCA, 'mAUC tail']:.4f}, GAP only "
        f"{means.loc[GAP_ONLY, 'mAUC tail']:.4f} ({gain['mAUC tail']:+.4f}; one seed, so no interval here: the "
        f"ladder below repeats it over seeds, with intervals). Both trained: {training_text(ch.cfg)}.",
        f"Channel-class attention changes test mAP by {gain['mAP']:+.4f} (head {gain['mAP head']:+.4f}, "
        f"medium {gain['mAP medium']:+.4f}, tail {gain['mAP tail']:+.4f}) on this run ({ch.cfg.profile} profile, "
        f"one seed, {len(test_set)} test images).",
        "One seed on a small test set: the next chapters repeat runs over seeds and give intervals before calling "
        "a difference real.")


def localization(ch, model_run, test_set, cohort):
    """The attention maps of ``model_run`` on the test set scored against the true lesion masks:
    (probabilities, maps, per-pair scores, the summary by group, the per-class table)."""
    from ..localization import localization_scores, localization_summary
    from ..train import predict

    classes, groups = list(cohort.class_set.classes), cohort.groups
    P, maps = predict(model_run.model, test_set, model_run.mean, model_run.std, ch.device, with_attention=True)
    scores = localization_scores(maps, test_set, classes, groups)
    per_class = scores.groupby("class")[["mass", "chance mass", "hit", "chance hit"]].mean()
    per_class.insert(0, "group", [groups[classes.index(c)] for c in per_class.index])
    per_class["mass / chance"] = per_class["mass"] / per_class["chance mass"]
    return P, maps, scores, localization_summary(scores).round(3), \
        per_class.sort_values("mass / chance", ascending=False).round(3)


def attention_figure(P, maps, scores, test_set, cohort, per_group: int = 4):
    """The best-localised example of each class (four classes per group): map, true lesion."""
    from ..plots import attention_gallery

    classes, groups = list(cohort.class_set.classes), cohort.groups
    best = scores.sort_values("mass", ascending=False).drop_duplicates("class")
    picks = [(int(r["image"]), classes.index(r["class"])) for g in ("head", "medium", "tail")
             for _, r in best[best.group == g].head(per_group).iterrows()]
    return attention_gallery([test_set.images[n] / 255 for n, c in picks], [maps[n, c] for n, c in picks],
                             [test_set.masks(n)[c] for n, c in picks],
                             [f"{classes[c]} [{groups[c]}]\np={P[n, c]:.2f}" for n, c in picks])


# ----------------------------------------------------------------------------- the claim at 8 x 8, and with subtle findings

CCA_METRICS = ["mAUC tail", "mAP tail", "mAUC", "mAP"]


def cca_table(ch):
    """GAP only, + channel gate, + class-aware attention on finer feature maps, in the normal and
    the subtle-findings condition (test split, intervals over seeds and test label rows)."""
    from ..seedtables import results_store, seed_table

    result = table(ch, "cca")
    names = [r["name"] for r in result.rows]
    return result, seed_table(results_store(ch.cfg), "cca", CCA_METRICS, rows=names)


def cca_notes(result) -> tuple[str, str]:
    """How the ladder table's intervals and its steps' paired intervals were made (from the
    table's records): the line under the table and the line above the steps."""
    from .common import differences_note, intervals_note

    return (intervals_note(result.records),
            differences_note(result.records, "mAUC tail", "Each step against the one before it"))


def cca_steps(ch) -> tuple[pd.DataFrame, str]:
    """Each component against the one before it in each condition (paired), and what they say."""
    from ..seedtables import paired_differences, results_store
    from ..tables import GATE_ONLY, cca_ladders

    store = results_store(ch.cfg)
    rows = []
    for condition in cca_ladders(ch.cfg):
        ladder = [f"{condition}: {GAP_ONLY}", f"{condition}: {GATE_ONLY}", f"{condition}: {CCA}"]
        for prev, cur in zip(ladder, ladder[1:]):
            d = paired_differences(store, "cca", prev, "mAUC tail").loc[cur]
            rows.append({"condition": condition, "step": f"{prev.split(': ')[1]} → {cur.split(': ')[1]}",
                         "Δ tail mAUC": d.iloc[0], "low": d["low"], "high": d["high"], "sure": d["sure"]})
        d = paired_differences(store, "cca", ladder[0], "mAUC tail").loc[ladder[-1]]
        rows.append({"condition": condition, "step": f"{GAP_ONLY} → {CCA} (both parts)", "Δ tail mAUC": d.iloc[0],
                     "low": d["low"], "high": d["high"], "sure": d["sure"]})
    out = pd.DataFrame(rows).set_index(["condition", "step"])
    both = out.xs(f"{GAP_ONLY} → {CCA} (both parts)", level="step")
    effect = paper_effect("+ channel-class attention", "+ prompt diffusion")
    def word(r) -> str:
        return "a gain" if r["low"] > 0 else "a loss" if r["high"] < 0 else "not told apart from 0"

    def parts(c) -> str:
        g, a = out.loc[(c, f"{GAP_ONLY} → {GATE_ONLY}")], out.loc[(c, f"{GATE_ONLY} → {CCA}")]
        return (f" (the channel gate {interval_text(g)}, {word(g)}; "
                f"class-aware attention after it {interval_text(a)}, {word(a)})")

    text = "; ".join(f"{c}: channel-class attention on the tail, {r['Δ tail mAUC']:+.4f} [{r['low']:+.4f}, "
                     f"{r['high']:+.4f}]: " + effect_words(r, effect) + parts(c)
                     for c, r in both.iterrows())
    subtle = [(c, c.replace("subtle tail", "normal")) for c in both.index if "subtle tail" in c]
    for s, n in subtle:
        if n in both.index:
            more = both.loc[s, "Δ tail mAUC"] > both.loc[n, "Δ tail mAUC"]
            text += (f". The prediction 'larger for subtle findings' ({s} vs {n}): "
                     f"{both.loc[s, 'Δ tail mAUC']:+.4f} against {both.loc[n, 'Δ tail mAUC']:+.4f}, "
                     + ("larger, as predicted (point values; their difference has no interval here)" if more else
                        "not larger (point values; their difference has no interval here)"))
    return out.round(4), text + "."


def cca_localization(ch, result, cohort, max_pairs: int = 300) -> pd.DataFrame:
    """Where each model of the 8 × 8 experiment looks (first seed, normal condition): Grad-CAM of
    every model and the class attention a_c of channel-class attention, scored against the true
    lesion masks of the test images (mass inside, pointing game) beside their chance levels."""
    from ..localization import grad_cam_maps, pair_scores
    from ..tables import GATE_ONLY
    from ..train import predict
    from .common import run

    first = ch.cfg.seeds[0]
    ccfg = result.runs[(f"normal: {CCA}", first)].cfg
    test = ch.get(S.test_set(ccfg))
    if test.masks_packed is None:
        return pd.DataFrame()
    classes = list(cohort.class_set.classes)
    pairs = [(n, c) for n in range(len(test)) for c in np.flatnonzero(test.Y[n])
             if classes[c] != "normal" and test.masks(n)[c].any()][:max_pairs]
    imgs, cls = test.images[[n for n, _ in pairs]], [c for _, c in pairs]
    masks = np.stack([test.masks(n)[c] for n, c in pairs])
    out = {}
    for name in (GAP_ONLY, GATE_ONLY, CCA):
        r = run(ch, result, f"normal: {name}", first)
        out[f"{name}: Grad-CAM"] = pair_scores(grad_cam_maps(r.model, imgs, cls, r.mean, r.std, ch.device), masks).mean()
        if name == CCA:
            _, att = predict(r.model, test, r.mean, r.std, ch.device, with_attention=True)
            out[f"{name}: attention a_c"] = pair_scores(np.stack([att[n, c] for n, c in pairs]), masks).mean()
    return pd.DataFrame(out).T.round(3)


def localization_verdict(loc: pd.DataFrame) -> str:
    """The localization half of the claim (chapter 3): does the class attention a_c put more of its
    mass on the true lesions than GAP's Grad-CAM, and more than chance?"""
    att, gap = f"{CCA}: attention a_c", f"{GAP_ONLY}: Grad-CAM"
    if loc.empty or att not in loc.index or gap not in loc.index:
        return "No lesion masks here, so the localization half of the claim is not judged."
    a, g, chance = loc.loc[att, "mass"], loc.loc[gap, "mass"], loc.loc[att, "chance mass"]
    return (f"Mass on the true lesion (first seed, normal condition): class attention a_c {a:.3f}, GAP's "
            f"Grad-CAM {g:.3f}, chance {chance:.3f}: the attention maps "
            + ("point at the lesions more than GAP's Grad-CAM does, as the claim predicts." if a > g and a > chance else
               "do not point at the lesions more than GAP's Grad-CAM does, against the claim's prediction." if a <= g
               else "beat Grad-CAM but not chance.")
            + " (One seed, no interval: a description of these maps, not a test.)")


def grid_text(cfg) -> str:
    """The feature grids of this run (chapter 3): the tables' feature stage and the finer one of the
    attention experiment, each as timm's ``feature_info`` gives its stride at this image size."""
    from ..models.backbone import Backbone

    size, name = cfg.data.image_size, cfg.model.backbone

    def grid(stage: int) -> str:
        stride = Backbone(name, stage).reduction
        cells = -(-size // stride)
        label = "the last stage" if stage == -1 else f"stage {stage}"
        return f"{label} (stride {stride}): {cells} × {cells} cells"

    return (f"Feature grids at {size} px ({name}): the models here read {grid(cfg.model.feature_stage)}; the "
            f"finer experiment below reads {grid(cfg.tables.cca_feature_stage)}.")
