"""Chapter 5 (main results): Tables 1-2 with intervals over seeds, paired differences, Fig. 4 (where
the models look) and Fig. 5 (multi-label predictions); every number from the test split."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from .. import paper
from ..claims import PRIMARY, strongest_other      # PRIMARY: the primary endpoint, every verdict leads with it
from .. import stages as S
from ..seedtables import paired_differences, results_store, seed_means, seed_summary, seed_table, with_paper
from ..tables import OURS, OURS_ROWS, table1_pair, table1_peers, tables_config
from . import common
from .common import benchmark_note, run, table


def needs(cfg) -> list:
    heads = [S.table(cfg, "controls_heads")] if "controls" in cfg.tables.stage2 else []
    return [S.table(cfg, "table1"), S.table(cfg, "controls"), *heads, S.table(cfg, "dose")]


def setting(ch):
    cfg = ch.cfg
    tcfg = tables_config(cfg)
    cohort = ch.get(S.cohort(cfg))
    train_set, test_set = ch.get(S.train_set(tcfg)), ch.get(S.test_set(cfg))
    synthetic = ch.get(S.synthetic_set(cfg)).kept
    text = (f"profile {cfg.profile}: table runs on {len(train_set)} training images (+ {len(synthetic)} synthetic, "
            f"weight {cfg.diffusion.synthetic_weight}), best epoch on {cfg.data.n_selection} selection images, scored "
            f"on {len(test_set)} test images at {train_set.size}px; {tcfg.train.warmup_epochs} + "
            f"{tcfg.train.finetune_epochs} epochs (Tables 1-2"
            + (f"; {', '.join(t for t in cfg.tables.stage2 if t in ('controls', 'dose'))} add the paper's stage 2: "
               "their lines say how" if {"controls", "dose"} & set(cfg.tables.stage2) else "")
            + f"); seeds {list(cfg.seeds)}; device {ch.device}")
    return tcfg, cohort, test_set, text


def table_1(ch, tcfg):
    """Table 1 beside the paper's, the line saying what ours is measured on, and the result."""
    result = table(ch, "table1")
    store = results_store(ch.cfg)
    names = [r["name"] for r in result.rows]
    notes = {r["name"]: r["unavailable"] for r in result.rows if r["unavailable"]}
    t1 = seed_table(store, "table1", [PRIMARY, "mAP", "mAUC", "macro-F1"], rows=names, notes=notes)
    t1.insert(0, "model here", pd.Series({r["name"]: r["meta"].get("model here", "") for r in result.rows}))
    return result, with_paper(t1, paper.table(1)), benchmark_note(tcfg, records=result.records)


def endpoint_bars(ch, result):
    """Table 1's rows on the primary endpoint (tail mAUC) and on the paper's headline metric (mAP)."""
    import matplotlib.pyplot as plt

    from ..plots import seed_bars

    rows = [r["name"] for r in result.rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(rows) + 1.2), sharey=True)
    summary = seed_summary(results_store(ch.cfg), "table1")
    for ax, metric in zip(axes, (PRIMARY, "mAP")):
        seed_bars(summary, metric, rows=rows, ax=ax)
    return fig


def _ours(means) -> list[str]:
    """Table 1's TRCGL-Net rows in this run (the cut one, and the whole-network one where it exists)."""
    return [r for r in OURS_ROWS if r in means.index]


def _strongest(means) -> str:
    """The baseline with the highest tail mAUC (the primary endpoint), TRCGL-Net's rows left out."""
    return strongest_other(means, PRIMARY, OURS_ROWS)


def differences(ch) -> pd.DataFrame:
    """Tail mAUC (the primary endpoint), then mAP: differences of every row to the ConvNeXt baseline
    and to the strongest baseline, paired."""
    store = results_store(ch.cfg)
    strongest = _strongest(seed_means(store, "table1"))
    return pd.concat({f"{m}, vs {ref}": paired_differences(store, "table1", ref, m)
                      for m in (PRIMARY, "mAP") for ref in dict.fromkeys(("ConvNeXt", strongest))}, axis=1).round(4)


