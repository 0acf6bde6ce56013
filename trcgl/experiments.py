"""Multi-seed experiments and the tables built from them (Tables 1-5 of the paper).

:func:`run_rows` trains (or loads from the cache) every row of a table for every seed and writes
each metric of each run into the :class:`~trcgl.results.ResultsStore`; the tables are then built
from the store only (:func:`seed_summary`, :func:`seed_table`, :func:`paired_differences`), so a
table can never show a number that the run did not record. The paper's values come from
:mod:`trcgl.paper` and are joined in columns labelled as the paper's (:func:`with_paper`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .metrics import aggregate_seeds, evaluate
from .results import ResultsStore

METRICS = ("mAP", "mAUC", "macro-F1", "mAP head", "mAP medium", "mAP tail", "mAUC head", "mAUC medium", "mAUC tail")


@dataclass
class Row:
    """One row of a table: a configuration, optionally an extra (synthetic) training set, or the
    reason it cannot run here (then it shows that reason instead of numbers)."""

    name: str
    cfg: object = None
    extra: object = None
    unavailable: str | None = None
    meta: dict = field(default_factory=dict)


def results_store(cfg) -> ResultsStore:
    """The run's results file for a profile: ``<run dir>/results-<profile>.json``."""
    from .cache import default_run_dir

    return ResultsStore(default_run_dir() / f"results-{cfg.profile}.json")


def run_rows(store: ResultsStore, table: str, rows, train_set, val_set, groups, seeds, cache=None,
             progress: bool = True) -> dict:
    """Train every available row for every seed; record ``METRICS`` per (row, seed). Returns
    ``{(row name, seed): TrainResult}``."""
    from tqdm import tqdm

    from .train import train_classifier

    store.drop(table)   # this run's numbers only
    runs = {}
    todo = [(r, s) for r in rows if r.unavailable is None for s in seeds]
    for row, seed in tqdm(todo, desc=f"{table}: rows x seeds", unit="run", disable=not progress):
        result = train_classifier(row.cfg, train_set, val_set, groups, extra=row.extra, seed=seed, cache=cache)
        ev = evaluate(val_set.Y, result.val_probs, train_set.classes, groups, row.cfg.eval.f1_threshold,
                      empty=row.cfg.eval.empty_classes)
        for metric in METRICS:
            store.add(table, row.name, metric, ev.means[metric], seed=int(seed))
        runs[(row.name, seed)] = result
    return runs


def seed_summary(store: ResultsStore, table: str, metrics=METRICS, level: float = 0.95) -> pd.DataFrame:
    """Long form: row, metric, mean over seeds, t-interval (low, high), number of seeds."""
    df = store.frame(table)
    if df.empty:
        raise KeyError(f"no records for table '{table}' in {store.path}")
    out = []
    for (row, metric), g in df[df.metric.isin(metrics)].groupby(["row", "metric"], sort=False):
        agg = aggregate_seeds(g.sort_values("seed")["value"].tolist(), level)
        out.append({"row": row, "metric": metric, **agg})
    return pd.DataFrame(out)


def seed_table(store: ResultsStore, table: str, metrics=METRICS, rows=None, digits: int = 3,
               notes: dict | None = None) -> pd.DataFrame:
    """Wide form for the book: "mean [low, high]" per row and metric (rows in ``rows`` order; a
    row with a note, e.g. one that needs unavailable weights, shows the note instead)."""
    s = seed_summary(store, table, metrics)
    order = list(rows) if rows is not None else list(dict.fromkeys(s.row))

    def cell(r):
        if r.n == 0:
            return "—"
        if r.n == 1 or np.isnan(r.low):
            return f"{r['mean']:.{digits}f}"
        return f"{r['mean']:.{digits}f} [{r.low:.{digits}f}, {r.high:.{digits}f}]"

    wide = s.assign(cell=s.apply(cell, axis=1)).pivot(index="row", columns="metric", values="cell")
    wide = wide.reindex(index=order, columns=[m for m in metrics if m in set(s.metric)])
    for row, note in (notes or {}).items():
        if row in wide.index:
            wide.loc[row] = note
        else:
            wide.loc[row] = [note] * wide.shape[1]
    wide.columns.name = None
    wide.index.name = None
    n = s.groupby("row")["n"].max()
    wide.insert(0, "seeds", [int(n.get(r, 0)) for r in wide.index])
    return wide


