"""The tables' stage (chapters 3-7): every (row, seed) run of a table (:mod:`trcgl.tables` says
which configurations and extra training images), scored on the test split, with intervals that
resample seeds and test label rows together, paired differences and the chance levels.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..cache import atomic_write_json
from ..graph import Request, StageError, stage
from .classifiers import classifier, predictions
from .common import _groups, get
from .data import cohort, selection_set, test_set, train_set
from .inpainting import inpainted_set
from .prompt_diffusion import CONTROL_KINDS, control_set, ideal_set, synthetic_set, unlabelled_set

# ----------------------------------------------------------------------------- tables

TABLE_READS = ("eval.f1_threshold", "eval.f1_thresholds", "eval.empty_classes", "eval.bootstrap", "eval.interval")
INTERVAL_METRICS = ("mAP", "mAUC", "macro-F1", "mAP head", "mAP medium", "mAP tail", "mAUC head", "mAUC medium", "mAUC tail")


@dataclass
class TableResult:
    name: str
    records: list[dict]                 # per (row, seed, metric) values, intervals, differences, chance; test split
    rows: list[dict]                    # name, meta, unavailable
    seeds: list[int]
    probs: dict                         # (row, seed) -> test probabilities (N, C)
    runs: dict                          # (row, seed) -> classifier Request (resolve for the model)
    thresholds: dict                    # (row, seed) -> per-class F1 thresholds (C,), chosen on selection


def _row_seed(key: str) -> tuple[str, int]:
    """``"row|seed"`` (how a table stores its runs' arrays) -> (row, seed)."""
    row, seed = key.split("|", 1)
    return row, int(seed)


def _load_table_result(ctx):
    meta = json.loads((ctx.work / "table.json").read_text())
    with np.load(ctx.work / "probs.npz", allow_pickle=False) as z:
        probs = {_row_seed(k): z[k] for k in z.files}
    thresholds = {_row_seed(k): np.asarray(v, float) for k, v in meta.get("thresholds", {}).items()}
    return TableResult(meta["name"], meta["records"], meta["rows"], meta["seeds"], probs, {}, thresholds)


@stage("table", reads=TABLE_READS, modules=("trcgl.metrics", "trcgl.seedtables", "trcgl.tables"),
       load=_load_table_result)
def _table(ctx):
    """Every (row, seed) of a table scored on the test split: per-seed values, intervals that
    resample seeds and test label rows together, paired differences, and the chance levels. F1
    is scored at each run's per-class thresholds (``eval.f1_thresholds``: chosen on the selection
    split from that run's selection probabilities, or ``eval.f1_threshold`` for all)."""
    import io

    from ..cache import atomic_write_bytes
    from ..metrics import evaluate, f1_thresholds
    from ..seedtables import METRICS, bootstrap_records, chance_levels
    from .classifiers import selection_probs

    test, select = ctx.inputs["test"], ctx.inputs["select"]
    groups = _groups(ctx.inputs["cohort"])
    e = ctx.cfg.eval
    seeds = ctx.params["seeds"]
    records, probs, thresholds = [], {}, {}
    names = [row["name"] for row in ctx.params["rows"] if not row["unavailable"]]
    for name in names:
        for seed in seeds:
            P = ctx.inputs[f"run|{name}|{seed}"]
            chosen = selection_probs(ctx.artifacts[f"model|{name}|{seed}"])
            if chosen.shape != select.Y.shape:
                raise StageError(f"table {ctx.params['name']}: {name} (seed {seed}) has selection probabilities "
                                 f"of shape {chosen.shape} for a selection split of {select.Y.shape}")
            thr = thresholds[(name, seed)] = f1_thresholds(e.f1_thresholds, select.Y, chosen, e.f1_threshold)
            ev = evaluate(test.Y, P, test.classes, groups, thr, empty=e.empty_classes)
            for metric in METRICS:
                records.append({"row": name, "metric": metric, "value": float(ev.means[metric]), "seed": int(seed),
                                "group": None, "split": "test", "kind": "seed"})
            probs[(name, seed)] = P.astype(np.float32)
    records += [{**r, "group": None, "split": "test"} for r in
                bootstrap_records(test.Y, probs, test.rows["ImageID"].to_numpy(), groups, names, seeds,
                                  INTERVAL_METRICS, n=e.bootstrap, seed=0, method=e.interval,
                                  threshold=thresholds)]
    chance = chance_levels(test.Y, groups)
    records += [{"row": "chance (random scores)", "metric": m, "value": float(chance[m]), "seed": None, "group": None,
                 "split": "test", "kind": "chance"} for m in INTERVAL_METRICS if m in chance]
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{r}|{s}": P for (r, s), P in probs.items()})
    atomic_write_bytes(ctx.work / "probs.npz", buffer.getvalue())
    atomic_write_json(ctx.work / "table.json", {"name": ctx.params["name"], "records": records,
                                                "rows": ctx.params["rows"], "seeds": seeds,
                                                "thresholds": {f"{r}|{s}": t.tolist() for (r, s), t in thresholds.items()}})


# ----------------------------------------------------------------------------- requests

def extra_request(cfg, extra) -> Request | None:
    """The stage request of a table row's :class:`~trcgl.tables.Extra`."""
    from ..tables import (COPIES, IDEAL_BARE, IDEAL_HIDDEN, INPAINTED, INPAINTED_UNGUARDED, SYNTHETIC,
                          UNFILTERED_AT_INPAINTED, UNGUARDED_AT_GUARDED, dose_scale, tables_config)

    if extra is None:
        return None

    def at_inpainted_count(source: Request) -> Request:
        return Request("count-matched-set", cfg, seed=int(cfg.seed), source=source, like=inpainted_set(cfg))

    kinds = {SYNTHETIC: lambda: synthetic_set(cfg), INPAINTED: lambda: inpainted_set(cfg),
             INPAINTED_UNGUARDED: lambda: inpainted_set(cfg, guard="off"),
             **{kind: (lambda k: lambda: control_set(cfg, k))(kind) for kind in CONTROL_KINDS},
             IDEAL_HIDDEN: lambda: ideal_set(cfg, 1.0, lesions=False),
             IDEAL_BARE: lambda: unlabelled_set(cfg),
             UNFILTERED_AT_INPAINTED: lambda: at_inpainted_count(control_set(cfg, "unfiltered")),
             UNGUARDED_AT_GUARDED: lambda: at_inpainted_count(inpainted_set(cfg, guard="off")),
             COPIES: lambda: Request("copies-set", cfg, train=train_set(tables_config(cfg)),
                                     inpainted=inpainted_set(cfg))}
    parts = []
    for kind, weight, progressive in extra.parts:
        scale = dose_scale(kind)
        if scale is not None:
            parts.append((ideal_set(cfg, scale), weight, progressive))
            continue
        if kind not in kinds:
            raise StageError(f"unknown extra images {kind!r} (known: {', '.join(kinds)})")
        parts.append((kinds[kind](), weight, progressive))
    if len(parts) == 1 and parts[0][1] is None and parts[0][2] is None:
        return parts[0][0]
    return Request("extra-set", cfg, overrides=[[w, p] for _, w, p in parts],
                   **{f"part{k}": r for k, (r, _, _) in enumerate(parts)})


def row_run(cfg, row, seed: int) -> Request:
    """The classifier request of one (row, seed) of a table."""
    return classifier(row.cfg, seed=seed, extra=extra_request(cfg, row.extra))


def table(cfg, name: str, seeds=None) -> Request:
    """Every (row, seed) run of a table, scored on the test split (chapters 3-7)."""
    from ..tables import table_rows

    rows = table_rows(cfg, name)
    seeds = [int(s) for s in (cfg.seeds if seeds is None else seeds)]
    if not seeds:
        raise StageError("a table needs at least one seed (config key 'seeds')")
    runs = {}
    for row in rows:
        if row.unavailable:
            continue
        for s in seeds:
            model = row_run(cfg, row, s)
            runs[f"run|{row.name}|{s}"] = predictions(model, test_set(row.cfg))
            runs[f"model|{row.name}|{s}"] = model       # its selection probabilities choose the F1 thresholds
    row_meta = [{"name": r.name, "meta": r.meta, "unavailable": r.unavailable} for r in rows]
    return Request("table", cfg, name=name, seeds=seeds, rows=row_meta, cohort=cohort(cfg), test=test_set(cfg),
                   select=selection_set(cfg), **runs)


def table_result(cfg, name: str, seeds=None, cache=None) -> TableResult:
    """A table's results, published into the profile's results store (chapters 3-7)."""
    from ..seedtables import publish, results_store
    from ..tables import table_rows

    req = table(cfg, name, seeds)
    result = get(req, cache)
    rows = {r.name: r for r in table_rows(cfg, name)}
    result.runs = {(r, s): row_run(cfg, rows[r], s) for (r, s) in result.probs}
    publish(results_store(cfg), name, result.records)
    return result