def differences_note(ch, result) -> str:
    """The sentence above :func:`differences`: what is compared and how its intervals were made."""
    return common.differences_note(result.records, (PRIMARY, "mAP"), "Differences to the ConvNeXt baseline and to "
                                   "the strongest baseline by tail mAUC, at any feature depth (a row at another depth "
                                   "than its reference differs in depth too: the \"model here\" column says which)")


def _convnext_pairs(rows) -> list[tuple[str, str]]:
    """TRCGL-Net against the ConvNeXt baseline at one feature depth: the cut pair, and the
    whole-network pair of :func:`~trcgl.tables.table1_pair` where the run has it (chapter 5's Table 1
    and Table 2 readings)."""
    return list(dict.fromkeys([(OURS, "ConvNeXt"), table1_pair("ConvNeXt", list(rows))]))


def _rank_words(store, means, metric: str) -> tuple[str, str]:
    """Each TRCGL-Net row of Table 1 on ``metric`` among the baselines at its own feature depth
    (:func:`~trcgl.tables.table1_peers`): its rank there and the baselines it is not told apart from
    (the paired interval of the difference contains 0); and the verdict in a clause."""
    parts, verdicts = [], []
    for ours in _ours(means):
        peers = [r for r in table1_peers(ours, means.index) if pd.notna(means.loc[r, metric])]
        rank = 1 + sum(means.loc[r, metric] > means.loc[ours, metric] for r in peers)
        d = paired_differences(store, "table1", ours, metric)
        tied = [r for r in peers if r in d.index and d.loc[r, "low"] <= 0 <= d.loc[r, "high"]]
        parts.append(f"{ours} ranks {rank} of {len(peers) + 1} among the rows at its depth ({', '.join(peers)})"
                     + (f", not told apart from {', '.join(tied)} (paired intervals containing 0)" if tied else
                        ", told apart from each of them"))
        if rank > 1:
            best = max(peers, key=lambda r: means.loc[r, metric])
            verdicts.append(f"{ours} is not first at its depth ({best} is)")
        else:
            verdicts.append(f"{ours} is first at its depth" + (f" but not told apart from {', '.join(tied)}" if tied
                                                                else ", told apart from every baseline there"))
    return "; ".join(parts), "; ".join(verdicts)


def ranking_text(ch, result) -> str:
    """Chapter 5's reading of Table 1: on tail mAUC first, each TRCGL-Net row's rank among the
    baselines at its feature depth and the baselines it is not told apart from, its difference from
    the ConvNeXt baseline at the same depth; then the same on mAP, beside the paper's order."""
    store = results_store(ch.cfg)
    means = seed_means(store, "table1")
    strongest = _strongest(means)
    notes = {r["name"]: r["unavailable"] for r in result.rows if r["unavailable"]}
    pairs = _convnext_pairs(means.index)

    def against(metric):
        return "; ".join(f"{a} − {b}: {common.interval_text(paired_differences(store, 'table1', b, metric).loc[a])}"
                         for a, b in pairs)

    paper_order = paper.table(1)["mAP (paper)"].sort_values(ascending=False)
    tail_ranks, tail_verdict = _rank_words(store, means, PRIMARY)
    map_ranks, map_verdict = _rank_words(store, means, "mAP")
    text = (f"Tail mAUC (the primary endpoint), highest first: "
            f"{', '.join(means[PRIMARY].sort_values(ascending=False).index)}. {tail_ranks}. Against the ConvNeXt "
            f"baseline at the same depth: {against(PRIMARY)}. So on the primary endpoint: {tail_verdict}."
            f"\nmAP, the paper's headline metric, highest first: {', '.join(means['mAP'].sort_values(ascending=False).index)}"
            f" (the paper: {', '.join(paper_order.index)}). {map_ranks}. Against the ConvNeXt baseline at the same "
            f"depth: {against('mAP')}. So on mAP: {map_verdict}."
            f"\nThe strongest baseline here by tail mAUC, at any depth, is {strongest} "
            f"({means.loc[strongest, PRIMARY]:.4f} tail mAUC, {means.loc[strongest, 'mAP']:.4f} mAP).")
    if notes:
        text += "\nRows without numbers: " + "; ".join(f"{k}: {v}" for k, v in notes.items()) + "."
    return text


