"""What several chapters show: a table's per-row means and the runs behind it."""
from __future__ import annotations

import pandas as pd

from .. import stages as S


def table(ch, name: str, seeds=None):
    """A table stage's result (resolved, published into the results store)."""
    return S.table_result(ch.cfg, name, seeds, ch.cache)


def row_means(result) -> pd.DataFrame:
    """Per row: every metric's mean over the table's seeds (rows in the table's order)."""
    df = pd.DataFrame(result.records)
    df = df[df["kind"].fillna("seed") == "seed"] if "kind" in df else df
    out = df.pivot_table(index="row", columns="metric", values="value", aggfunc="mean")
    order = [r["name"] for r in result.rows if r["name"] in out.index]
    return out.reindex(index=order, columns=list(dict.fromkeys(df.metric)))


def run(ch, result, row: str, seed: int):
    """The trained classifier (TrainResult) of one (row, seed) of a table."""
    return ch.get(result.runs[(row, seed)])
