"""Chapter 6 (ablation and sensitivity): Table 3's ladder, Table 4's synthetic weight, Table 5's α."""
from __future__ import annotations

from itertools import product

import pandas as pd

from .. import paper
from .. import stages as S
from ..seedtables import paired_differences, results_store, seed_means, seed_summary, seed_table, with_paper
from ..tables import tables_config
from .common import benchmark_note, interval_text, table, training_text

METRICS = ["mAUC tail", "mAP", "mAUC", "macro-F1", "mAP tail"]


def needs(cfg) -> list:
    return [S.table(cfg, name) for name in ("table3", "table4", "table5", "released")]


def setting(ch):
    cfg = ch.cfg
    tcfg = tables_config(cfg)
    n_train, n_syn = len(ch.get(S.train_set(tcfg))), len(ch.get(S.synthetic_set(cfg)).kept)
    text = (f"profile {cfg.profile}: {n_train} training images + {n_syn} synthetic; seeds {list(cfg.seeds)}; device "
            f"{ch.device}; every number on the test split. Runs shared with the results chapter load from the cache.")
    return tcfg, text


def paper_table(ch, tcfg, name: str, paper_number: int):
    """One of Tables 3-5 beside the paper's, and the line under it."""
    result = table(ch, name)
    names = [r["name"] for r in result.rows]
    ours = seed_table(results_store(ch.cfg), name, METRICS, rows=names)
    keys = {r["name"]: r["meta"]["paper key"] for r in result.rows if "paper key" in r["meta"]}
    return result, with_paper(ours, paper.table(paper_number), names=keys), benchmark_note(tcfg, records=result.records)


def steps(ch, result) -> pd.DataFrame:
    """Each step of Table 3 against the one before it, on the same seeds, beside the paper's step."""
    store = results_store(ch.cfg)
    names = [r["name"] for r in result.rows]
    ref, ref_auc = paper.table(3)["mAP (paper)"], paper.table(3)["mAUC (paper)"]
    out = []
    for prev, cur in zip(names, names[1:]):
        u = paired_differences(store, "table3", prev, "mAUC tail").loc[cur]
        d = paired_differences(store, "table3", prev, "mAP").loc[cur]
        dt = paired_differences(store, "table3", prev, "mAP tail").loc[cur]
        out.append({"step": f"{prev} → {cur}", "Δ tail mAUC": u.iloc[0], "tail mAUC low": u["low"],
                    "tail mAUC high": u["high"], "tail mAUC sure": u["sure"], "ΔmAP": d.iloc[0], "low": d["low"],
                    "high": d["high"], "better on seeds": d["better on seeds"], "sure": d["sure"],
                    "Δ tail mAP": dt.iloc[0], "ΔmAUC (paper)": ref_auc[cur] - ref_auc[prev],
                    "ΔmAP (paper)": ref[cur] - ref[prev]})
    return pd.DataFrame(out).set_index("step")


def steps_text(table_: pd.DataFrame) -> str:
    """Table 3's steps judged on tail mAUC (the primary endpoint) by the claims ledger's rule (the
    paper's overall-mAUC step standing in: it reports no tail mAUC per step), then on mAP beside the
    paper's mAP steps."""
    from ..claims import effect_words

    biggest, paper_biggest = table_["ΔmAP"].idxmax(), table_["ΔmAP (paper)"].idxmax()
    sure = table_.index[table_["sure"]].tolist()
    lines = ["Tail mAUC (the primary endpoint), each step against the one before, on the same seeds and test "
             "resamples:"]
    for step, r in table_.iterrows():
        diff = {"low": r["tail mAUC low"], "high": r["tail mAUC high"]}
        lines.append(f"  {step}: {r['Δ tail mAUC']:+.4f} [{r['tail mAUC low']:+.4f}, {r['tail mAUC high']:+.4f}]: "
                     f"{effect_words(diff, ('mAUC', r['ΔmAUC (paper)']))}")
    lines.append(f"mAP, the paper's headline metric: the largest step here is {biggest} "
                 f"({table_.loc[biggest, 'ΔmAP']:+.4f}); in the paper it is {paper_biggest} "
                 f"({table_.loc[paper_biggest, 'ΔmAP (paper)']:+.4f}). "
                 + (f"Steps whose mAP interval excludes zero: {', '.join(sure)}." if sure else
                    "No step's mAP interval excludes zero at this number of seeds."))
    for step, r in table_.iterrows():
        agree = (r["ΔmAP"] > 0) == (r["ΔmAP (paper)"] > 0)
        lines.append(f"  {step}: {r['ΔmAP']:+.4f} mAP here vs {r['ΔmAP (paper)']:+.4f} in the paper, "
                     f"{'same sign' if agree else 'opposite sign'}")
    return "\n".join(lines)