def pretraining(ch, tcfg):
    """Each Table 1 backbone's pretraining curve (selection mAP on the head classes per epoch) and a
    line per backbone: its best epoch, and whether that is the budget's last (still improving, so
    the rows that read it compare pretraining budgets as well as methods)."""
    from ..plots import training_curves
    from ..tables import table_rows

    runs = {}
    for row in table_rows(tcfg, "table1"):
        if row.cfg is not None and S.uses_pretraining(row.cfg):
            runs.setdefault(row.cfg.model.backbone, S.pretrain(row.cfg))
    if not runs:
        return None, "No row of Table 1 starts from a backbone pretrained here."
    done = {name: ch.get(req) for name, req in runs.items()}
    lines = []
    for name, p in done.items():
        best, last, most = p["best epoch"], p["epochs"], p["most epochs"]
        if p["patience"] and last < most:
            k = p["patience"]
            state = (f"stopped when the selection score had not improved for {k} epoch{'s' if k != 1 else ''} after the "
                     "learning rate was divided by 10: trained until it stopped improving")
        else:
            state = ("one epoch only: no curve to judge" if last == 1 else
                     "still improving at the end of its budget (pretrain.epochs)" if best == last else
                     f"no better epoch in the {last - best} after it")
        lines.append(f"{name}: best epoch {best} of {last} (selection head mAP {p['selection head mAP']:.3f}); {state}")
    fig = training_curves({name: p["history"] for name, p in done.items()})
    return fig, "Pretraining, per backbone:\n" + "\n".join(lines)


def table_2(ch, tcfg, result):
    names = [r["name"] for r in result.rows]
    notes = {r["name"]: r["unavailable"] for r in result.rows if r["unavailable"]}
    t2 = seed_table(results_store(ch.cfg), "table1", ["mAP head", "mAP medium", "mAP tail", "mAUC head",
                                                       "mAUC medium", "mAUC tail"], rows=names, notes=notes)
    return with_paper(t2, paper.table(2)), benchmark_note(tcfg, records=result.records)


def tail_text(ch) -> tuple[str, pd.DataFrame]:
    """Table 2's reading, tail mAUC (the primary endpoint) first: the highest and lowest row, the
    head-tail gap of TRCGL-Net and ConvNeXt beside the paper's, and TRCGL-Net against ConvNeXt at
    one feature depth; then tail mAP likewise. The differences table: tail mAUC and tail mAP of every
    row against the ConvNeXt baseline, paired."""
    store = results_store(ch.cfg)
    means = seed_means(store, "table1")
    pairs = _convnext_pairs(means.index)
    t2, c = paper.TABLE_2, list(paper.COLUMNS_2)
    parts = []
    for metric in (PRIMARY, "mAP tail"):
        head = metric.replace("tail", "head")
        order = means[metric].sort_values(ascending=False)
        gap = means[head] - means[metric]
        paper_gap = {r: t2[r][c.index(head)] - t2[r][c.index(metric)] for r in (OURS, "ConvNeXt")}
        parts.append(
            f"{metric}{' (the primary endpoint)' if metric == PRIMARY else ''} is highest for {order.index[0]} "
            f"({order.iloc[0]:.4f}) and lowest for {order.index[-1]} ({order.iloc[-1]:.4f}). The head−tail gap "
            f"({head} − {metric}) is " + ", ".join(f"{gap.loc[r]:+.4f} for {r}" for r in dict.fromkeys(sum(pairs, ())))
            + f" (the paper: {paper_gap[OURS]:+.4f} for TRCGL-Net, {paper_gap['ConvNeXt']:+.4f} for ConvNeXt). "
            "TRCGL-Net against ConvNeXt at one feature depth: " + "; ".join(
                f"{a} − {b} {common.interval_text(paired_differences(store, 'table1', b, metric).loc[a])}"
                for a, b in pairs)
            + f" (the paper: {t2[OURS][c.index(metric)] - t2['ConvNeXt'][c.index(metric)]:+.4f}).")
    diffs = pd.concat({m: paired_differences(store, "table1", "ConvNeXt", m) for m in (PRIMARY, "mAP tail")}, axis=1)
    return "\n".join(parts), diffs.round(4)


