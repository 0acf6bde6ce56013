"""Tables over seeds: every metric of every (row, seed) run in the results store, summarised
with intervals and paired differences; the tables are built from the store only, so a table can
never show a number that the run did not record.

The generic engine of the results chapters: :mod:`trcgl.tables` says which rows a table trains,
the ``table`` stage of :mod:`trcgl.stages` trains them and scores them on the test split, and
:func:`publish` writes its records into the profile's results store
(``runs/results-<profile>.json``). The paper's values come from :mod:`trcgl.paper` and are
joined in columns labelled as the paper's (:func:`with_paper`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import aggregate_seeds
from .results import ResultsStore

METRICS = ("mAP", "mAUC", "macro-F1", "mAP head", "mAP medium", "mAP tail", "mAUC head", "mAUC medium", "mAUC tail")


def results_store(cfg) -> ResultsStore:
    """The run's results file for a profile: ``<run dir>/results-<profile>.json``."""
    from .cache import default_run_dir

    return ResultsStore(default_run_dir() / f"results-{cfg.profile}.json")


def publish(store: ResultsStore, table: str, records: list[dict]) -> None:
    """Replace ``table``'s records in the store with ``records`` (a table stage's output); under a
    launcher only the main process writes (every process resolved the same tables)."""
    from .runtime import processes

    if processes().is_main:
        store.replace_table(table, records)


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