def sensitivity_figure(ch, weights, alphas):
    import matplotlib.pyplot as plt

    from ..plots import seed_bars

    store = results_store(ch.cfg)
    fig, axes = plt.subplots(2, 2, figsize=(11, 5.2))
    for col, (name, result) in enumerate((("table4", weights), ("table5", alphas))):
        for row, metric in enumerate(("mAUC tail", "mAP")):        # the primary endpoint first
            seed_bars(seed_summary(store, name), metric, rows=[r["name"] for r in result.rows], ax=axes[row, col])
    fig.tight_layout()
    return fig


def sensitivity_text(ch) -> str:
    """Tables 4 and 5 on tail mAUC (the primary endpoint), then mAP: the best and the worst setting,
    their paired difference with its interval (resampling seeds and test label rows together), and
    whether the best lies at the edge of the grid."""
    store = results_store(ch.cfg)
    lines = []
    for (name, what), metric in product((("table4", "w"), ("table5", "α")), ("mAUC tail", "mAP")):
        grid = [r["name"] for r in table(ch, name).rows]          # the grid's order
        m = seed_means(store, name)[metric].reindex(grid).dropna()
        best, worst = m.idxmax(), m.idxmin()
        d = paired_differences(store, name, worst, metric).loc[best]
        if pd.isna(d["low"]):
            verdict = f"no interval with {len(ch.cfg.seeds)} seed, so no verdict."
        elif d["sure"]:
            verdict = "the interval excludes zero: the setting matters at this scale."
        else:
            verdict = ("the interval includes zero: the best and the worst setting are not told apart at this scale "
                       "(a closer pair can still be, where its own paired noise is smaller: see the claims ledger).")
        edge = (" The best setting is at the edge of the grid: the optimum may lie outside it."
                if list(m.index).index(best) in (0, len(m) - 1) else "")
        lines.append(f"{what}, {metric}: best {best} ({m[best]:.4f}), worst {worst} ({m[worst]:.4f}); best − worst "
                     f"{interval_text(d)} (paired; both picked after looking, so "
                     f"the interval flatters the difference); {verdict}{edge}")
    return "\n".join(lines)


def released_comparison(ch, tcfg):
    """The paper's text against the released code (issue 14): every row trained with the synthetic
    set on the same data and seeds, scored under the same conventions on the test split; the table,
    the paired differences to the text reading, and a sentence."""
    from ..released import TEXT

    tcfg = tables_config(ch.cfg, "released")       # the comparison's own recipe (tables.stage2 may add stage 2)
    result = table(ch, "released")
    store = results_store(ch.cfg)
    names = [r["name"] for r in result.rows]
    ours = seed_table(store, "released", METRICS, rows=names)
    ours.insert(0, "what changes", pd.Series({r["name"]: r["meta"].get("changes", "") for r in result.rows}))
    diffs = pd.concat({m: paired_differences(store, "released", TEXT, m) for m in ("mAP", "mAUC tail")}, axis=1)
    moved = [f"{row} ({interval_text(diffs.loc[row, 'mAUC tail'])})" for row in diffs.index
             if diffs.loc[row, ("mAUC tail", "sure")]]
    by_map = [row for row in diffs.index if diffs.loc[row, ("mAP", "sure")] and not diffs.loc[row, ("mAUC tail", "sure")]]
    text = ("Rows whose tail-mAUC interval (the primary endpoint) against the text reading excludes zero: "
            + ("; ".join(moved) if moved else "none at this number of seeds") + "."
            + (f" On mAP alone also: {', '.join(by_map)}." if by_map else ""))
    text += released_coverage_text(diffs, result)
    text += released_stage2_text(ch, tcfg)
    if tcfg.train.finetune_epochs == 0:
        text += (" This profile trains the heads only (the paper's stage 1, on the frozen backbone), so the "
                 "behaviours of the released fine-tuning stage cannot act: EMA starts at fine-tuning, so the "
                 "'+ EMA' row is the text reading; augmentations and stochastic depth act only where the "
                 "backbone trains on pixels, so the '+ augmentation + drop path + AdamW ε' row differs from the "
                 "text reading by AdamW's ε alone; and the released reading gives synthetic images weight 0 "
                 "outside fine-tuning, so its synthetic images never count here.")
    note = benchmark_note(tcfg, "No paper column: the paper reports one reading.", result.records)
    return ours, diffs.round(4), text, note