def figure_4(ch, result, test_set, cohort, n_pairs: int = 200):
    """Fig. 4: true lesion, TRCGL-Net's class attention a_c, Grad-CAM of TRCGL-Net and of ConvNeXt
    (first seed), and over many (image, class) pairs the mass inside the lesion and the pointing
    game beside their chance levels. None on real images (no masks)."""
    from ..localization import grad_cam_maps, pair_scores
    from ..plots import cam_gallery
    from ..train import predict

    if test_set.masks_packed is None:
        return None, None, "real images have no lesion masks: Fig. 4 needs the phantom source"
    classes, groups = list(cohort.class_set.classes), cohort.groups
    first = ch.cfg.seeds[0]
    ours, base = run(ch, result, "Ours", first), run(ch, result, "ConvNeXt", first)
    pairs = [(n, c) for n in range(len(test_set)) for c in np.flatnonzero(test_set.Y[n])
             if classes[c] != "normal" and test_set.masks(n)[c].any()][:n_pairs]
    imgs = test_set.images[[n for n, _ in pairs]]
    cls = [c for _, c in pairs]
    masks = np.stack([test_set.masks(n)[c] for n, c in pairs])
    _, att = predict(ours.model, test_set, ours.mean, ours.std, ch.device, with_attention=True)
    maps = {"TRCGL-Net attention a_c": np.stack([att[n, c] for n, c in pairs]),
            "TRCGL-Net Grad-CAM": grad_cam_maps(ours.model, imgs, cls, ours.mean, ours.std, ch.device),
            "ConvNeXt Grad-CAM": grad_cam_maps(base.model, imgs, cls, base.mean, base.std, ch.device)}
    loc = pd.DataFrame({name: pair_scores(m, masks).mean() for name, m in maps.items()}).T
    picks, seen = [], set()
    for k, (_, c) in enumerate(pairs):          # one example per class, up to six classes, tail first
        if c not in seen:
            seen.add(c)
            picks.append(k)
    picks = sorted(picks, key=lambda k: {"tail": 0, "medium": 1, "head": 2}[groups[cls[k]]])[:6]
    fig = cam_gallery([imgs[k] / 255 for k in picks], [masks[k] for k in picks],
                      {name: [m[k] for k in picks] for name, m in maps.items()},
                      [f"{classes[cls[k]]} ({groups[cls[k]]})" for k in picks])
    best = loc["mass"].idxmax()
    text = (f"{len(pairs)} (image, class) pairs with a lesion mask; seed {first}\nThe map with the most mass inside "
            f"true lesions is {best} ({loc.loc[best, 'mass']:.3f}, chance {loc.loc[best, 'chance mass']:.3f}).")
    return fig, loc.round(3), text


def figure_5(ch, result, test_set, cohort, n: int = 4):
    """Fig. 5: test images with several findings and TRCGL-Net's most confident classes."""
    from ..plots import prediction_bars

    probs = result.probs[("Ours", ch.cfg.seeds[0])]
    multi = np.flatnonzero(test_set.Y.sum(1) >= 3)[:n]
    if len(multi) < n:
        multi = np.argsort(-test_set.Y.sum(1), kind="stable")[:n]
    fig = prediction_bars(test_set.images[multi] / 255, probs[multi], test_set.Y[multi], list(cohort.class_set.classes))
    hits = [len(set(np.argsort(-probs[i])[: int(test_set.Y[i].sum())]) & set(np.flatnonzero(test_set.Y[i])))
            for i in multi]
    text = ("true labels among the top-k predictions (k = number of true labels): "
            + ", ".join(f"{h}/{int(test_set.Y[i].sum())}" for h, i in zip(hits, multi)))
    return fig, text


# ----------------------------------------------------------------------------- the synthetic claim against its controls

CONTROL_METRICS = ["mAUC tail", "mAP tail", "mAUC", "mAP"]


