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


def _records(store: ResultsStore, table: str, kind: str) -> pd.DataFrame:
    """A table's records of one kind: ``seed`` (one number per row, seed and metric; records
    without a kind are seed records), ``interval``, ``difference`` or ``chance``."""
    df = pd.DataFrame(store.records(table))
    if df.empty:
        raise KeyError(f"no records for table '{table}' in {store.path}")
    kinds = df["kind"].fillna("seed") if "kind" in df else pd.Series("seed", index=df.index)
    return df[kinds == kind]


def seed_summary(store: ResultsStore, table: str, metrics=METRICS, level: float = 0.95) -> pd.DataFrame:
    """Long form: row, metric, mean over seeds, interval (low, high), number of seeds. The interval
    is the table stage's (resampling seeds and test label rows together) where it recorded one,
    otherwise a t-interval over the seeds."""
    seeds = _records(store, table, "seed")
    intervals = _records(store, table, "interval")
    given = {(r.row, r.metric): r for r in intervals.itertuples()}
    out = []
    for (row, metric), g in seeds[seeds.metric.isin(metrics)].groupby(["row", "metric"], sort=False):
        agg = aggregate_seeds(g.sort_values("seed")["value"].tolist(), level)
        if (row, metric) in given:
            r = given[(row, metric)]
            agg = {"mean": r.value, "low": r.low, "high": r.high, "n": agg["n"]}
        out.append({"row": row, "metric": metric, **agg})
    return pd.DataFrame(out)


def chance_row(store: ResultsStore, table: str, metrics=METRICS) -> dict:
    """The chance level of each metric the table stage recorded (random scores on the test split)."""
    try:
        df = _records(store, table, "chance")
    except KeyError:
        return {}
    return {r.metric: r.value for r in df.itertuples() if r.metric in metrics}


CHANCE = "chance (random scores)"


def seed_table(store: ResultsStore, table: str, metrics=METRICS, rows=None, digits: int = 3,
               notes: dict | None = None) -> pd.DataFrame:
    """Wide form for the book: "mean [low, high]" per row and metric (rows in ``rows`` order; a
    row with a note, e.g. one that needs unavailable weights, shows the note instead), and the
    chance level of each metric in a last row when the table stage recorded it."""
    s = seed_summary(store, table, metrics)
    order = list(rows) if rows is not None else list(dict.fromkeys(s.row))

    def cell(r):
        if r.n == 0:
            return "—"
        if np.isnan(r.low):
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
    chance = chance_row(store, table, metrics)
    if chance:
        wide.loc[CHANCE] = ["—"] + [f"{chance[m]:.{digits}f}" if m in chance else "—" for m in wide.columns[1:]]
    return wide


def seed_means(store: ResultsStore, table: str, metrics=METRICS) -> pd.DataFrame:
    """Numeric means over seeds (rows × metrics), for computed prose and plots."""
    s = seed_summary(store, table, metrics)
    wide = s.pivot(index="row", columns="metric", values="mean")
    return wide.reindex(index=list(dict.fromkeys(s.row)), columns=[m for m in metrics if m in set(s.metric)])


def paired_differences(store: ResultsStore, table: str, reference: str, metric: str = "mAP",
                       level: float = 0.95) -> pd.DataFrame:
    """Per row: the difference to ``reference`` on the same seeds (mean and interval) and the
    number of seeds on which the row is better; ``sure`` when the interval excludes 0. The interval
    is the table stage's paired one (seeds and test label rows resampled together, both rows on the
    same resample) where it recorded one, otherwise a paired t-interval over the seeds."""
    seeds = _records(store, table, "seed")
    df = seeds[seeds.metric == metric].pivot_table(index="seed", columns="row", values="value")
    if reference not in df:
        raise KeyError(f"table '{table}' has no row '{reference}' for {metric}")
    try:
        recorded = _records(store, table, "difference")
        recorded = {r.row: r for r in recorded[(recorded.metric == metric) & (recorded.reference == reference)].itertuples()}
    except (KeyError, AttributeError):
        recorded = {}
    out = []
    for row in [c for c in dict.fromkeys(seeds["row"]) if c in df and c != reference]:
        pair = df[[row, reference]].dropna()
        d = (pair[row] - pair[reference]).to_numpy()
        agg = aggregate_seeds(d, level)
        if row in recorded:
            r = recorded[row]
            agg = {"mean": r.value, "low": r.low, "high": r.high}
        out.append({"row": row, f"Δ{metric} vs {reference}": agg["mean"], "low": agg["low"], "high": agg["high"],
                    "better on seeds": f"{int((d > 0).sum())}/{len(d)}",
                    "sure": bool(not np.isnan(agg["low"]) and (agg["low"] > 0 or agg["high"] < 0))})
    return pd.DataFrame(out).set_index("row") if out else pd.DataFrame()