def released_coverage_text(diffs: pd.DataFrame, result) -> str:
    """The released preset's options (evaluation conventions aside) that no single row of the
    comparison takes, and the single rows' tail-mAUC differences beside the released reading's."""
    from ..config import preset_overrides
    from ..released import BEHAVIOURS, RELEASED

    taken = {k for keys in BEHAVIOURS.values() for k in keys}
    left = [k for k in preset_overrides("released") if not k.startswith("eval.") and k not in taken]
    if not left or RELEASED not in diffs.index:
        return ""
    delta = diffs[("mAUC tail", diffs["mAUC tail"].columns[0])]        # each row minus the text reading
    single = sum(float(delta[r["name"]]) for r in result.rows if r["name"].startswith("text + ") and r["name"] in delta)
    whole = float(delta[RELEASED])
    return (f" Options of the released preset that no single row takes: {', '.join(left)}. The released reading "
            f"changes all of them too, so its difference ({whole:+.4f} tail mAUC) is not the sum of the single rows' "
            f"({single:+.4f} together; effects need not add up either).")


def released_stage2_text(ch, tcfg) -> str:
    """Where the comparison fine-tunes: how many optimiser steps stage 2 takes, and how much of the
    EMA is still the weights it started from after them (timm's ModelEmaV3 without warm-up: the
    start keeps a share decay^steps)."""
    import math

    from ..config import preset_overrides

    t = tcfg.train
    if t.finetune_epochs == 0:
        return ""
    n = len(ch.get(S.train_set(tcfg))) + len(ch.get(S.synthetic_set(ch.cfg)).kept)
    steps = int(t.finetune_epochs) * math.ceil(n / t.batch_size)
    decay = float(preset_overrides("released").get("train.ema_decay", t.ema_decay))
    return (f" Every row here is trained as: {training_text(tcfg)}. Stage 2 takes at least {steps} optimiser steps "
            f"({t.finetune_epochs} epoch{'s' if t.finetune_epochs != 1 else ''} of {n} images in batches of "
            f"{t.batch_size}; repeat-factor sampling "
            f"lengthens the epochs), so the released EMA (decay {decay:g}) still holds "
            f"{decay ** steps:.2%} of the weights stage 2 started from when it is evaluated: at this budget '+ EMA' "
            "measures an EMA that has barely moved.")


def exercises(ch, result):
    """The chapter's exercises, with this run's synthetic weights, seeds and interval method (``result``:
    a table of the chapter, whose records say how its differences' intervals were made)."""
    from scipy import stats

    from .common import differences_note, exercises as items

    cfg, tcfg = ch.cfg, tables_config(ch.cfg)
    ws = [float(w) for w in cfg.tables.synthetic_weights]
    wider = sorted({0.0, *ws, 1.0})
    n = len(cfg.seeds)
    how = differences_note(result.records, "mAUC tail", "The step table's differences are")
    t = f"{stats.t.ppf(0.975, n - 1):.2f}" if n > 1 else None
    heads_only = int(tcfg.train.finetune_epochs) == 0
    return items(
        (f"Table 4 varies $w$ over [{', '.join(f'{w:g}' for w in ws)}] in this run. Add $w = 0$ (synthetic images "
         f"present but weightless) and $w = 1$ with `-p synthetic_weights '[{', '.join(f'{w:g}' for w in wider)}]'`. "
         "Is $w = 0$ the same as no synthetic images at all?",
         "With $w = 0$ the synthetic images contribute no gradient but still take up places in the batches, so "
         "each epoch has fewer effective real samples per step."),
        ("The released code weights synthetic images 0 during its warm-up epochs. Which row of Table 3 would that "
         "change most, and why?",
         "In the warm-up only the heads learn; think about which head sees the synthetic images first."
         + (f" Table 3's runs train the heads only ({tcfg.train.warmup_epochs} warm-up epochs, no fine-tuning), so "
            "under that rule their synthetic images would never count." if heads_only else "")),
        (f"With {n} seed{'s' if n != 1 else ''}, how large must a gain be to be called *sure*? Read it from the "
         "widest interval of the step table above.",
         how.rstrip(":") + ". A paired difference is sure when its own interval excludes zero, so the gain must "
         "exceed about half that interval's width." + (
             f" A t-interval over the {n} seeds alone would need a mean above ${t} \\cdot s/\\sqrt{{{n}}}$, with $s$ "
             "the standard deviation of the per-seed differences; compare the two." if t else "")),
    )
