"""Chapter 4 (the label GCN): the graph from real labels, how τ prunes it, and the full model
against channel-class attention and GAP-only."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import stages as S
from ..claims import effect_words, paper_effect
from ..tables import CCA, FULL, GAP_ONLY
from .common import interval_text, row_means, run, table

TAUS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)


def needs(cfg) -> list:
    return [S.train_set(cfg), S.selection_set(cfg), S.test_set(cfg), S.table(cfg, "components", seeds=[cfg.seed]),
            S.table(cfg, "gcn_conditions")]


def setting(ch):
    cfg = ch.cfg
    cohort = ch.get(S.cohort(cfg))
    text = (f"profile {cfg.profile}, tau {cfg.model.tau} (diagonal thresholded: {cfg.model.tau_diagonal}), "
            f"alpha {cfg.model.alpha}, device {ch.device}")
    return cohort, text


def full_graph(ch, cohort):
    """A (Eq. 20) from every real training-side label row."""
    from ..models import label_adjacency

    return label_adjacency(cohort.Y[cohort.is_train], ch.cfg.model.tau, ch.cfg.model.tau_diagonal)


def adjacency_figure(ch, cohort, A):
    from ..plots import adjacency_heatmap

    return adjacency_heatmap(A, list(cohort.class_set.classes),
                             f"Label adjacency A from {int(cohort.is_train.sum())} real training label rows, "
                             f"tau = {ch.cfg.model.tau}")


def graph_figure(ch, cohort, A):
    from ..plots import label_graph

    fig = label_graph(A, list(cohort.class_set.classes), cohort.groups, seed=ch.cfg.seed)
    fig.axes[0].set_title("The label graph (edges: off-diagonal A > 0; large outlined nodes: tail classes)")
    return fig


def tau_table(ch, cohort) -> pd.DataFrame:
    """For several τ, on the full table's training side and on the graph the model is built from
    (the rendered training rows): edges left, edges touching a tail class, tail classes without a
    neighbour."""
    from ..models import label_adjacency

    classes = list(cohort.class_set.classes)
    tail = [c for c, g in enumerate(cohort.groups) if g == "tail"]
    is_tail = np.isin(np.arange(len(classes)), tail)
    graphs = {"full table": cohort.Y[cohort.is_train], "the model's (training rows)": ch.get(S.train_set(ch.cfg)).Y}
    rows = []
    for t in TAUS:
        row = {"tau": t}
        for name, Y in graphs.items():
            off = (label_adjacency(Y, t, ch.cfg.model.tau_diagonal) > 0) & ~np.eye(len(classes), dtype=bool)
            upper = np.triu(off, 1)
            row |= {f"edges, {name}": int(upper.sum()),
                    f"edges touching a tail class, {name}": int((upper & (is_tail[:, None] | is_tail[None, :])).sum()),
                    f"tail classes without a neighbour, {name}": ", ".join(classes[c] for c in tail if not off[c].any())
                    or "none"}
        rows.append(row)
    return pd.DataFrame(rows).set_index("tau")


def tail_neighbours(cohort, A, top: int = 4) -> pd.DataFrame:
    classes = list(cohort.class_set.classes)
    out = []
    for c in [c for c, g in enumerate(cohort.groups) if g == "tail"]:
        w = A[c].copy()
        w[c] = 0
        out.append({"tail class": classes[c],
                    **{f"neighbour {k + 1}": f"{classes[j]} ({w[j]:.3f})" for k, j in enumerate(np.argsort(-w)[:top])
                       if w[j] > 0}})
    return pd.DataFrame(out).set_index("tail class").fillna("")


def subset_agreement(ch, cohort, A) -> str:
    """The graph of the rendered training rows against the full table's, at this τ."""
    from ..models import label_adjacency

    train = ch.get(S.train_set(ch.cfg))
    A_sub = label_adjacency(train.Y, ch.cfg.model.tau, ch.cfg.model.tau_diagonal)
    eye = np.eye(len(A), dtype=bool)
    e_all, e_sub = (A > 0) & ~eye, (A_sub > 0) & ~eye
    both = e_all | e_sub
    return (f"edges: full table {e_all.sum() // 2}, rendered subset {e_sub.sum() // 2}, in both "
            f"{(e_all & e_sub).sum() // 2}; correlation of the off-diagonal weights: "
            f"{np.corrcoef(A[both], A_sub[both])[0, 1]:.3f}")