def with_paper(ours: pd.DataFrame, paper: pd.DataFrame, names: dict | None = None) -> pd.DataFrame:
    """Our table beside the paper's values (columns already labelled "(paper)"); ``names`` maps
    our row names to the paper's."""
    names = names or {}
    ref = paper.reindex([names.get(r, r) for r in ours.index])
    ref.index = ours.index
    return pd.concat([ours, ref], axis=1)


# ----------------------------------------------------------------------------- intervals over seeds and test rows

def chance_levels(Y: np.ndarray, groups) -> dict:
    """What random scores reach on an evaluation set: AUC 0.5 for every class, and AP equal to
    the class's prevalence (classes without positives left out, as in the means)."""
    from .metrics import _group_means

    Y = np.asarray(Y)
    prevalence = Y.mean(0).astype(float)
    defined = (Y.sum(0) > 0) & (Y.sum(0) < len(Y))
    return _group_means({"mAP": np.where(defined, prevalence, np.nan), "mAUC": np.where(defined, 0.5, np.nan)}, groups)


def resampled_means(Y: np.ndarray, probs: dict, clusters, groups, rows, seeds, metrics, n: int = 500,
                    seed: int = 0, threshold: float | dict | None = None, jackknife: bool = False):
    """Each row's metrics (mAP / mAUC, and macro-F1 at ``threshold``: one for all, or per (row, seed)
    an array of per-class thresholds; overall or per group)
    averaged over ``seeds``: on the whole test set, and on ``n`` joint resamples of the seeds and
    the test **label rows** (:func:`trcgl.resampling.resamples`; ``clusters``: images rendered
    from the same label row, e.g. a rare row repeated on new anatomy, move together). In a resample
    a row's value is its metric averaged over the drawn seeds (each as often as drawn), on the
    drawn test rows; every row is scored on the same resamples, and the resamples depend only on
    (``clusters``, ``seeds``, ``n``, ``seed``), so any two statistics from them are paired.
    Returns ``point[row][metric]`` and ``draws[metric]``, an array (n, rows); with ``jackknife``
    also ``jack[metric]``: the leave-one-seed-out (seeds, rows) and leave-one-label-row-out
    (clusters, rows) values that BCa's acceleration needs (as many evaluations as label rows)."""
    from .metrics import RankedScores, group_means
    from .resampling import resamples

    Y, rows, seeds = np.asarray(Y), list(rows), list(seeds)
    R, S, C = len(rows), len(seeds), Y.shape[1]
    stacked = np.hstack([np.asarray(probs[(r, s)], float) for r in rows for s in seeds])
    ranked = RankedScores(np.tile(Y, R * S), stacked)
    f1 = any(m.startswith("macro-F1") for m in metrics)
    if f1:
        if threshold is None:
            raise ValueError("macro-F1 intervals need the F1 threshold")
        if isinstance(threshold, dict):
            threshold = np.concatenate([np.broadcast_to(np.asarray(threshold[(r, s)], float), (C,))
                                        for r in rows for s in seeds])
        predicted = stacked >= threshold
        hits = (predicted & np.tile(Y.astype(bool), R * S)).astype(np.float32)
        predicted, labels = predicted.astype(np.float32), Y.astype(np.float32)

    def values(weights, counts) -> dict:
        ap, auc = ranked.scores(weights)
        scores = {"mAP": ap.reshape(R, S, C), "mAUC": auc.reshape(R, S, C)}
        if f1:
            w = np.ones(len(Y), np.float32) if weights is None else np.asarray(weights, np.float32)
            positives = np.tile(w @ labels, R * S).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                f = 2.0 * (w @ hits) / (positives + w @ predicted)
            scores["macro-F1"] = np.where(positives > 0, f, np.nan).reshape(R, S, C)
        per_run = group_means(scores, groups)
        out = {}
        for m in metrics:
            v = per_run[m]
            c = np.where(np.isfinite(v), counts, 0.0)
            total = np.where(np.isfinite(v), v, 0.0) @ counts
            out[m] = np.where(c.sum(1) > 0, total / np.maximum(c.sum(1), 1e-300), np.nan)
        return out

    whole = values(None, np.ones(S))
    point = {r: {m: float(whole[m][i]) for m in metrics} for i, r in enumerate(rows)}
    draws = {m: [] for m in metrics}
    for counts, weights in resamples(clusters, seeds, n, seed):
        for m, v in values(weights, counts).items():
            draws[m].append(v)
    draws = {m: np.asarray(d, float).reshape(n, R) for m, d in draws.items()}
    if not jackknife:
        return point, draws
    ids, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    by_seed = [values(None, (np.arange(S) != k).astype(float)) for k in range(S)] if S > 1 else []
    by_row = [values((inverse.ravel() != k).astype(float), np.ones(S)) for k in range(len(ids))]
    jack = {m: [np.asarray([v[m] for v in by]).reshape(-1, R) for by in (by_seed, by_row) if by] for m in metrics}
    return point, draws, jack