def controls_table(ch):
    """The controls table: every arm on the same real rows and seeds, intervals resampling seeds
    and test label rows, the chance level in the last row."""
    result = table(ch, "controls")
    names = [r["name"] for r in result.rows]
    notes = {r["name"]: r["unavailable"] for r in result.rows if r["unavailable"]}
    t = seed_table(results_store(ch.cfg), "controls", CONTROL_METRICS, rows=names, notes=notes)
    return result, t


def controls_differences(ch, result) -> pd.DataFrame:
    """Each arm minus the arm without extra images (paired: same seeds, same test resamples)."""
    from ..tables import BASELINE

    store = results_store(ch.cfg)
    return pd.concat({m: paired_differences(store, "controls", BASELINE, m) for m in ("mAUC tail", "mAP tail")},
                     axis=1).round(4)


def controls_setup(ch) -> str:
    """The synthetic budget of the controls, from the run: the multiple (or count) per tail class,
    each class's count, and how many the filter kept."""
    cfg = ch.cfg
    res = ch.get(S.synthetic_set(cfg))
    report = res.report
    counts = ", ".join(f"{c} {int(r.generated)}" for c, r in report.iterrows())
    rule = common.budget_rule_text(cfg)
    kept = int(report["kept"].sum())
    total = int(report["generated"].sum())
    ccfg = tables_config(cfg, "controls")
    return common.wrapped(
        f"The synthetic budget: {rule}, asked of the generator before any filter and the same for every arm "
        f"({counts}; {total} images), each at loss weight {cfg.diffusion.synthetic_weight:g}. The filter kept "
        f"{kept} of the {total} ({kept / max(total, 1):.0%}); the ideal generator at the filter's count renders "
        f"exactly the kept label sets. Every arm is trained as: {common.training_text(ccfg)}.")


def controls_by_stage(ch):
    """Where the controls fine-tune (``tables.stage2``): each arm's paired difference from no extra
    images after stage 1 alone (heads on the frozen backbone: the runs stage 2 starts from) and
    after stage 2, and a sentence on what fine-tuning changed for the positive control (None, ""
    where the controls train the heads only)."""
    from ..tables import BASELINE, IDEAL_ROW

    if "controls" not in ch.cfg.tables.stage2:
        return None, ""
    table(ch, "controls_heads")
    store = results_store(ch.cfg)
    parts = {name: paired_differences(store, t, BASELINE, PRIMARY)
             for name, t in (("stage 1 (heads only)", "controls_heads"), ("after stage 2", "controls"))}
    shown = pd.DataFrame({name: [common.interval_text(d.loc[r]) for r in d.index] for name, d in parts.items()},
                         index=next(iter(parts.values())).index)
    text = ""
    if IDEAL_ROW in shown.index:
        (a, da), (b, db) = parts.items()
        text = common.wrapped(
            f"The positive control's gain in {PRIMARY}: {a} {common.interval_text(da.loc[IDEAL_ROW])}; {b} "
            f"{common.interval_text(db.loc[IDEAL_ROW])} (each paired against no extra images trained the same way).")
    return shown.rename_axis(f"Δ{PRIMARY} vs {BASELINE}"), text