def seed_means(store: ResultsStore, table: str, metrics=METRICS) -> pd.DataFrame:
    """Numeric means over seeds (rows × metrics), for computed prose and plots."""
    s = seed_summary(store, table, metrics)
    wide = s.pivot(index="row", columns="metric", values="mean")
    return wide.reindex(index=list(dict.fromkeys(s.row)), columns=[m for m in metrics if m in set(s.metric)])


def paired_differences(store: ResultsStore, table: str, reference: str, metric: str = "mAP",
                       level: float = 0.95) -> pd.DataFrame:
    """Per row: the difference to ``reference`` on the same seeds (mean, t-interval) and the
    number of seeds on which the row is better; ``sure`` when the interval excludes 0."""
    df = store.frame(table)
    df = df[df.metric == metric].pivot_table(index="seed", columns="row", values="value")
    if reference not in df:
        raise KeyError(f"table '{table}' has no row '{reference}' for {metric}")
    out = []
    for row in [c for c in dict.fromkeys(store.frame(table)["row"]) if c in df and c != reference]:
        pair = df[[row, reference]].dropna()
        d = (pair[row] - pair[reference]).to_numpy()
        agg = aggregate_seeds(d, level)
        out.append({"row": row, f"Δ{metric} vs {reference}": agg["mean"], "low": agg["low"], "high": agg["high"],
                    "better on seeds": f"{int((d > 0).sum())}/{len(d)}",
                    "sure": bool(len(d) > 1 and (agg["low"] > 0 or agg["high"] < 0))})
    return pd.DataFrame(out).set_index("row") if out else pd.DataFrame()


def with_paper(ours: pd.DataFrame, paper: pd.DataFrame, names: dict | None = None) -> pd.DataFrame:
    """Our table beside the paper's values (columns already labelled "(paper)"); ``names`` maps
    our row names to the paper's."""
    names = names or {}
    ref = paper.reindex([names.get(r, r) for r in ours.index])
    ref.index = ours.index
    return pd.concat([ours, ref], axis=1)


# ----------------------------------------------------------------------------- the rows of Tables 1-5

def tables_config(cfg):
    """The configuration of the table runs: ``tables`` overrides of data size and epochs."""
    t, over = cfg.tables, {}
    if t.n_train is not None:
        over["data.n_train"] = t.n_train
    if t.warmup_epochs is not None:
        over["train.warmup_epochs"] = t.warmup_epochs
    if t.finetune_epochs is not None:
        over["train.finetune_epochs"] = t.finetune_epochs
    return cfg.replace(over)


def gap_only(cfg):
    """The ConvNeXt baseline of the tables: TRCGL-Net's backbone and feature stage, GAP + linear."""
    return cfg.replace({"model.channel_gate": False, "model.spatial_attention": False, "model.label_gcn": False})


def with_weight(image_set, weight: float):
    """A copy of an image set whose every sample has loss weight ``weight``."""
    import dataclasses

    return dataclasses.replace(image_set, weights=np.full(len(image_set), weight, np.float32))