def interval_method_text(cfg_or_records, level: float = 0.95, units: str = "seeds and test label rows") -> str:
    """How the tables' intervals are computed, for the pages: e.g. "95 % bias-corrected percentile
    (BC) bootstrap intervals over 1,000 resamples of seeds and test label rows". Reads a config
    (``eval.interval``, ``eval.bootstrap``) or a table's records (their ``interval`` and
    ``resamples``; records written before the method was recorded were percentile intervals)."""
    from .resampling import INTERVAL_NAMES

    if isinstance(cfg_or_records, (list, tuple)):
        resampled = [r for r in cfg_or_records if r.get("kind") in ("interval", "difference")]
        if not resampled:
            return "t-intervals over seeds (no resampled intervals recorded)"
        names, counts = recorded_intervals(resampled)
        level = resampled[0].get("level", level)
        method, n = " / ".join(names), " / ".join(f"{c:,}" for c in counts) or "the recorded"
    else:
        method, n = INTERVAL_NAMES[cfg_or_records.eval.interval], f"{int(cfg_or_records.eval.bootstrap):,}"
    return f"{100 * level:g} % {method} bootstrap intervals over {n} resamples of {units}"


def recorded_intervals(records) -> tuple[list[str], list[int]]:
    """The interval methods (:data:`trcgl.resampling.INTERVAL_NAMES`) and numbers of resamples that
    resampled records name, sorted; records written before the method was recorded were percentile
    intervals. The pages' sentences about intervals read them from here."""
    from .resampling import INTERVAL_NAMES

    names = sorted({INTERVAL_NAMES.get(m, m) for m in {str(r.get("interval", "percentile")) for r in records}})
    counts = sorted({int(r["resamples"]) for r in records if r.get("resamples") is not None})
    return names, counts


def bootstrap_records(Y: np.ndarray, probs: dict, clusters, groups, rows, seeds, metrics, n: int = 500,
                      seed: int = 0, level: float = 0.95, method: str = "bc",
                      threshold: float | dict | None = None) -> list[dict]:
    """Intervals that resample seeds and test label rows together, and paired differences
    (:func:`resampled_means`; macro-F1 at ``threshold``). Returns ``interval`` records (point value
    = the mean over seeds on the whole test set, with its ``method`` interval,
    :func:`trcgl.resampling.interval`) and ``difference`` records for every ordered pair of rows
    (a − b on the same resamples, its interval, and ``sure`` when it excludes 0); each record names
    its ``interval`` method, ``level`` and number of ``resamples``."""
    from .resampling import interval

    rows = list(rows)
    out = resampled_means(Y, probs, clusters, groups, rows, seeds, metrics, n, seed, threshold, method == "bca")
    point, draws = out[:2]
    jack = out[2] if method == "bca" else None
    n_seeds = len(list(seeds))
    common = {"seed": None, "n_seeds": n_seeds, "resamples": n, "interval": method, "level": level}

    def bounds(m, d, p, weights):
        jk = None if jack is None else [j @ weights for j in jack[m]]
        return interval(d, p, method, level, jk)

    records = []
    for i, r in enumerate(rows):
        for m in metrics:
            low, high = bounds(m, draws[m][:, i], point[r][m], np.eye(len(rows))[i])
            records.append({"row": r, "metric": m, "value": point[r][m], "low": low, "high": high,
                            "kind": "interval", **common})
    for i, a in enumerate(rows):
        for j, b in enumerate(rows):
            if a == b:
                continue
            for m in metrics:
                value = point[a][m] - point[b][m]
                low, high = bounds(m, draws[m][:, i] - draws[m][:, j], value, np.eye(len(rows))[i] - np.eye(len(rows))[j])
                records.append({"row": a, "reference": b, "metric": m, "value": value, "low": low, "high": high,
                                "sure": bool(low > 0 or high < 0), "kind": "difference", **common})
    return records


def ratio_interval(Y: np.ndarray, probs: dict, clusters, groups, seeds, method: str, baseline: str, ideal: str,
                   metric: str, n: int = 500, seed: int = 0, level: float = 0.95, interval_method: str = "bc") -> dict:
    """The fraction of the ideal gain the method reaches, (method − baseline) / (ideal − baseline),
    with an ``interval_method`` interval from the same resamples of seeds and test label rows as
    :func:`bootstrap_records` (same ``seed``)."""
    from .resampling import interval

    bca = interval_method == "bca"
    out = resampled_means(Y, probs, clusters, groups, [method, baseline, ideal], seeds, [metric], n, seed,
                          jackknife=bca)
    point, draws = out[:2]

    def ratio(m, b, i):
        gain = i - b
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gain != 0, (m - b) / np.where(gain != 0, gain, 1.0), np.nan)

    value = float(ratio(*(point[r][metric] for r in (method, baseline, ideal))))
    jack = [ratio(*j.T) for j in out[2][metric]] if bca else None
    low, high = interval(ratio(*draws[metric].T), value, interval_method, level, jack)
    return {"metric": metric, "value": value, "low": low, "high": high, "interval": interval_method}