def controls_verdict(ch, result, test_set, cohort) -> str:
    """What the positive control says about the benchmark's power, what the negative control (and
    the wrong-label control) says about its honesty, what the lesions add (ideal − negative), what
    the extra images alone and the unshown tail labels do (the bare control, negative − bare), and
    what fraction of the ideal gain the method reaches, unfiltered and
    filtered (with their intervals)."""
    from ..seedtables import ratio_interval
    from ..tables import (BARE_ROW, BASELINE, IDEAL_KEPT_ROW, IDEAL_ROW, METHOD, NULL_ROW, OVERSAMPLING,
                          RETRIEVED_ROW, SHUFFLED_ROW, UNFILTERED_ROW)

    store = results_store(ch.cfg)

    @functools.cache
    def against(reference: str) -> pd.DataFrame:
        """Every arm minus ``reference`` on the primary endpoint (paired), read once per reference."""
        return paired_differences(store, "controls", reference, PRIMARY)

    d = against(BASELINE)
    lines = []
    span = common.interval_text

    if IDEAL_ROW in d.index:
        ideal = d.loc[IDEAL_ROW]
        lines.append(f"Positive control: the ideal generator at the budget changes {PRIMARY} by {span(ideal)} — "
                     + ("the benchmark can detect what extra tail images of the right kind add."
                        if ideal["low"] > 0 else
                        "its interval is not above 0: at this scale the benchmark cannot detect even a perfect "
                        "generator, so no verdict on the method below is possible."))
    if NULL_ROW in d.index:
        neg = d.loc[NULL_ROW]
        lines.append(f"Negative control: the ideal generator's images with the tail lesions left out (labels, "
                     f"anatomy, count and weight unchanged) change {PRIMARY} by {span(neg)} — "
                     + ("ABOVE 0: extra images help even when they show nothing of their labels, so a gain of the "
                        "method may not come from what its images show." if neg["low"] > 0 else
                        "below 0, worse than no extra images; not above 0, as a negative control must be."
                        if neg["high"] < 0 else
                        "its interval covers 0: extra images that show nothing of their labels add nothing, as a "
                        "negative control must."))
        if IDEAL_ROW in d.index:
            lesions = against(NULL_ROW).loc[IDEAL_ROW]
            lines.append(f"The same images with the lesions drawn (the ideal generator) differ from them by "
                         f"{span(lesions)}: "
                         + ("what helps is what the images show, not their number or their labels." if lesions["low"] > 0
                            else "the lesions themselves are not told apart from their absence at this scale."))
    if BARE_ROW in d.index and NULL_ROW in d.index:
        bare, unshown = d.loc[BARE_ROW], against(BARE_ROW).loc[NULL_ROW]
        lines.append(f"Bare control: the same lesion-free images with their tail labels removed too (extra images "
                     f"that show and claim nothing of the tail) change {PRIMARY} by {span(bare)} — "
                     + ("these images help the tail even so." if bare["low"] > 0 else
                        "these images harm the tail even so." if bare["high"] < 0 else
                        "not told apart from no extra images.")
                     + f" The tail labels on those images (negative − bare control) change it by {span(unshown)}: "
                     + ("tail labels on images that do not show them are label noise, and the tail pays for it."
                        if unshown["high"] < 0 else
                        "tail labels on images that do not show them help, as if more positives alone did."
                        if unshown["low"] > 0 else
                        "not told apart from the same images without them."))
        if IDEAL_ROW in d.index:
            shown = against(BARE_ROW).loc[IDEAL_ROW]
            lines.append(f"The ideal generator against the bare control: {span(shown)} — what as many extra images "
                         "add when they are tail positives that show their lesion, over images that show and claim "
                         "nothing of the tail.")
    if SHUFFLED_ROW in d.index:
        wrong = d.loc[SHUFFLED_ROW]
        lines.append(f"Wrong-label control: the generated images labelled as another tail class change {PRIMARY} by "
                     f"{span(wrong)} — "
                     + ("below 0: a generator that draws the wrong finding harms the tail, and the benchmark sees it."
                        if wrong["high"] < 0 else
                        "ABOVE 0: images labelled as the wrong tail class help, so a gain here does not need the "
                        "right finding." if wrong["low"] > 0 else
                        "its interval covers 0: the benchmark does not see wrong findings harm the tail at this "
                        "scale."))
    if IDEAL_ROW in d.index and OVERSAMPLING in d.index:
        over = against(OVERSAMPLING).loc[IDEAL_ROW]
        lines.append(f"Oversampling the real tail rows to the same budget and weight changes {PRIMARY} by "
                     f"{span(d.loc[OVERSAMPLING])}; the ideal generator differs from it by {span(over)}: "
                     + ("new images of the right kind add more than seeing the real tail rows more often."
                        if over["low"] > 0 else
                        "the ideal generator's gain is not told apart from that of re-weighting the real tail rows: "
                        "what extra images add here is mostly more weight on the tail."
                        if d.loc[OVERSAMPLING, "low"] > 0 else
                        "the two are not told apart at this scale."))
    for row in (UNFILTERED_ROW, METHOD):
        if row in d.index:
            lines.append(f"{row}: {span(d.loc[row])} {PRIMARY}.")
    if METHOD in d.index and OVERSAMPLING in d.index:
        vs = against(OVERSAMPLING).loc[METHOD]
        lines.append(f"The method against oversampling the real tail rows: {span(vs)} — "
                     + ("the generated images add more than re-weighting the real tail rows, as the claim predicts."
                        if vs["low"] > 0 else
                        "oversampling the real tail rows does better, against the claim's prediction." if vs["high"] < 0
                        else "not told apart at this scale."))
    if UNFILTERED_ROW in d.index and NULL_ROW in d.index:
        vs = against(NULL_ROW).loc[UNFILTERED_ROW]
        lines.append(f"Every generated image against as many lesion-free images with the same labels (the negative "
                     f"control): {span(vs)} — "
                     + ("the generated images show something of their labels." if vs["low"] > 0 else
                        "the generated images do worse than images that show nothing of their labels."
                        if vs["high"] < 0 else
                        "the generated images are not told apart from images that show nothing of their labels."))
    if RETRIEVED_ROW in d.index and METHOD in d.index:
        vs = against(RETRIEVED_ROW).loc[METHOD]
        lines.append(f"The generator first learnt from {ch.cfg.diffusion.pretrain_pool} rows of a pool disjoint from "
                     f"every split; that pool's own images of the target classes, added at the same budget and "
                     f"weight, change {PRIMARY} by {span(d.loc[RETRIEVED_ROW])}, and the method differs from them by "
                     f"{span(vs)}: "
                     + ("generating beats retrieving the real images the generator saw." if vs["low"] > 0 else
                        "retrieving the pool's images does better than generating from them." if vs["high"] < 0 else
                        "generating and retrieving are not told apart at this scale."))

    def fraction(row, ideal, what) -> bool:
        if row not in d.index or ideal not in d.index:
            return False
        if not d.loc[ideal, "low"] > 0:     # no gain to take a fraction of
            lines.append(f"Fraction of the ideal gain, {what}: not given, as the ideal gain's interval is not above 0.")
            return False
        r = ratio_interval(test_set.Y, result.probs, test_set.rows["ImageID"].to_numpy(), cohort.groups, result.seeds,
                           row, BASELINE, ideal, PRIMARY, n=ch.cfg.eval.bootstrap, seed=0,
                           interval_method=ch.cfg.eval.interval)
        lines.append(f"Fraction of the ideal gain, {what}: {r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}].")
        return True

    given = [fraction(UNFILTERED_ROW, IDEAL_ROW, "every generated image (unfiltered) against the ideal generator "
                                                 "at the budget"),
             fraction(METHOD, IDEAL_ROW, "the filtered set (the method) against the ideal generator at the budget"),
             fraction(METHOD, IDEAL_KEPT_ROW, "the filtered set against the ideal generator at the filter's count "
                                              "(the same label sets, perfect images)")]
    if any(given):
        lines.append("(1 = as good as rendering the truth, 0 = no better than no extra images, below 0 = worse.)")
    return "\n".join(lines)


