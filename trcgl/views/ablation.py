"""Chapter 6 (ablation and sensitivity): Table 3's ladder, Table 4's synthetic weight, Table 5's α."""
from __future__ import annotations

import pandas as pd

from .. import paper
from .. import stages as S
from ..seedtables import paired_differences, results_store, seed_means, seed_summary, seed_table, with_paper
from ..tables import benchmark_note, tables_config
from .common import table

METRICS = ["mAP", "mAUC", "macro-F1", "mAP tail"]


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
    return result, with_paper(ours, paper.table(paper_number), names=keys), benchmark_note(tcfg)


def steps(ch, result) -> pd.DataFrame:
    """Each step of Table 3 against the one before it, on the same seeds, beside the paper's step."""
    store = results_store(ch.cfg)
    names = [r["name"] for r in result.rows]
    ref = paper.table(3)["mAP (paper)"]
    out = []
    for prev, cur in zip(names, names[1:]):
        d = paired_differences(store, "table3", prev, "mAP").loc[cur]
        dt = paired_differences(store, "table3", prev, "mAP tail").loc[cur]
        out.append({"step": f"{prev} → {cur}", "ΔmAP": d.iloc[0], "low": d["low"], "high": d["high"],
                    "better on seeds": d["better on seeds"], "sure": d["sure"], "Δ tail mAP": dt.iloc[0],
                    "ΔmAP (paper)": ref[cur] - ref[prev]})
    return pd.DataFrame(out).set_index("step")


def steps_text(table_: pd.DataFrame) -> str:
    biggest, paper_biggest = table_["ΔmAP"].idxmax(), table_["ΔmAP (paper)"].idxmax()
    sure = table_.index[table_["sure"]].tolist()
    lines = [f"The largest step here is {biggest} ({table_.loc[biggest, 'ΔmAP']:+.4f} mAP); in the paper it is "
             f"{paper_biggest} ({table_.loc[paper_biggest, 'ΔmAP (paper)']:+.4f}). "
             + (f"Steps whose interval excludes zero: {', '.join(sure)}." if sure else
                "No step's interval excludes zero at this number of seeds.")]
    for step, r in table_.iterrows():
        agree = (r["ΔmAP"] > 0) == (r["ΔmAP (paper)"] > 0)
        lines.append(f"  {step}: {r['ΔmAP']:+.4f} here vs {r['ΔmAP (paper)']:+.4f} in the paper, "
                     f"{'same sign' if agree else 'opposite sign'}")
    return "\n".join(lines)


def sensitivity_figure(ch, weights, alphas):
    import matplotlib.pyplot as plt

    from ..plots import seed_bars

    store = results_store(ch.cfg)
    fig, axes = plt.subplots(1, 2, figsize=(11, 2.8))
    seed_bars(seed_summary(store, "table4"), "mAP", rows=[r["name"] for r in weights.rows], ax=axes[0])
    seed_bars(seed_summary(store, "table5"), "mAP", rows=[r["name"] for r in alphas.rows], ax=axes[1])
    return fig


def sensitivity_text(ch) -> str:
    """Best setting and spread of Tables 4 and 5, against the widest seed interval."""
    store = results_store(ch.cfg)
    lines = []
    for name, what in (("table4", "w"), ("table5", "α")):
        m = seed_means(store, name)["mAP"]
        s = seed_summary(store, name, ["mAP"]).set_index("row")
        spread, widest = m.max() - m.min(), (s["high"] - s["low"]).max()
        if pd.isna(widest):
            verdict = f"interval: none with {len(ch.cfg.seeds)} seed, so no verdict on noise."
        else:
            verdict = f"widest 95% interval {widest:.4f}: " + ("the setting matters more than the seed noise here."
                                                               if spread > widest / 2 else
                                                               "the differences are within the seed noise.")
        lines.append(f"{what}: best {m.idxmax()} ({m.max():.4f} mAP), spread between settings {spread:.4f}; {verdict}")
    return "\n".join(lines)


def released_comparison(ch, tcfg):
    """The paper's text against the released code (issue 14): every row trained with the synthetic
    set on the same data and seeds, scored under the same conventions on the test split; the table,
    the paired differences to the text reading, and a sentence."""
    from ..released import TEXT

    result = table(ch, "released")
    store = results_store(ch.cfg)
    names = [r["name"] for r in result.rows]
    ours = seed_table(store, "released", METRICS + ["mAUC tail"], rows=names)
    ours.insert(0, "what changes", pd.Series({r["name"]: r["meta"].get("changes", "") for r in result.rows}))
    diffs = pd.concat({m: paired_differences(store, "released", TEXT, m) for m in ("mAP", "mAUC tail")}, axis=1)
    moved = [row for row in diffs.index if diffs.loc[row, ("mAP", "sure")] or diffs.loc[row, ("mAUC tail", "sure")]]
    text = ("Rows whose interval against the text reading excludes zero (mAP or tail mAUC): "
            + (", ".join(moved) if moved else "none at this number of seeds") + ".")
    if tcfg.train.finetune_epochs == 0:
        text += (" This profile trains the heads only (the paper's stage 1, on the frozen backbone), so the "
                 "behaviours of the released fine-tuning stage cannot act: EMA starts at fine-tuning, so the "
                 "'+ EMA' row is the text reading; and the released reading gives synthetic images weight 0 "
                 "outside fine-tuning, so its synthetic images never count here.")
    return ours, diffs.round(4), text, benchmark_note(tcfg, "No paper column: the paper reports one reading.")
