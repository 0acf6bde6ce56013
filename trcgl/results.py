"""Results store: the JSON file that every table of the book is built from.

A record is one number: ``table``, ``row``, ``metric``, ``value`` and optional ``seed`` and
``group`` (head / medium / tail / all). Adding a record with the same identity replaces the old
one, so re-running a chapter updates its numbers instead of duplicating them. The paper's own
reported values never enter this store; they live beside it as labelled reference data.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .cache import atomic_write_json

IDENTITY = ("table", "row", "metric", "seed", "group")


class ResultsStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._records: list[dict] = []
        self._load()

    def _load(self) -> None:
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except ValueError as err:   # truncated or garbled (a copy cut short, a disk error): set aside
                from .checkpoints import set_aside

                set_aside(self.path, f"not JSON: {err}", what="results file",
                          then="starting it afresh (a table's records come back when its target runs again)")
                self._records = []
                return
            if not isinstance(data, dict) or not isinstance(data.get("records"), list):
                raise ValueError(f"{self.path} is not a trcgl results file (no 'records' list)")
            self._records = data["records"]

    def replace_table(self, table: str, records: list[dict]) -> None:
        """Make ``records`` the whole of ``table`` (a table stage's output). Safe when several
        processes publish tables at once (a file lock; the file is re-read under it), and the file
        is canonical: tables in name order, each table's records in the order given, so the
        same results give the same file whatever order the tables were published in."""
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            self._load()
            rest = [r for r in self._records if r["table"] != table]
            mine = [{"table": table, **{k: v for k, v in r.items() if k != "table"}} for r in records]
            order = {name: i for i, name in enumerate(sorted({r["table"] for r in rest + mine}))}
            self._records = sorted(rest + mine, key=lambda r: order[r["table"]])   # stable within a table
            self.save()

    def add(self, table: str, row: str, metric: str, value: float, seed: int | None = None,
            group: str | None = None, **meta: Any) -> None:
        """Record one number and save the store."""
        value = float(value)
        rec = {"table": table, "row": row, "metric": metric, "value": value,
               "seed": seed, "group": group, **meta}
        key = tuple(rec[k] for k in IDENTITY)
        self._records = [r for r in self._records if tuple(r.get(k) for k in IDENTITY) != key]
        self._records.append(rec)
        self.save()

    def drop(self, table: str) -> int:
        """Forget every record of ``table`` (a chapter starts its tables afresh); returns how many."""
        before = len(self._records)
        self._records = [r for r in self._records if r["table"] != table]
        self.save()
        return before - len(self._records)

    def save(self) -> None:
        atomic_write_json(self.path, {"records": self._records})

    def records(self, table: str | None = None) -> list[dict]:
        return [dict(r) for r in self._records if table is None or r["table"] == table]

    def frame(self, table: str | None = None) -> pd.DataFrame:
        rows = self.records(table)
        cols = ["table", "row", "metric", "value", "seed", "group"]
        return pd.DataFrame(rows, columns=cols if not rows else None)

    def table(self, table: str, index: str = "row", columns: str = "metric") -> pd.DataFrame:
        """A pivoted table (mean over any seeds) in the order the rows were first added."""
        df = self.frame(table)
        if df.empty:
            raise KeyError(f"no records for table '{table}' in {self.path}")
        order = list(dict.fromkeys(df[index]))
        corder = list(dict.fromkeys(df[columns]))
        out = df.pivot_table(index=index, columns=columns, values="value", aggfunc="mean")
        return out.reindex(index=order, columns=corder)