def dose_curve(ch):
    """The ideal generator's dose curve: each dose's images, its paired difference from no extra
    images on the primary endpoint (interval resampling seeds and test label rows), as a table and
    a figure."""
    from ..plots import dose_curve as plot
    from ..tables import BASELINE, dose_row_name

    table(ch, "dose")
    d = paired_differences(results_store(ch.cfg), "dose", BASELINE, PRIMARY)
    rows = []
    for k in ch.cfg.tables.ideal_doses:
        name = dose_row_name(k)
        if name in d.index:
            n = len(ch.get(S.ideal_set(ch.cfg, k)))
            rows.append({"dose (× budget)": float(k), "images": n, **d.loc[name, [f"Δ{PRIMARY} vs {BASELINE}", "low", "high",
                                                                              "better on seeds"]].to_dict()})
    df = pd.DataFrame(rows).set_index("dose (× budget)")
    if df.empty:
        return df, None, "The dose curve needs the phantom renderer (data.source: phantom)."
    fig = plot(df["images"].to_numpy(), df[f"Δ{PRIMARY} vs {BASELINE}"].to_numpy(), df["low"].to_numpy(),
               df["high"].to_numpy(), xlabel="ideal-generator images added (all tail classes)",
               ylabel=f"Δ {PRIMARY} vs no extra images")
    return df.round(4), fig, _dose_text(ch, d)