def comparison(ch):
    """The three component runs (one seed): selection curves and test means."""
    from ..plots import training_curves

    result = table(ch, "components", seeds=[ch.cfg.seed])
    runs = {r: run(ch, result, r, ch.cfg.seed) for r in (GAP_ONLY, CCA, FULL)}
    fig = training_curves({name: r.history for name, r in runs.items()}, metric="selection_mAP")
    return result, runs, fig, row_means(result)


def verdict(ch, means: pd.DataFrame) -> str:
    """The GCN's verdict on this run's component runs, tail mAUC (the primary endpoint) first, then mAP; the
    setting it was measured in read from the configuration."""
    from .. import paper
    from .common import backbone_start, training_text, wrapped

    full, base, cca = means.loc[FULL], means.loc[GAP_ONLY], means.loc[CCA]
    ref = paper.table(3)["mAP (paper)"]
    t = "mAUC tail"
    return wrapped(*(f"Tail mAUC (the primary endpoint), one seed ({ch.cfg.seed}), so no interval here (the intervals "
            "follow below, over seeds and test label rows): "
            f"the full model {full[t]:.4f}, GAP only {base[t]:.4f} "
            f"({full[t] - base[t]:+.4f}), channel-class attention alone {cca[t]:.4f} (the GCN adds "
            f"{full[t] - cca[t]:+.4f}).\n"
            f"mAP: the full model is {'above' if full['mAP'] > base['mAP'] else 'not above'} the GAP-only baseline "
            f"on this seed: {full['mAP']:.4f} vs {base['mAP']:.4f} ({full['mAP'] - base['mAP']:+.4f}); tail mAP "
            f"{full['mAP tail']:.4f} vs {base['mAP tail']:.4f}. Against channel-class attention alone the GCN changes "
            f"mAP by {full['mAP'] - cca['mAP']:+.4f} (tail {full['mAP tail'] - cca['mAP tail']:+.4f}).\n"
            f"The paper's Table 3 (real PadChest, pretrained backbone, with prompt diffusion in both rows): "
            f"{ref['+ channel-class attention']:.4f} -> {ref['+ label GCN (full)']:.4f} mAP when the GCN is added. "
            f"Ours: {ch.cfg.profile} profile, {ch.cfg.data.source} images, no synthetic images, one seed "
            f"({ch.cfg.seed}); "
            f"backbone {backbone_start(ch.cfg)}; trained: {training_text(ch.cfg)}; GCN score "
            f"'{ch.cfg.model.gcn_score}'.").split("\n"))


def test_intervals(ch, result, cohort, test_set) -> tuple[str, pd.DataFrame]:
    """A 95 % interval for each model (with one seed: test-set noise only), the table stage's: resamples
    of the test **label rows** (a rare row and its repeats on fresh anatomy drawn together,
    :mod:`trcgl.resampling`), read from the method the config names (``eval.interval``)."""
    from ..seedtables import interval_method_text

    records = [r for r in result.records if r.get("kind") == "interval"]
    metrics = ("mAUC tail", "mAUC", "mAP", "mAP head", "mAP medium", "mAP tail")
    cells = {}
    for r in records:
        if r["metric"] in metrics:
            cells.setdefault(r["row"], {})[r["metric"]] = f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
    table_ = pd.DataFrame(cells).T.reindex(columns=list(metrics))
    seeds = max((int(r.get("n_seeds", 1)) for r in records), default=1)
    units = (f"the {test_set.rows['ImageID'].nunique()} test label rows ({len(test_set)} images; "
             + ("one seed)" if seeds == 1 else f"{seeds} seeds)"))
    return interval_method_text(records, units=units), table_