def table1_rows(cfg, synthetic) -> list[Row]:
    """Table 1 (names as in the paper). ConvNeXt rows share TRCGL-Net's backbone and feature
    stage; ResNet, EfficientNet and ViT are whole timm networks; CLIP needs local weights."""
    t = cfg.tables
    drw = cfg.train.warmup_epochs + int(round(2 * cfg.train.finetune_epochs / 3))
    timm = lambda name: cfg.replace({"model.arch": "timm", "model.backbone": name})  # noqa: E731
    rows = [
        Row("ConvNeXt", gap_only(cfg), meta={"model here": f"{cfg.model.backbone}, GAP + linear"}),
        Row("ResNet", timm(t.resnet), meta={"model here": t.resnet}),
        Row("EfficientNet", timm(t.efficientnet), meta={"model here": t.efficientnet}),
        Row("ViT", timm(t.vit), meta={"model here": t.vit}),
    ]
    if cfg.paths.clip_image_encoder:
        rows.append(Row("CLIP", cfg.replace({"model.arch": "clip"}), meta={"model here": "CLIP image encoder (local)"}))
    else:
        rows.append(Row("CLIP", unavailable="needs pretrained CLIP weights", meta={"model here": "—"}))
    rows += [
        Row("ConvNeXt + LDAM", gap_only(cfg).replace({"model.head": "cosine", "train.loss": "ldam", "train.drw_epoch": drw}),
            meta={"model here": f"cosine head, LDAM, DRW from epoch {drw + 1}"}),
        Row("ConvNeXt + CSRA", cfg.replace({"model.arch": "csra"}), meta={"model here": f"{cfg.model.backbone} + CSRA head"}),
        Row("Ours", cfg, extra=synthetic, meta={"model here": "TRCGL-Net + filtered synthetic tail images"}),
    ]
    return rows


def ablation_rows(cfg, synthetic) -> list[Row]:
    """Table 3, as in the paper: its baseline is ConvNeXt + CSRA (the same numbers as Table 1's
    CSRA row), then + prompt diffusion, then channel-class attention instead of CSRA, then the GCN."""
    cca = cfg.replace({"model.label_gcn": False})
    return [Row("baseline", cfg.replace({"model.arch": "csra"})),
            Row("+ prompt diffusion", cfg.replace({"model.arch": "csra"}), extra=synthetic),
            Row("+ channel-class attention", cca, extra=synthetic),
            Row("+ label GCN (full)", cfg, extra=synthetic)]


def weight_rows(cfg, synthetic) -> list[Row]:
    """Table 4: the full model with the synthetic images weighted w."""
    return [Row(f"w = {w:g}", cfg, extra=with_weight(synthetic, w), meta={"paper key": float(w)})
            for w in cfg.tables.synthetic_weights]


def alpha_rows(cfg, synthetic) -> list[Row]:
    """Table 5: the full model with fusion strength α."""
    return [Row(f"α = {a:g}", cfg.replace({"model.alpha": float(a)}), extra=synthetic, meta={"paper key": float(a)})
            for a in cfg.tables.alphas]


@dataclass
class TableData:
    """What the results chapters train on: the table configuration and training set, the shared
    validation set, and the filtered synthetic tail set of the prompt-diffusion chapter."""

    cfg: object                 # the table configuration (tables_config)
    cohort: object
    train_set: object           # the table runs' training images
    val_set: object
    synthetic: object           # kept synthetic images, weight diffusion.synthetic_weight


def table_data(cfg, cache=None) -> TableData:
    """Load (from the cache, when the earlier chapters ran) everything the table runs need: the
    synthetic set exactly as the prompt-diffusion chapter made it, and the table training set."""
    from .data.datasets import load_splits
    from .diffusion.synthetic import synthetic_training_set
    from .diffusion.training import train_prompt_diffusion
    from .train import train_classifier
    from .variants import GAP_ONLY, component_variants

    cohort, train_full, val_set = load_splits(cfg, cache)
    run = train_prompt_diffusion(cfg, cohort.class_set, train_full, val_set, cache=cache)
    filter_run = train_classifier(component_variants(cfg)[GAP_ONLY], train_full, val_set, cohort.groups, cache=cache)
    synthetic = synthetic_training_set(cfg, cohort, train_full, run, filter_run, cache).kept
    tcfg = tables_config(cfg)
    _, train_set, _ = load_splits(tcfg, cache)
    return TableData(tcfg, cohort, train_set, val_set, synthetic)


def benchmark_note(cfg, reference: str = "The paper's columns: real PadChest, pretrained backbones, one run.") -> str:
    """The one line under each table that says what our numbers are measured on (and the
    reference columns beside them)."""
    where = ("phantom radiographs rendered from real PadChest label rows" if cfg.data.source == "phantom"
             else "real PadChest images")
    start = "a local checkpoint" if cfg.model.checkpoint else "random initialisation"
    return (f"Ours: {where}, {cfg.data.image_size}px, backbones from {start}, mean [95% interval] over seeds "
            f"{list(cfg.seeds)}. {reference}")