def _dose_text(ch, d) -> str:
    """What each step up the dose curve adds (paired differences between neighbouring doses)."""
    from ..tables import dose_row_name

    store = results_store(ch.cfg)
    doses = [k for k in ch.cfg.tables.ideal_doses if dose_row_name(k) in d.index]
    steps = []
    for a, b in zip(doses, doses[1:]):
        x = paired_differences(store, "dose", dose_row_name(a), PRIMARY).loc[dose_row_name(b)]
        steps.append((a, b, x))
    if not steps:
        return ""
    parts = [f"{a:g}× → {b:g}×: {common.interval_text(x)}" for a, b, x in steps]
    last = steps[-1][2]
    end = ("still rising at the largest dose: more images of the right kind would add more"
           if last["low"] > 0 else "the last step's interval reaches 0: the curve flattens within this range")
    how = common.training_text(tables_config(ch.cfg, "dose"))
    same = how == common.training_text(tables_config(ch.cfg, "controls"))
    return common.wrapped(f"Every dose is trained as: {how}"
                          + (" (as the controls above, so the 1× row is their positive control)." if same else
                             " (unlike the controls above: the 1× row is the positive control trained this way).")
                          + f" What each step up the dose adds to {PRIMARY} (paired): " + "; ".join(parts)
                          + f" — {end}.")


def exercises(ch, cohort, test_set):
    """The chapter's exercises, with this run's seeds, tail classes and test positives."""
    from .common import backbone_start, exercises as items

    cfg = ch.cfg
    seeds = [int(s) for s in cfg.seeds]
    more = seeds + [max(seeds) + 1, max(seeds) + 2]
    tail = np.flatnonzero(np.asarray(cohort.groups) == "tail")
    Y = np.asarray(test_set.Y)
    positives = Y[:, tail].sum(0)
    ids = test_set.rows["ImageID"].astype(str).to_numpy()      # re-rendered rows keep their label row's id
    label_rows = np.array([len(set(ids[Y[:, c] == 1])) for c in tail])
    n_rows = len(set(ids))

    def span(a) -> str:
        return f"{int(a.min())}" + ("" if a.min() == a.max() else f" to {int(a.max())}")

    start = backbone_start(cfg)
    return items(
        (f"This profile trains seeds {seeds}. Run with `-p seeds '{more}'`. Which differences in the paired "
         "table become *sure*, and which stay unsure however many seeds you add?",
         "The intervals resample the seeds and the test label rows together: more seeds shrink only the seeds' "
         f"share of the width (roughly like $1/\\sqrt{{n}}$); the test rows' share stays (this run resamples "
         f"{n_rows:,} test label rows, rendered as {len(test_set):,} test images; a tail class has {span(label_rows)} "
         "positive label rows). A difference whose mean is close to zero stays unsure."),
        ("The CLIP row needs pretrained weights. Save a CLIP vision model with `save_pretrained` on a machine with "
         "internet and run with `-p clip_image_encoder PATH`. How far does pretraining move it?",
         f"Compare with the ViT row, the same kind of network, whose backbone is {start}."),
        (f"Table 2 reports tail mAUC and tail mAP over {len(tail)} classes with {span(positives)} positive test images "
         f"each, rendered from {span(label_rows)} positive label rows each (rare rows are rendered again on fresh "
         "anatomy). Which tail class contributes most to the difference between TRCGL-Net and ConvNeXt?",
         f"`evaluate(test_set.Y, result.probs[(\"Ours\", {seeds[0]})], classes, groups).per_class` (from "
         "`trcgl.metrics`) gives AP per class on the test split; subtract the ConvNeXt run's."),
    )