def conventions(ch, runs, cohort, test_set) -> tuple[str, pd.DataFrame]:
    """The full model's test scores under several conventions, the tables' own first; per-class F1
    thresholds are chosen on the selection split (never on test)."""
    from ..config import preset_overrides
    from ..metrics import F1_THRESHOLD_RULES, evaluate, f1_thresholds
    from ..train import predict
    from .common import f1_rule_text

    r, e = runs[FULL], ch.cfg.eval
    classes, groups = list(cohort.class_set.classes), cohort.groups
    select = ch.get(S.selection_set(ch.cfg))
    P = predict(r.model, test_set, r.mean, r.std, ch.device)
    released = preset_overrides("released")
    rules = {rule: f1_thresholds(rule, select.Y, r.selection_probs, e.f1_threshold) for rule in F1_THRESHOLD_RULES}
    label = {"selection": "F1 at per-class thresholds chosen on the selection split",
             "fixed": f"F1 at a fixed {e.f1_threshold:g}"}
    order = [e.f1_thresholds] + [k for k in rules if k != e.f1_thresholds]
    conv = {label[k] + (" (the tables)" if k == e.f1_thresholds else ""):
            evaluate(test_set.Y, P, classes, groups, rules[k]).means for k in order}
    conv[f"F1 at a fixed {released['eval.f1_threshold']:g} (released code)"] = evaluate(
        test_set.Y, P, classes, groups, released["eval.f1_threshold"]).means
    conv["empty classes as AP 0 / AUC 0.5 (released code)"] = evaluate(
        test_set.Y, P, classes, groups, rules[e.f1_thresholds], empty=released["eval.empty_classes"]).means
    excluded = evaluate(test_set.Y, P, classes, groups).excluded
    return (f"The tables score macro-F1 {f1_rule_text(ch.cfg)}. Classes without a test positive in this run: "
            f"{excluded or 'none'}.", pd.DataFrame(conv).T[["mAP", "mAUC", "macro-F1", "macro-F1 tail"]].round(4))


def tail_ap(result, cohort, test_set) -> pd.DataFrame:
    from ..metrics import evaluate

    classes, groups = list(cohort.class_set.classes), cohort.groups
    per = pd.DataFrame({row: evaluate(test_set.Y, P, classes, groups).per_class["AP"]
                        for (row, _), P in result.probs.items()})
    per.insert(0, "group", groups)
    per.insert(1, "test positives", test_set.Y.sum(0))
    return per[per.group == "tail"].round(4)


# ----------------------------------------------------------------------------- the claim against its controls

CONDITION_METRICS = ["mAUC tail", "mAP tail", "mAUC", "mAP"]


def conditions_table(ch):
    """Channel-class attention with and without the GCN in each rendering condition (test split,
    intervals over seeds and test label rows, chance level last)."""
    from ..seedtables import results_store, seed_table
    from ..tables import GCN_CONDITIONS

    result = table(ch, "gcn_conditions")
    names = [r["name"] for r in result.rows]
    notes = {r["name"]: r["unavailable"] for r in result.rows if r["unavailable"]}
    t = seed_table(results_store(ch.cfg), "gcn_conditions", CONDITION_METRICS, rows=names, notes=notes)
    what = pd.Series({c: w for c, (_, w) in GCN_CONDITIONS.items()}, name="how the images are rendered")
    return result, t, what.to_frame()


def _image_only_text(ch, store) -> str:
    """What the arm without the GCN reads in each condition (tail mAUC with its interval): lesions and
    co-occurrence (normal), co-occurrence alone (tail hidden), the lesions alone (co-occurrence broken);
    and, where the lesions alone leave it near chance, what that means for the negative control."""
    from ..seedtables import seed_summary
    from ..tables import tables_config

    summary = seed_summary(store, "gcn_conditions", ["mAUC tail"]).set_index("row")
    what = {"normal": "lesions and co-occurrence", "tail hidden": "co-occurrence alone",
            "co-occurrence broken": "the lesions alone"}
    got = {c: summary.loc[f"{c}: without GCN"] for c in what if f"{c}: without GCN" in summary.index}
    if len(got) < len(what):
        return ""
    cell = {c: f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" for c, r in got.items()}
    text = (" Without the GCN the arm reads, in tail mAUC (chance 0.5): " + "; ".join(
        f"{what[c]} ({c}) {cell[c]}" for c in what) + ".")
    broken, hidden = got["co-occurrence broken"], got["tail hidden"]
    half = (got["normal"]["mean"] - 0.5) / 2
    if broken["mean"] - 0.5 < half:
        both_weak = hidden["mean"] - 0.5 < half
        tcfg = tables_config(ch.cfg)
        frozen = (" On features the backbone learnt from head labels only and kept frozen (heads only, no fine-tuning)"
                  if S.uses_pretraining(tcfg) and int(tcfg.train.finetune_epochs) == 0 else " Here")
        text += ((f" Either alone leaves it less than half as far above chance as both together.{frozen}, the heads "
                  "need the lesions and the findings they go with at once." if both_weak else
                  f" The lesions alone leave it less than half as far above chance as lesions and co-occurrence "
                  f"together.{frozen}, the drawn tail lesions tell the heads little by themselves.")
                 + " So the negative control measures the GCN on an arm near the floor: a gain there is capacity on a "
                   "weak signal, and it bounds, not removes, what co-occurrence adds elsewhere.")
    return text


def conditions_effects(ch, result) -> tuple[pd.DataFrame, str]:
    """The GCN's effect (with − without, paired) in each condition, and what the three conditions
    together say: a gain in the normal condition that grows when the tail is hidden (only
    co-occurrence is left) and vanishes when co-occurrence is broken is the claim's signature."""
    from ..seedtables import paired_differences, results_store
    from ..tables import GCN_CONDITIONS, SHUFFLED_GRAPH

    store = results_store(ch.cfg)
    rows, effects, graph = [], {}, {}
    for condition in GCN_CONDITIONS:
        without, with_ = f"{condition}: without GCN", f"{condition}: with GCN"
        try:
            d = paired_differences(store, "gcn_conditions", without, "mAUC tail")
        except KeyError:
            continue
        if with_ not in d.index:
            continue
        r = d.loc[with_]
        effects[condition] = r
        rows.append({"condition": condition, "comparison": "with − without GCN", "Δ tail mAUC": r.iloc[0],
                     "low": r["low"], "high": r["high"], "sure": r["sure"]})
        shuffled = f"{condition}: {SHUFFLED_GRAPH}"
        if shuffled in d.index:
            g = paired_differences(store, "gcn_conditions", shuffled, "mAUC tail").loc[with_]
            graph[condition] = g
            rows.append({"condition": condition, "comparison": "with GCN − GCN over a shuffled graph",
                         "Δ tail mAUC": g.iloc[0], "low": g["low"], "high": g["high"], "sure": g["sure"]})
    table_ = pd.DataFrame(rows).set_index(["condition", "comparison"])

    effect = paper_effect("+ label GCN (full)", "+ channel-class attention")

    text = "; ".join(f"{c}: {effect_words(r, effect)} ({interval_text(r)})" for c, r in effects.items())
    hidden, broken = effects.get("tail hidden"), effects.get("co-occurrence broken")
    if hidden is not None:
        normal = effects.get("normal")
        beside = ("" if normal is None else
                  f" Its gain there ({hidden.iloc[0]:+.4f}) is {'larger' if hidden.iloc[0] > normal.iloc[0] else 'smaller'}"
                  f" than in the normal condition ({normal.iloc[0]:+.4f}; point values of two separate comparisons)"
                  + ("." if hidden.iloc[0] > normal.iloc[0] else
                     ": where the lesions are drawn the GCN gains at least as much, so not all of its normal-condition "
                     "gain need come from co-occurrence."))
        text += (". Positive control: with the tail lesions hidden, only co-occurrence can predict the tail, so a "
                 "working label graph must gain there — " + ("it does." if hidden["sure"] and hidden.iloc[0] > 0
                                                             else "it does not, so this benchmark cannot show what "
                                                                  "the graph adds.") + beside)
    if broken is not None:
        text += (f" Negative control: with co-occurrence broken the graph has nothing to use ({interval_text(broken)}) — "
                 + ("yet it gains: part of the effect does not come from co-occurrence (capacity of the label branch)."
                    if broken["sure"] and broken.iloc[0] > 0
                    else "it shows no gain; its interval is all this says, not that the gain is zero."))
    text += _image_only_text(ch, store)
    for condition, g in graph.items():
        text += (f" The graph's edges ({condition}: the true graph against the same GCN over a shuffled one, "
                 f"{interval_text(g)}): "
                 + ("the true co-occurrence adds to the tail." if g["sure"] and g.iloc[0] > 0 else
                    "the shuffled graph does better, so what the GCN adds is not the co-occurrence." if g["sure"] else
                    "no difference the interval can see, so any gain of the GCN need not come from its edges."))
    return table_.round(4), text


def label_only_ceiling(ch, cohort) -> tuple[pd.DataFrame, str]:
    """How much the other labels alone say about each tail class: a logistic regression from the
    other 29 true labels (trained on the train split's labels), its test AUC with a bootstrap
    interval over test label rows (``eval.interval``). An upper bound for what co-occurrence can contribute."""
    from sklearn.linear_model import LogisticRegression

    from ..metrics import RankedScores
    from ..resampling import interval, row_weights

    train, test = ch.get(S.train_set(ch.cfg)), ch.get(S.test_set(ch.cfg))
    classes = list(cohort.class_set.classes)
    clusters = test.rows["ImageID"].to_numpy()
    rows = []
    for c in [c for c, g in enumerate(cohort.groups) if g == "tail"]:
        others = [k for k in range(len(classes)) if k != c]
        if train.Y[:, c].sum() == 0 or test.Y[:, c].sum() == 0:
            continue
        clf = LogisticRegression(max_iter=1000).fit(train.Y[:, others], train.Y[:, c])
        ranked = RankedScores(test.Y[:, [c]], clf.predict_proba(test.Y[:, others])[:, 1:])
        auc = float(ranked.scores()[1][0])
        draws = [ranked.scores(w)[1][0] for w in row_weights(clusters, ch.cfg.eval.bootstrap, ch.cfg.seed)]
        lo, hi = interval(draws, auc, ch.cfg.eval.interval)
        rows.append({"tail class": classes[c], "AUC from the other labels": auc, "low": lo, "high": hi,
                     "test positives": int(test.Y[:, c].sum())})
    out = pd.DataFrame(rows).set_index("tail class")
    text = (f"Mean AUC from labels alone: {out['AUC from the other labels'].mean():.3f} (0.5 = the other labels say "
            f"nothing about the class).")
    return out.round(3), text


def exercises(ch, means: pd.DataFrame):
    """The chapter's exercises; Ex. 4 reads this run's component means (tail mAUC) and training stages."""
    from .common import exercises as items

    cfg = ch.cfg
    t = "mAUC tail"
    below = means.loc[FULL, t] < means.loc[CCA, t]
    frozen = int(cfg.train.finetune_epochs) == 0
    return items(
        (f"Run with `-p tau {5 * cfg.model.tau:g}` (this run: τ = {cfg.model.tau:g}). Which tail classes lose all "
         "their neighbours in the graph the model is built from (the τ table's columns for the training rows tell you "
         "before you train)? Does the tail mAUC of the full model move?",
         "A tail class whose only edges are to head classes has large row-normalised entries but the head class's "
         "entries are tiny; the symmetrised average can fall below τ."),
        (f"Set `-p tau_diagonal {str(not cfg.model.tau_diagonal).lower()}`. Which classes lose their self-loop "
         "weight beyond the + I of Eq. 19, and how does that change $A$'s rows for the most connected classes?",
         "After Eq. 16 the diagonal is a class's share of its own co-occurrence mass; it is smallest for classes "
         "that appear with many others. Print `np.diag` of the symmetrised matrix before thresholding and compare "
         "it with τ."),
        (f"This run uses α = {cfg.model.alpha:g} (the released code: 0.05). Run α = 0 and α = "
         f"{10 * max(cfg.model.alpha, 0.05):g}: with α = 0, what does the GCN still learn?",
         "With α = 0 the label branch never reaches the loss, so $E_0$, $W_0$, $W_1$ get no gradient: the model is "
         "channel-class attention plus dead weights."),
        (f"Eq. 24 scores with a dot product, so $s_{{label}}$ grows with the feature norm of $g_r$. Run `-p gcn_score "
         f"{'cosine' if cfg.model.gcn_score == 'dot' else 'dot'}` (this run: `{cfg.model.gcn_score}`; the released "
         "code's score is cosine). In this run the full model is "
         f"{'below' if below else 'not below'} channel-class attention alone on tail mAUC "
         f"({means.loc[FULL, t]:.4f} vs {means.loc[CCA, t]:.4f}): does the other score change that?",
         "Compare the training curves: with a dot product the label branch's scores scale with the norm of $g_r$; "
         "the cosine score is bounded. " + (
             "Here the backbone is frozen (heads only), so only the attention heads change that norm during "
             "training." if frozen else "Fine-tuning the backbone changes that norm during training.")),
    )
